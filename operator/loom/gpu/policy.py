"""GPU fault policy: which observations are faults, what each calls for, and the node's verdict.

Pure: readings and XID events in, faults and a verdict out; `now` (seconds) is a parameter.
The policies are data:
- `XID_ACTIONS`: NVIDIA's XID catalog (DESIGN.md §7, as NVSentinel's mapping reads it), one action
  per XID, with `DEFAULT_XID_ACTION` for the rest (NVIDIA's device plugin likewise marks a GPU
  unhealthy on every XID outside its short skip list). The agent's `--xid-action XID=ACTION` overrides.
- `READING_RULES`: the standing faults a reading shows (GPU lost, uncorrectable ECC, row remapping).
A fault whose action is `FATAL` makes the node GPU-unhealthy; the verdict turns healthy again only
once no fatal fault was seen for `healthy_period` seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from loom.gpu.nvml import Device, Reading, XidEvent


class Action(StrEnum):
    """What a fault calls for, named as NVIDIA's catalog names the remedy."""

    REBOOT_NODE = "RebootNode"
    RESET_GPU = "ResetGPU"
    REPLACE_GPU = "ReplaceGPU"
    RESTART_APPLICATION = "RestartApplication"  # the application's own fault: it crashes, the node is fine
    IGNORE = "Ignore"


FATAL = frozenset({Action.REBOOT_NODE, Action.RESET_GPU, Action.REPLACE_GPU})

XID_ACTIONS: Mapping[int, Action] = {
    79: Action.REBOOT_NODE,  # GPU has fallen off the bus
    46: Action.RESET_GPU,  # GPU stopped processing
    62: Action.RESET_GPU,  # internal micro-controller halt
    64: Action.RESET_GPU,  # ECC page retirement or row remapper recording failure
    95: Action.RESET_GPU,  # uncontained ECC error
    119: Action.RESET_GPU,  # GSP RPC timeout
    120: Action.RESET_GPU,  # GSP error
    13: Action.RESTART_APPLICATION,  # graphics engine exception
    31: Action.RESTART_APPLICATION,  # GPU memory page fault
    68: Action.RESTART_APPLICATION,  # NVDEC0 exception
    69: Action.RESTART_APPLICATION,  # graphics engine class error
    94: Action.RESTART_APPLICATION,  # contained ECC error
    43: Action.IGNORE,  # GPU stopped processing (the application's reset channel)
    63: Action.IGNORE,  # ECC page retirement or row remapping recording event
    92: Action.IGNORE,  # high single-bit ECC error rate
    # The catalog's "special handling" three, decided here: 45 follows another error, which carries
    # the action; 48 (double-bit ECC) and 74 (NVLink) need the GPU reset before it is trusted again.
    45: Action.IGNORE,  # preemptive cleanup, due to previous errors
    48: Action.RESET_GPU,  # double-bit ECC error
    74: Action.RESET_GPU,  # NVLink error
}
DEFAULT_XID_ACTION = Action.RESET_GPU

XID_NAMES: Mapping[int, str] = {
    13: "graphics engine exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "preemptive cleanup, due to previous errors",
    46: "GPU stopped processing",
    48: "double-bit ECC error",
    62: "internal micro-controller halt",
    63: "ECC page retirement or row remapping recording event",
    64: "ECC page retirement or row remapper recording failure",
    68: "NVDEC0 exception",
    69: "graphics engine class error",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
}

_REMEDY = {
    Action.REBOOT_NODE: "drain and reboot the node",
    Action.RESET_GPU: "drain the node and reset the GPU (nvidia-smi -r) or reboot",
    Action.REPLACE_GPU: "the GPU needs replacing (RMA); drain the node",
    Action.RESTART_APPLICATION: "the application on it should restart",
    Action.IGNORE: "no action needed",
}


@dataclass(frozen=True)
class Fault:
    """One fault of one GPU. `reason` is CamelCase (the node condition's reason): XID79, GPULost, ..."""

    reason: str
    action: Action
    gpu: int
    uuid: str
    detail: str
    xid: int | None = None
    carried: bool = False  # taken over from the node's condition when the agent started: `detail` is all

    @property
    def is_fatal(self) -> bool:
        return self.action in FATAL

    @property
    def key(self) -> tuple[str, str]:
        return (self.uuid, self.reason)

    @property
    def message(self) -> str:
        """e.g. "GPU 0 (GPU-5d3c...): XID 79 (GPU has fallen off the bus): drain and reboot the node"."""
        if self.carried:
            return self.detail
        where = f"GPU {self.gpu} ({self.uuid})" if self.gpu >= 0 else self.uuid
        return f"{where}: {self.detail}: {_REMEDY[self.action]}"


def xid_action(xid: int, overrides: Mapping[int, Action] | None = None) -> Action:
    return (overrides or {}).get(xid) or XID_ACTIONS.get(xid, DEFAULT_XID_ACTION)


def parse_xid_actions(items: Iterable[str]) -> dict[int, Action]:
    """`["13=Ignore", "48=RebootNode"]` -> {13: IGNORE, 48: REBOOT_NODE}; ValueError says what is wrong."""
    out: dict[int, Action] = {}
    names = ", ".join(a.value for a in Action)
    for item in items:
        xid, sep, action = item.partition("=")
        try:
            out[int(xid)] = Action(action.strip())
        except ValueError:
            raise ValueError(f"--xid-action {item!r}: want XID=ACTION with ACTION one of {names}") from None
        if not sep:
            raise ValueError(f"--xid-action {item!r}: want XID=ACTION with ACTION one of {names}")
    return out


@dataclass(frozen=True)
class ReadingRule:
    reason: str
    action: Action
    applies: Callable[[Reading], bool]
    detail: Callable[[Reading], str]


READING_RULES: Sequence[ReadingRule] = (
    ReadingRule(
        "GPULost",
        Action.REBOOT_NODE,
        lambda r: r.lost,
        lambda r: "NVML reports the GPU lost (fallen off the bus)",
    ),
    ReadingRule(
        "RowRemapFailure",
        Action.REPLACE_GPU,
        lambda r: bool(r.remap_failed),
        lambda r: "row remapping failed (no spare rows left for an uncorrectable memory error)",
    ),
    ReadingRule(
        "UncorrectableECC",
        Action.RESET_GPU,
        lambda r: (r.ecc_uncorrectable_volatile or 0) > 0,
        lambda r: f"{r.ecc_uncorrectable_volatile} volatile uncorrectable ECC errors since the last reset",
    ),
    ReadingRule(
        "RowRemapPending",
        Action.RESET_GPU,
        lambda r: bool(r.remap_pending),
        lambda r: "a row remapping is pending; it takes effect at the next GPU reset",
    ),
)


def faults(
    devices: Sequence[Device],
    readings: Mapping[int, Reading],
    xids: Iterable[XidEvent],
    overrides: Mapping[int, Action] | None = None,
) -> list[Fault]:
    """The faults shown by this tick's readings (by device index) and XID events, in that order."""
    out: list[Fault] = []
    for device in devices:
        reading = readings.get(device.index)
        if reading is None:
            continue
        for rule in READING_RULES:
            if rule.applies(reading):
                out.append(Fault(rule.reason, rule.action, device.index, device.uuid, rule.detail(reading)))
    by_uuid = {d.uuid: d for d in devices}
    for event in xids:
        known = by_uuid.get(event.uuid)
        name = XID_NAMES.get(event.xid, "see NVIDIA's XID catalog")
        out.append(
            Fault(
                f"XID{event.xid}",
                xid_action(event.xid, overrides),
                known.index if known else -1,
                event.uuid or "unknown GPU",
                f"XID {event.xid} ({name})",
                xid=event.xid,
            )
        )
    return out


@dataclass(frozen=True)
class HealthState:
    """What the verdict remembers between ticks: each fatal fault with when it was first and last seen."""

    fatal: Mapping[tuple[str, str], tuple[Fault, float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """`faults`: the fatal faults that keep the node unhealthy, the first seen (the root cause: an XID
    before the lost GPU it explains) first; empty when healthy. `new`: faults not seen in the previous
    tick (every XID event is new), for events and logs."""

    faults: tuple[Fault, ...] = ()
    new: tuple[Fault, ...] = ()
    recovers_at: float | None = None

    @property
    def healthy(self) -> bool:
        return not self.faults

    @property
    def reason(self) -> str:
        return self.faults[0].reason if self.faults else "GPUsHealthy"


def decide(
    state: HealthState, observed: Sequence[Fault], now: float, healthy_period: float
) -> tuple[Verdict, HealthState]:
    """The node's verdict after this tick's faults: unhealthy while a fatal fault was seen within
    `healthy_period` seconds; recovery only after that long without one."""
    fatal = dict(state.fatal)
    new = tuple(f for f in observed if f.xid is not None or f.key not in fatal)
    for fault in observed:
        if fault.is_fatal:
            first = fatal[fault.key][1] if fault.key in fatal else now
            fatal[fault.key] = (fault, first, now)
    fatal = {k: v for k, v in fatal.items() if now - v[2] < healthy_period}
    ordered = sorted(fatal.values(), key=lambda v: (v[1], v[0].xid is None, v[0].gpu, v[0].reason))
    last = max((seen for _, _, seen in ordered), default=None)
    return (
        Verdict(tuple(f for f, _, _ in ordered), new, last + healthy_period if last is not None else None),
        HealthState(fatal),
    )


def resumed(reason: str, message: str, now: float) -> HealthState:
    """The state of an agent (re)started on a node it had marked unhealthy: the fault counts as seen
    now, so the healthy period starts over instead of the taint being dropped at once."""
    fault = Fault(reason, Action.RESET_GPU, -1, "", message, carried=True)
    return HealthState({fault.key: (fault, now, now)})
