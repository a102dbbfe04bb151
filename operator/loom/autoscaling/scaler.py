"""The scaling decision: Knative KPA's algorithm with explicit state and `now` as a parameter.

Pure: `decide(spec, observation, state, now) -> (decision, state)`; no clock, no I/O.

desired = ceil(metric / target) over a stable window (default 60 s) and a panic window (6 s). Panic
starts when the panic-window demand is >= panicThreshold x the Ready pods, and ends a stable window
after demand last crossed it; while panicking the replica count never goes down. Per decision the
count grows at most maxScaleUpRate x and shrinks at most maxScaleDownRate x the Ready pods; in stable
mode changes within `tolerance` (HPA's 10%) are ignored and it never scales below the panic window's
demand (KPA would, right after a panic on a ramp, as its stable average lags); the result is clamped
to [min, max]; with minReplicas 0 the service goes to zero after the metric has been 0 for the grace
period. Without a sample (None), or with one that is not a number (NaN, +/-Inf), the current count is
held (reasons NoMetrics, InvalidMetric) and the windows keep only real samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from loom.api.inferenceservice import InferenceServiceSpec


class Mode(StrEnum):
    STABLE = "stable"
    PANIC = "panic"


@dataclass(frozen=True)
class ScalerSpec:
    target: float
    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    tolerance: float = 0.1
    min_replicas: int = 1
    max_replicas: int = 10
    scale_to_zero_grace: float = 30.0

    @classmethod
    def from_spec(cls, spec: InferenceServiceSpec) -> ScalerSpec:
        s = spec.scaling
        return cls(
            target=s.target,
            stable_window=float(s.stableWindowSeconds),
            panic_window=float(s.panicWindowSeconds),
            panic_threshold=s.panicThreshold,
            max_scale_up_rate=s.maxScaleUpRate,
            max_scale_down_rate=s.maxScaleDownRate,
            tolerance=s.tolerance,
            min_replicas=spec.minReplicas,
            max_replicas=spec.maxReplicas,
            scale_to_zero_grace=float(s.scaleToZeroGracePeriodSeconds),
        )


@dataclass(frozen=True)
class Observation:
    """One sample: the metric summed over the service's pods (None: no data), and the pod counts."""

    value: float | None
    ready_pods: int
    replicas: int  # the current desired count (spec.replicas)


@dataclass(frozen=True)
class ScalerState:
    samples: tuple[tuple[float, float], ...] = ()  # (time, value) within the stable window
    panic_since: float | None = None  # last time demand crossed the panic threshold
    max_panic_pods: int = 0
    last_active: float | None = None  # last time the metric was above zero (or the scaler started)


@dataclass(frozen=True)
class Decision:
    replicas: int
    mode: Mode
    stable_value: float
    panic_value: float
    reason: str


def _average(samples: tuple[tuple[float, float], ...], since: float) -> float:
    values = [v for t, v in samples if t > since]
    return sum(values) / len(values) if values else 0.0


def _clamp(spec: ScalerSpec, n: int) -> int:
    return max(spec.min_replicas, min(spec.max_replicas, n))


def decide(
    spec: ScalerSpec, observation: Observation, state: ScalerState, now: float
) -> tuple[Decision, ScalerState]:
    current = observation.replicas
    if state.last_active is None:
        state = replace(state, last_active=now)
    samples = tuple((t, v) for t, v in state.samples if t > now - spec.stable_window)
    if observation.value is None or not math.isfinite(observation.value):
        mode = Mode.PANIC if state.panic_since is not None else Mode.STABLE
        stable = _average(samples, now - spec.stable_window)
        panic = _average(samples, now - spec.panic_window)
        reason = "NoMetrics" if observation.value is None else "InvalidMetric"
        decision = Decision(_clamp(spec, current), mode, stable, panic, reason)
        return decision, replace(state, samples=samples)
    samples = (*samples, (now, max(0.0, observation.value)))
    last_active = now if observation.value > 0 else state.last_active
    stable = _average(samples, now - spec.stable_window)
    panic = _average(samples, now - spec.panic_window)

    ready = max(1, observation.ready_pods)
    max_up = math.ceil(spec.max_scale_up_rate * ready)
    max_down = math.floor(ready / spec.max_scale_down_rate)
    stable_pods = math.ceil(stable / spec.target)
    panic_pods = math.ceil(panic / spec.target)
    desired_stable = min(max(stable_pods, max_down), max_up)
    desired_panic = min(max(panic_pods, max_down), max_up)

    over_threshold = panic_pods / ready >= spec.panic_threshold
    panic_since, max_panic = state.panic_since, state.max_panic_pods
    if over_threshold:
        panic_since = now
    elif panic_since is not None and now - panic_since > spec.stable_window:
        panic_since, max_panic = None, 0

    if panic_since is not None:
        # Provision for the larger of the two, and never scale down while panicking.
        max_panic = max(max_panic, desired_stable, desired_panic, current)
        desired, mode, reason = max_panic, Mode.PANIC, "Panic"
    else:
        desired, mode, reason = desired_stable, Mode.STABLE, "Stable"
        if desired < current:
            # Unlike KPA, never scale below the last seconds' demand: the stable average lags a ramp.
            desired = max(desired, min(current, desired_panic))
        if current > 0 and desired > 0 and abs(desired - current) / current <= spec.tolerance:
            desired, reason = current, "WithinTolerance"

    grace = last_active is not None and now - last_active < spec.scale_to_zero_grace
    if desired == 0 and spec.min_replicas == 0 and grace:
        desired, reason = min(1, max(current, 0)), "ScaleToZeroGrace"
    clamped = _clamp(spec, desired)
    if clamped != desired:
        reason = "MinReplicas" if clamped > desired else "MaxReplicas"
    elif desired == 0 and current > 0:
        reason = "ScaleToZero"
    new_state = ScalerState(samples, panic_since, max_panic, last_active)
    return Decision(clamped, mode, stable, panic, reason), new_state
