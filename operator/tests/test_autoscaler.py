"""The KPA-style scaling decision, stepped through load traces on a fake clock (1 s ticks).

The simulated service: `replicas` pods, all Ready one tick after they are asked for; the observed
metric is the trace's total concurrency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from test_inferenceservice_factories import make_isvc

from loom.autoscaling.scaler import Decision, Mode, Observation, ScalerSpec, ScalerState, decide

SPEC = ScalerSpec(target=10, stable_window=60, panic_window=6, min_replicas=1, max_replicas=100)


@dataclass
class Run:
    replicas: list[int]
    decisions: list[Decision]

    def first_tick(self, predicate: Callable[[int], bool], after: int = 0) -> int:
        return next(t for t, r in enumerate(self.replicas) if t >= after and predicate(r))


def run(spec: ScalerSpec, trace: Callable[[int], float | None], seconds: int, start: int = 1) -> Run:
    state, replicas = ScalerState(), start
    out = Run([], [])
    for t in range(seconds):
        # The pods asked for on the last tick are Ready now.
        decision, state = decide(spec, Observation(trace(t), replicas, replicas), state, float(t))
        replicas = decision.replicas
        out.replicas.append(replicas)
        out.decisions.append(decision)
    return out


def test_spec_from_the_api() -> None:
    spec = ScalerSpec.from_spec(make_isvc(minReplicas=2, maxReplicas=7, scaling={"target": 4}).spec)
    assert (spec.target, spec.min_replicas, spec.max_replicas, spec.panic_threshold) == (4, 2, 7, 2.0)


def test_steady_load_at_target_stays_put() -> None:
    r = run(SPEC, lambda t: 30.0, 120, start=3)
    assert set(r.replicas) == {3}
    assert all(d.mode == Mode.STABLE for d in r.decisions)


def test_step_10x_panics_on_the_first_tick_and_never_scales_down_while_panicking() -> None:
    r = run(SPEC, lambda t: 20.0 if t < 30 else 200.0, 100, start=2)
    assert r.replicas[29] == 2
    assert r.decisions[30].mode == Mode.PANIC and r.replicas[30] > 2  # first tick after the step
    assert r.first_tick(lambda n: n >= 20, after=30) <= 36  # the full 10x within the panic window
    panic = [t for t, d in enumerate(r.decisions) if d.mode == Mode.PANIC]
    assert all(r.replicas[t] >= r.replicas[t - 1] for t in panic[1:])
    assert r.replicas[-1] == 20


def test_slow_ramp_is_followed_in_stable_mode() -> None:
    r = run(SPEC, lambda t: 100.0 + t / 2, 300, start=10)  # +1 in-flight request every 2 s
    assert all(d.mode == Mode.STABLE for d in r.decisions)
    assert r.replicas == sorted(r.replicas)
    assert 22 <= r.replicas[-1] <= 24  # ceil(avg of the last 60 s (235) / 10), give or take tolerance


def test_steep_ramp_from_idle_panics_and_keeps_up() -> None:
    r = run(SPEC, lambda t: float(t), 200, start=1)  # +1 in-flight request per second
    assert any(d.mode == Mode.PANIC for d in r.decisions)
    assert r.replicas == sorted(r.replicas)
    assert r.first_tick(lambda n: n > 1) <= 20
    assert r.replicas[-1] >= 15  # the stable average lags the ramp by half a window


def test_short_spike_panics_then_holds_for_a_stable_window_then_scales_down_gradually() -> None:
    r = run(SPEC, lambda t: 500.0 if 20 <= t < 23 else 10.0, 200, start=1)
    peak = max(r.replicas)
    assert peak >= 20 and r.replicas[20] > 1
    assert r.replicas[80] == peak  # still panicking: a stable window after the last crossing
    downs = [(a, b) for a, b in zip(r.replicas, r.replicas[1:], strict=False) if b < a]
    assert downs and all(b >= a // 2 for a, b in downs)  # at most maxScaleDownRate (2x) per tick
    assert r.replicas[-1] == 1


def test_drop_to_zero_after_grace_period_only_with_min_zero() -> None:
    spec = ScalerSpec(
        target=10, stable_window=60, panic_window=6, min_replicas=0, max_replicas=10, scale_to_zero_grace=30
    )
    r = run(spec, lambda t: 40.0 if t < 10 else 0.0, 200, start=4)
    zero = r.first_tick(lambda n: n == 0)
    assert zero >= 10 + 30  # not before the grace period after the last request
    assert zero <= 10 + 60 + 30  # once the stable window has drained, at most a grace period later
    assert r.decisions[zero].reason == "ScaleToZero"
    kept = run(SPEC, lambda t: 40.0 if t < 10 else 0.0, 200, start=4)
    assert kept.replicas[-1] == 1


def test_min_and_max_clamp() -> None:
    spec = ScalerSpec(target=10, min_replicas=2, max_replicas=5)
    r = run(spec, lambda t: 1000.0 if t >= 10 else 0.0, 40, start=2)
    assert min(r.replicas) == 2 and max(r.replicas) == 5
    assert r.decisions[-1].reason == "MaxReplicas"


def test_scale_up_rate_limits_growth_per_tick() -> None:
    spec = ScalerSpec(target=1, max_scale_up_rate=2.0, max_replicas=1000)
    r = run(spec, lambda t: 500.0, 10, start=1)
    assert r.replicas[:5] == [2, 4, 8, 16, 32]


def test_tolerance_ignores_small_changes() -> None:
    r = run(SPEC, lambda t: 105.0, 90, start=10)  # wants 11 pods: +10% is within tolerance
    assert set(r.replicas) == {10}
    assert r.decisions[-1].reason == "WithinTolerance"
    loose = run(ScalerSpec(target=10, tolerance=0.0, max_replicas=100), lambda t: 105.0, 90, start=10)
    assert loose.replicas[-1] == 11


def test_no_metrics_keeps_replicas() -> None:
    r = run(SPEC, lambda t: None, 10, start=3)
    assert set(r.replicas) == {3}
    assert r.decisions[0].reason == "NoMetrics"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "+inf", "-inf"])
def test_a_value_that_is_not_a_number_holds_the_scale_as_missing(value: float) -> None:
    """NaN (Prometheus' rate over no samples, or 0/0) must not read as zero load and scale to zero;
    +Inf must not overflow; both are missing data, and the windows keep only real samples."""
    spec = ScalerSpec(target=10, min_replicas=0, max_replicas=10, scale_to_zero_grace=0)
    state = ScalerState()
    for t in range(120):
        decision, state = decide(spec, Observation(value, 4, 4), state, float(t))
        assert (decision.replicas, decision.reason) == (4, "InvalidMetric"), t
    assert state.samples == ()
    decision, state = decide(spec, Observation(40.0, 4, 4), state, 120.0)
    assert decision.stable_value == 40.0 and decision.replicas == 4


@pytest.mark.parametrize("start", [0, 1])
def test_demand_from_zero_starts_a_pod(start: int) -> None:
    spec = ScalerSpec(target=10, min_replicas=0, max_replicas=10)
    decision, _ = decide(spec, Observation(5.0, 0, start), ScalerState(), 0.0)
    assert decision.replicas == 1


def test_state_is_explicit_and_decide_is_pure() -> None:
    state = ScalerState()
    a = decide(SPEC, Observation(50.0, 1, 1), state, 5.0)
    b = decide(SPEC, Observation(50.0, 1, 1), state, 5.0)
    assert a == b and state == ScalerState()
