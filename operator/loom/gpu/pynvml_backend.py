"""`Nvml` over nvidia-ml-py (`pynvml`), imported when the agent opens NVML, so a host without the
driver gets `NvmlUnavailable` with what to do, not an ImportError.

Each field is read on its own: one NVML_ERROR_NOT_SUPPORTED (no ECC on a consumer GPU, no row
remapping before Ampere) leaves that field None; GPU_IS_LOST marks the whole reading lost. XID events
come from the event API: `nvmlEventSetCreate` -> `nvmlDeviceRegisterEvents(XidCriticalError)` per GPU
-> `nvmlEventSetWait`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from loom.gpu.nvml import Device, NvmlUnavailable, Reading, XidEvent

log = logging.getLogger(__name__)
T = TypeVar("T")
_MIB = 1 << 20


class _Lost(Exception):
    pass


class PynvmlNvml:
    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as e:  # pragma: no cover - a dependency of loom-operator
            raise NvmlUnavailable(f"nvidia-ml-py is not installed ({e}): pip install nvidia-ml-py") from e
        self._nv: Any = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise NvmlUnavailable(
                f"NVML did not start: {e}. Is the NVIDIA driver installed and libnvidia-ml.so.1 visible "
                "(on Kubernetes: the nvidia runtime class, or NVIDIA_VISIBLE_DEVICES=all with the "
                "container toolkit)?"
            ) from e
        self.driver_version = _text(pynvml.nvmlSystemGetDriverVersion())
        self._handles: dict[int, Any] = {}
        self._uuids: dict[int, str] = {}
        self._events: Any = None
        self._devices = self._discover()

    def _discover(self) -> list[Device]:
        nv = self._nv
        out = []
        for index in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nv.nvmlDeviceGetUUID(handle))
            minor = self._optional(functools.partial(_minor, nv, handle))
            self._handles[index], self._uuids[index] = handle, uuid
            out.append(Device(index, uuid, _text(nv.nvmlDeviceGetName(handle)), minor))
        self._events = nv.nvmlEventSetCreate()
        for index, handle in self._handles.items():
            try:
                nv.nvmlDeviceRegisterEvents(handle, nv.nvmlEventTypeXidCriticalError, self._events)
            except nv.NVMLError as e:
                log.warning("GPU %d (%s): no XID events from NVML: %s", index, self._uuids[index], e)
        return out

    def devices(self) -> list[Device]:
        return list(self._devices)

    def _optional(self, call: Callable[[], T]) -> T | None:
        """The call's value; None when this GPU does not support it; _Lost when the GPU is gone."""
        nv = self._nv
        try:
            return call()
        except nv.NVMLError as e:
            if e.value == nv.NVML_ERROR_GPU_IS_LOST:
                raise _Lost() from e
            if e.value not in (nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_NO_PERMISSION):
                log.debug("NVML: %s", e)
            return None

    def read(self, device: Device) -> Reading:
        nv, h = self._nv, self._handles[device.index]
        get = self._optional
        try:
            util = get(lambda: nv.nvmlDeviceGetUtilizationRates(h))
            memory = get(lambda: nv.nvmlDeviceGetMemoryInfo(h))
            power_mw = get(lambda: nv.nvmlDeviceGetPowerUsage(h))
            remap = get(lambda: nv.nvmlDeviceGetRemappedRows(h))
            reasons = get(lambda: nv.nvmlDeviceGetCurrentClocksEventReasons(h))
            if reasons is None:
                reasons = get(lambda: nv.nvmlDeviceGetCurrentClocksThrottleReasons(h))
            return Reading(
                utilization_percent=float(util.gpu) if util is not None else None,
                memory_used_bytes=int(memory.used) if memory is not None else None,
                memory_total_bytes=int(memory.total) if memory is not None else None,
                temperature_celsius=get(
                    lambda: float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
                ),
                power_watts=power_mw / 1000.0 if power_mw is not None else None,
                sm_clock_mhz=get(lambda: float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))),
                ecc_uncorrectable_volatile=get(
                    lambda: int(
                        nv.nvmlDeviceGetTotalEccErrors(
                            h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC
                        )
                    )
                ),
                remapped_rows_correctable=int(remap[0]) if remap is not None else None,
                remapped_rows_uncorrectable=int(remap[1]) if remap is not None else None,
                remap_pending=bool(remap[2]) if remap is not None else None,
                remap_failed=bool(remap[3]) if remap is not None else None,
                clock_event_reasons=int(reasons) if reasons is not None else None,
            )
        except _Lost:
            return Reading(lost=True)

    def wait_xid(self, timeout_seconds: float) -> list[XidEvent]:
        nv = self._nv
        out: list[XidEvent] = []
        timeout_ms = max(0, int(timeout_seconds * 1000))
        while True:
            try:
                data = nv.nvmlEventSetWait(self._events, timeout_ms)
            except nv.NVMLError as e:
                if e.value != nv.NVML_ERROR_TIMEOUT:
                    log.warning("NVML event wait failed: %s", e)
                return out
            if data.eventType & nv.nvmlEventTypeXidCriticalError:
                try:
                    uuid = _text(nv.nvmlDeviceGetUUID(data.device))
                except nv.NVMLError:
                    uuid = ""
                out.append(XidEvent(uuid, int(data.eventData)))
            timeout_ms = 0  # drain what is already there, then return

    def close(self) -> None:
        nv = self._nv
        try:
            if self._events is not None:
                nv.nvmlEventSetFree(self._events)
            nv.nvmlShutdown()
        except nv.NVMLError as e:
            log.debug("NVML shutdown: %s", e)


def _minor(nv: Any, handle: Any) -> int:
    return int(nv.nvmlDeviceGetMinorNumber(handle))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
