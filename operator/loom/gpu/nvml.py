"""Loom's view of NVML: the few calls the agent makes, as a Protocol, and the plain values they return.

`pynvml_backend.PynvmlNvml` implements it over nvidia-ml-py; `fake.FakeNvml` implements it for tests
(no NVML mock ships with nvidia-ml-py). Pure data: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class NvmlUnavailable(Exception):
    """NVML cannot be used on this host (no driver, no libnvidia-ml.so); the message says what to do."""


@dataclass(frozen=True)
class Device:
    """One GPU as DCGM exporter labels it: `gpu` (index), `UUID`, `device` (nvidia<minor>), `modelName`."""

    index: int
    uuid: str
    name: str
    minor: int | None = None

    @property
    def device(self) -> str:
        return f"nvidia{self.minor if self.minor is not None else self.index}"


@dataclass(frozen=True)
class Reading:
    """One GPU's telemetry at one moment; None where NVML does not support a field on this GPU.

    `lost`: NVML answered GPU_IS_LOST (the GPU fell off the bus); the other fields are then None."""

    utilization_percent: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    sm_clock_mhz: float | None = None
    ecc_uncorrectable_volatile: int | None = None
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remap_pending: bool | None = None
    remap_failed: bool | None = None
    clock_event_reasons: int | None = None
    lost: bool = False


@dataclass(frozen=True)
class XidEvent:
    """An XID critical error NVML's event API reported for one GPU."""

    uuid: str
    xid: int


class Nvml(Protocol):
    """What the agent asks of NVML. Implementations need not be thread-safe: the agent calls them
    from one thread."""

    driver_version: str

    def devices(self) -> list[Device]:
        """Every GPU the driver shows, in index order."""
        ...

    def read(self, device: Device) -> Reading:
        """The GPU's telemetry now; a lost GPU reads `Reading(lost=True)`, it never raises for that."""
        ...

    def wait_xid(self, timeout_seconds: float) -> list[XidEvent]:
        """XID events, waiting up to `timeout_seconds` for the first (nvmlEventSetWait); [] on timeout."""
        ...

    def close(self) -> None: ...
