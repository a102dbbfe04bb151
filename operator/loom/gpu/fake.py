"""A fake `Nvml` for tests, driven by a script: the GPUs and their readings, and XID events to inject.

The script is a dict (or a JSON file, re-read whenever it changes, so a test rewrites it to inject a
fault into a running agent):

    {"gpus": [{"uuid": "GPU-0", "name": "NVIDIA H100 80GB HBM3", "memoryTotalMiB": 81559,
               "utilization": 35, "memoryUsedMiB": 1024, "temperature": 41, "powerWatts": 120,
               "smClockMHz": 1980, "eccUncorrectable": 0, "remappedRowsCorrectable": 0,
               "remappedRowsUncorrectable": 0, "remapPending": false, "remapFailed": false,
               "clockEventReasons": 0, "lost": false}],
     "xids": [{"gpu": 0, "xid": 79}]}

Every XID entry is delivered once, in order (`"at": seconds` delays one until that long after the
fake started); a field left out of a GPU is one NVML does not support there (None). The agent picks
this fake only when LOOM_GPU_AGENT_FAKE names such a file: a test-only switch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loom.gpu.nvml import Device, Reading, XidEvent

_MIB = 1 << 20


def _mib(value: Any) -> int | None:
    return int(float(value) * _MIB) if value is not None else None


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _bool(value: Any) -> bool | None:
    return bool(value) if value is not None else None


class FakeNvml:
    driver_version = "fake"

    def __init__(
        self,
        script: Mapping[str, Any] | None = None,
        *,
        path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._path, self._clock, self._sleep = path, clock, sleep
        self._started = clock()
        self._mtime: float | None = None
        self._script: Mapping[str, Any] = script or {}
        self._delivered = 0
        self.closed = False
        self._reload()

    @classmethod
    def from_file(cls, path: str | Path) -> FakeNvml:
        return cls(path=Path(path))

    def _reload(self) -> None:
        if self._path is None:
            return
        mtime = self._path.stat().st_mtime_ns
        if mtime != self._mtime:
            self._script = json.loads(self._path.read_text())
            self._mtime = mtime

    def set_script(self, script: Mapping[str, Any]) -> None:
        self._script = script

    def _gpus(self) -> list[Mapping[str, Any]]:
        self._reload()
        return list(self._script.get("gpus") or [])

    def devices(self) -> list[Device]:
        return [
            Device(
                i, str(g.get("uuid") or f"GPU-fake-{i}"), str(g.get("name", "Fake GPU")), _int(g.get("minor"))
            )
            for i, g in enumerate(self._gpus())
        ]

    def read(self, device: Device) -> Reading:
        gpus = self._gpus()
        g = gpus[device.index] if device.index < len(gpus) else {"lost": True}
        if g.get("lost"):
            return Reading(lost=True)
        return Reading(
            utilization_percent=_float(g.get("utilization")),
            memory_used_bytes=_mib(g.get("memoryUsedMiB")),
            memory_total_bytes=_mib(g.get("memoryTotalMiB")),
            temperature_celsius=_float(g.get("temperature")),
            power_watts=_float(g.get("powerWatts")),
            sm_clock_mhz=_float(g.get("smClockMHz")),
            ecc_uncorrectable_volatile=_int(g.get("eccUncorrectable")),
            remapped_rows_correctable=_int(g.get("remappedRowsCorrectable")),
            remapped_rows_uncorrectable=_int(g.get("remappedRowsUncorrectable")),
            remap_pending=_bool(g.get("remapPending")),
            remap_failed=_bool(g.get("remapFailed")),
            clock_event_reasons=_int(g.get("clockEventReasons")),
        )

    def _due(self) -> list[XidEvent]:
        gpus = self._gpus()
        entries = list(self._script.get("xids") or [])
        if len(entries) < self._delivered:  # the script was rewritten with fewer: start over
            self._delivered = 0
        out = []
        elapsed = self._clock() - self._started
        while self._delivered < len(entries):
            entry = entries[self._delivered]
            if float(entry.get("at", 0)) > elapsed:
                break
            index = int(entry.get("gpu", 0))
            uuid = str(gpus[index].get("uuid") or f"GPU-fake-{index}") if index < len(gpus) else ""
            out.append(XidEvent(uuid, int(entry["xid"])))
            self._delivered += 1
        return out

    def wait_xid(self, timeout_seconds: float) -> list[XidEvent]:
        """Like nvmlEventSetWait: returns as soon as an event is due, else after the timeout."""
        deadline = self._clock() + timeout_seconds
        while True:
            due = self._due()
            if due or self._clock() >= deadline:
                return due
            self._sleep(min(0.05, max(0.0, deadline - self._clock())))

    def close(self) -> None:
        self.closed = True
