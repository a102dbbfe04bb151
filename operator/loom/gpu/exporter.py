"""The agent's Prometheus metrics: DCGM exporter's names and labels, and Loom's `loom_gpu_*` series.

DCGM_FI_DEV_* come with DCGM exporter's labels `gpu`, `UUID`, `device`, `modelName` and `Hostname`, so
dashboards and alerts written for DCGM exporter work unchanged. They are all gauges: DCGM exporter
types a few of them (ECC errors, remapped rows) as counters without the `_total` suffix, which
`promtool check metrics` rejects; rate() and increase() read gauges the same. DCGM's camelCase
`modelName` label is the one thing promtool's lint still flags, and it is kept on purpose.

Loom's own series (`loom_gpu_*`) follow Loom's conventions and pass promtool as they are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from loom.gpu.nvml import Device, Reading

_MIB = float(1 << 20)
DCGM_LABELS = ["gpu", "UUID", "device", "modelName", "Hostname"]


def _mib(value: int | None) -> float | None:
    return value / _MIB if value is not None else None


def _free(r: Reading) -> float | None:
    if r.memory_total_bytes is None or r.memory_used_bytes is None:
        return None
    return (r.memory_total_bytes - r.memory_used_bytes) / _MIB


def _flag(value: bool | None) -> float | None:
    return float(value) if value is not None else None


def _number(value: float | int | None) -> float | None:
    return float(value) if value is not None else None


# DCGM exporter's field names and help texts, with how each is read from a Reading.
DCGM_FIELDS: Sequence[tuple[str, str, Callable[[Reading], float | None]]] = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", lambda r: r.utilization_percent),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", lambda r: _mib(r.memory_used_bytes)),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", _free),
    ("DCGM_FI_DEV_FB_TOTAL", "Framebuffer memory total (in MiB).", lambda r: _mib(r.memory_total_bytes)),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", lambda r: r.temperature_celsius),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", lambda r: r.power_watts),
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", lambda r: r.sm_clock_mhz),
    (
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "Total number of double-bit volatile ECC errors.",
        lambda r: _number(r.ecc_uncorrectable_volatile),
    ),
    (
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "Number of remapped rows for correctable errors.",
        lambda r: _number(r.remapped_rows_correctable),
    ),
    (
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "Number of remapped rows for uncorrectable errors.",
        lambda r: _number(r.remapped_rows_uncorrectable),
    ),
    (
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "Whether remapping of rows has failed.",
        lambda r: _flag(r.remap_failed),
    ),
    (
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        "Current clock throttle reasons (bitmask of NVML's clocks event reasons).",
        lambda r: _number(r.clock_event_reasons),
    ),
)


@dataclass(frozen=True)
class Snapshot:
    """What the last tick saw, for one scrape."""

    nvml_up: bool = False
    devices: tuple[Device, ...] = ()
    readings: Mapping[int, Reading] = field(default_factory=dict)
    last_xid: Mapping[int, int] = field(default_factory=dict)  # by GPU index: DCGM_FI_DEV_XID_ERRORS
    unhealthy: frozenset[str] = frozenset()  # UUIDs with a fatal fault within the healthy period
    node_healthy: bool = True


class GpuCollector(Collector):
    """Yields the last snapshot's series at scrape time; `update` swaps it (thread-safe)."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self._lock = threading.Lock()
        self._snapshot = Snapshot()

    def update(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            s = self._snapshot
        host = self.hostname
        for name, help_text, read in DCGM_FIELDS:
            family = GaugeMetricFamily(name, help_text, labels=DCGM_LABELS)
            for d in s.devices:
                reading = s.readings.get(d.index)
                value = read(reading) if reading is not None and not reading.lost else None
                if value is not None:
                    family.add_metric([str(d.index), d.uuid, d.device, d.name, host], value)
            if family.samples:
                yield family
        if s.devices:
            xid = GaugeMetricFamily(
                "DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.", labels=DCGM_LABELS
            )
            for d in s.devices:
                xid.add_metric([str(d.index), d.uuid, d.device, d.name, host], s.last_xid.get(d.index, 0))
            yield xid
        up = GaugeMetricFamily(
            "loom_gpu_nvml_up",
            "1 when the agent reads NVML; 0 without an NVIDIA driver.",
            labels=["Hostname"],
        )
        up.add_metric([host], 1.0 if s.nvml_up else 0.0)
        yield up
        devices = GaugeMetricFamily("loom_gpu_devices", "GPUs NVML shows on the node.", labels=["Hostname"])
        devices.add_metric([host], float(len(s.devices)))
        yield devices
        healthy = GaugeMetricFamily(
            "loom_gpu_healthy",
            "1 while a GPU has had no fatal fault within the healthy period, else 0.",
            labels=["gpu", "UUID", "Hostname"],
        )
        for d in s.devices:
            healthy.add_metric([str(d.index), d.uuid, host], 0.0 if d.uuid in s.unhealthy else 1.0)
        yield healthy
        node = GaugeMetricFamily(
            "loom_gpu_node_healthy",
            "1 while the node's condition GPUHealthy is True; 0 while it is False (and the node tainted).",
            labels=["Hostname"],
        )
        node.add_metric([host], 1.0 if s.node_healthy else 0.0)
        yield node


class AgentMetrics:
    """The agent's registry: the snapshot collector and its counters (never the operator's metrics)."""

    def __init__(self, hostname: str) -> None:
        self.registry = CollectorRegistry()
        self.gpus = GpuCollector(hostname)
        self.registry.register(self.gpus)
        self.xid_errors = Counter(
            "loom_gpu_xid_errors",
            "XID errors NVML reported, by GPU, XID and the action the fault policy gives it.",
            ["gpu", "UUID", "Hostname", "xid", "action"],
            registry=self.registry,
        )
        self.faults = Counter(
            "loom_gpu_faults",
            "Faults the agent found (XID events, and readings newly showing a fault), by reason and action.",
            ["Hostname", "reason", "action"],
            registry=self.registry,
        )
        self.node_writes = Counter(
            "loom_gpu_node_writes",
            "Writes of the GPUHealthy condition and the loom.ml/gpu-unhealthy taint to the agent's node.",
            ["Hostname", "what", "result"],
            registry=self.registry,
        )
        self.last_tick = Gauge(
            "loom_gpu_agent_last_tick_timestamp_seconds",
            "Unix time of the agent's last completed check.",
            ["Hostname"],
            registry=self.registry,
        )
