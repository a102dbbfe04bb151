"""The reconcile decision: which windows start, what the status says, which events follow, what is
removed. Each test steps the pure `decide` through time with children in chosen states."""

from __future__ import annotations

from typing import Any

import pytest
from test_featurepipeline_factories import (
    IMAGES,
    at,
    child,
    daily_backfill,
    done,
    error_line,
    make_pipeline,
    make_run,
    observed,
    plan_at,
    pod,
    then,
    window,
)

from loom.api.common import ConditionStatus
from loom.api.featurepipeline import FeaturePipelineStatus, PipelinePhase, RunResult
from loom.builders.featurepipeline import RunKind, desired_stream, run_name
from loom.builders.featurepipeline_plan import KEEP_SUCCEEDED, Observation, Plan
from loom.builders.featurepipeline_runs import RunPhase
from loom.builders.featurepipeline_status import needs_patch

DAY = 24


def condition(plan: Plan, type_: str) -> tuple[ConditionStatus, str, str]:
    c = next(c for c in plan.status.conditions if c.type == type_)
    return c.status, c.reason, c.message


def created_windows(plan: Plan) -> list[tuple[str, str]]:
    return [(c["metadata"]["annotations"]["loom.ml/window-start"], c["kind"]) for c in plan.create]


def reasons(plan: Plan) -> list[str]:
    return [e.reason for e in plan.events]


def test_backfill_starts_at_most_parallelism_windows() -> None:
    pipeline = make_pipeline(backfill=daily_backfill(days=4, parallelism=2))
    plan = plan_at(pipeline, observed(pipeline), at(100))
    assert created_windows(plan) == [("2026-11-01T00:00:00Z", "Job"), ("2026-11-02T00:00:00Z", "Job")]
    assert plan.status.phase == PipelinePhase.RUNNING
    assert plan.status.backfill is not None
    assert (plan.status.backfill.windowsTotal, plan.status.backfill.running) == (4, 2)
    assert plan.status.activeRuns == sorted(c["metadata"]["name"] for c in plan.create)
    assert reasons(plan) == ["RunStarted", "RunStarted"]
    assert condition(plan, "BackfillComplete")[:2] == (ConditionStatus.FALSE, "InProgress")


def test_backfill_fills_free_slots_in_time_order_and_records_results() -> None:
    pipeline = make_pipeline(backfill=daily_backfill(days=4, parallelism=2))
    running = child(pipeline, window(0, DAY))
    finished, finished_pod = done(pipeline, window(DAY, 2 * DAY), rows=7)
    plan = plan_at(pipeline, observed(pipeline, running, finished, pods=[finished_pod]), at(100))
    assert created_windows(plan) == [("2026-11-03T00:00:00Z", "Job")]
    status = plan.status
    assert status.rowsWritten == 7
    assert status.watermark is None, "the first window is not done: nothing is contiguous from the start"
    assert status.recordedRuns == [finished["metadata"]["name"]]
    assert status.lastRun is not None and status.lastRun.result == RunResult.SUCCEEDED
    assert status.lastRun.rows == 7 and status.lastRun.name == finished["metadata"]["name"]
    assert reasons(plan) == ["RunStarted", "RunSucceeded"]
    assert [r.name for r in plan.recorded] == [finished["metadata"]["name"]]


def test_a_finished_run_is_recorded_once() -> None:
    pipeline = make_pipeline(backfill=daily_backfill(days=1))
    c, p = done(pipeline, window(0, DAY), rows=5)
    first = plan_at(pipeline, observed(pipeline, c, pods=[p]), at(30))
    second = plan_at(then(pipeline, first), observed(pipeline, c, pods=[p]), at(30, 0, 10))
    assert (first.status.rowsWritten, second.status.rowsWritten) == (5, 5)
    assert second.recorded == [] and "RunSucceeded" not in reasons(second)
    assert not needs_patch(first.status, second.status)


def test_backfill_complete() -> None:
    pipeline = make_pipeline(backfill=daily_backfill(days=3))
    pairs = [
        done(pipeline, window(d * DAY, (d + 1) * DAY), rows=10, newest=at(d * DAY + 23)) for d in range(3)
    ]
    plan = plan_at(pipeline, observed(pipeline, *[c for c, _ in pairs], pods=[p for _, p in pairs]), at(80))
    s = plan.status
    assert plan.create == []
    assert s.phase == PipelinePhase.SUCCEEDED
    assert s.watermark == at(72)
    assert s.rowsWritten == 30
    assert s.newestEventTime == at(71)
    assert s.freshnessSeconds == 9 * 3600
    assert s.backfill is not None and (s.backfill.succeeded, s.backfill.failed, s.backfill.running) == (
        3,
        0,
        0,
    )
    assert condition(plan, "BackfillComplete")[:2] == (ConditionStatus.TRUE, "Succeeded")
    assert condition(plan, "Ready")[:2] == (ConditionStatus.TRUE, "Succeeded")
    assert "BackfillComplete" in reasons(plan)


def test_a_failed_window_is_reported_by_window_and_not_started_again() -> None:
    pipeline = make_pipeline(backfill=daily_backfill(days=2))
    good, good_pod = done(pipeline, window(0, DAY))
    bad = child(pipeline, window(DAY, 2 * DAY), RunPhase.FAILED)
    bad_pod = pod(bad, exit_code=65, message=error_line("column dwell_ms is not in source"))
    plan = plan_at(pipeline, observed(pipeline, good, bad, pods=[good_pod, bad_pod]), at(60))
    s = plan.status
    assert plan.create == [], "the engine already retried it (spec.retries); bad input stays bad"
    assert s.phase == PipelinePhase.FAILED
    assert s.watermark == at(DAY)
    assert s.backfill is not None and s.backfill.failedWindows == ["2026-11-02T00:00:00Z"]
    ready = condition(plan, "Ready")
    assert ready[:2] == (ConditionStatus.FALSE, "RunFailed")
    assert "2026-11-02T00:00:00Z" in ready[2] and "column dwell_ms is not in source" in ready[2]
    assert "BadInput" in ready[2]
    failed = [e for e in plan.events if e.reason == "RunFailed"]
    assert failed and failed[0].type == "Warning" and "dwell_ms" in failed[0].message
    assert condition(plan, "BackfillComplete")[:2] == (ConditionStatus.TRUE, "WindowsFailed")


def test_scheduled_runs_wait_for_the_backfill() -> None:
    pipeline = make_pipeline(schedule="0 * * * *", backfill=daily_backfill(days=2, parallelism=1))
    running = child(pipeline, window(0, DAY))
    plan = plan_at(pipeline, observed(pipeline, running), at(50, 30))
    assert plan.create == []
    assert "backfill" in condition(plan, "Ready")[2] or plan.status.phase == PipelinePhase.RUNNING


def test_scheduled_run_after_backfill_recomputes_allowed_lateness() -> None:
    pipeline = make_pipeline(schedule="0 * * * *", backfill=daily_backfill(days=1), allowedLateness="30m")
    c, p = done(pipeline, window(0, DAY))
    plan = plan_at(pipeline, observed(pipeline, c, pods=[p]), at(30, 10))
    assert created_windows(plan) == [("2026-11-01T23:30:00Z", "Job")]
    end = plan.create[0]["metadata"]["annotations"]["loom.ml/window-end"]
    assert end == "2026-11-02T06:00:00Z", "one run catches up to the newest tick"
    assert plan.create[0]["metadata"]["labels"]["loom.ml/run-kind"] == "schedule"
    assert plan.status.phase == PipelinePhase.RUNNING
    assert plan.requeue_after == 60.0, "a resync at least every minute"
    soon = plan_at(then(pipeline, plan), observed(pipeline, c, pods=[p]), at(30, 59, 50))
    assert soon.requeue_after == pytest.approx(10.05), "woken at the next tick"


def test_first_scheduled_run_without_backfill_takes_the_last_interval() -> None:
    pipeline = make_pipeline(schedule="0 * * * *", allowedLateness="1h")
    plan = plan_at(pipeline, observed(pipeline), at(5, 1))
    assert created_windows(plan) == [("2026-11-01T04:00:00Z", "Job")]


@pytest.mark.parametrize(
    ("phase", "now_hours", "starts"),
    [
        pytest.param(RunPhase.RUNNING, 7.2, False, id="previous-still-running"),
        pytest.param(RunPhase.SUCCEEDED, 6.5, False, id="tick-already-run"),
        pytest.param(RunPhase.FAILED, 6.5, False, id="failed-tick-not-rerun"),
        pytest.param(RunPhase.SUCCEEDED, 7.1, True, id="next-tick"),
        pytest.param(RunPhase.FAILED, 7.1, True, id="next-tick-after-failure"),
    ],
)
def test_one_scheduled_run_per_tick(phase: RunPhase, now_hours: float, starts: bool) -> None:
    status = FeaturePipelineStatus(watermark=at(5))
    pipeline = make_pipeline(schedule="0 * * * *", status=status)
    previous = child(pipeline, window(5, 6), phase, RunKind.SCHEDULE)
    pods = [pod(previous, message="{}")] if phase == RunPhase.SUCCEEDED else []
    plan = plan_at(pipeline, observed(pipeline, previous, pods=pods), at(now_hours))
    assert bool(plan.create) == starts
    if starts:
        expected = "2026-11-01T06:00:00Z" if phase == RunPhase.SUCCEEDED else "2026-11-01T05:00:00Z"
        assert created_windows(plan) == [(expected, "Job")]


def test_restart_finds_its_runs_by_name() -> None:
    pipeline = make_pipeline(backfill=daily_backfill(days=3, parallelism=2))
    first = plan_at(pipeline, observed(pipeline), at(80))
    # The operator died after creating the children, before its status write: same plan, same names.
    again = plan_at(pipeline, observed(pipeline), at(81))
    assert [c["metadata"]["name"] for c in first.create] == [c["metadata"]["name"] for c in again.create]
    # Once they are observed, nothing more starts while both run.
    children = [child(pipeline, window(d * DAY, (d + 1) * DAY)) for d in range(2)]
    assert plan_at(pipeline, observed(pipeline, *children), at(82)).create == []


def test_suspend_starts_nothing() -> None:
    pipeline = make_pipeline(schedule="0 * * * *", backfill=daily_backfill(days=2), suspend=True)
    plan = plan_at(pipeline, observed(pipeline), at(60))
    assert plan.create == []
    assert plan.status.phase == PipelinePhase.SUSPENDED
    assert condition(plan, "Running")[:2] == (ConditionStatus.FALSE, "Suspended")
    assert "Suspended" in reasons(plan)


def test_suspend_lets_running_runs_finish() -> None:
    pipeline = make_pipeline(backfill=daily_backfill(days=3), suspend=True)
    plan = plan_at(pipeline, observed(pipeline, child(pipeline, window(0, DAY))), at(80))
    assert plan.create == [] and plan.delete == []
    assert plan.status.activeRuns and plan.status.phase == PipelinePhase.RUNNING


@pytest.mark.parametrize("engine", ["spark", "ray"])
def test_missing_engine_crd_is_a_condition_not_a_crash(engine: str) -> None:
    pipeline = make_pipeline(engine=engine, backfill=daily_backfill(days=2))
    plan = plan_at(pipeline, observed(pipeline, crds=frozenset()), at(60))
    assert plan.create == []
    assert plan.status.phase == PipelinePhase.PENDING
    status, reason, message = condition(plan, "EngineAvailable")
    assert (status, reason) == (ConditionStatus.FALSE, "CRDNotInstalled")
    assert ("sparkapplications.sparkoperator.k8s.io" if engine == "spark" else "rayjobs.ray.io") in message
    assert condition(plan, "Ready")[1] == "EngineNotInstalled"
    assert "EngineNotInstalled" in reasons(plan)
    assert plan.requeue_after == 30.0


@pytest.mark.parametrize(("engine", "kind"), [("spark", "SparkApplication"), ("ray", "RayJob")])
def test_installed_engine_gets_its_children(engine: str, kind: str) -> None:
    pipeline = make_pipeline(engine=engine, backfill=daily_backfill(days=1))
    plan = plan_at(pipeline, observed(pipeline), at(60))
    assert [c["kind"] for c in plan.create] == [kind]
    assert condition(plan, "EngineAvailable")[:2] == (ConditionStatus.TRUE, "CRDInstalled")


def test_old_scheduled_runs_are_removed_once_recorded() -> None:
    pipeline = make_pipeline(schedule="0 * * * *")
    pairs = [done(pipeline, window(h, h + 1), kind=RunKind.SCHEDULE) for h in range(6)]
    failures = [child(pipeline, window(h, h + 1.5), RunPhase.FAILED, RunKind.SCHEDULE) for h in range(2)]
    obs = observed(pipeline, *[c for c, _ in pairs], *failures, pods=[p for _, p in pairs])
    first = plan_at(pipeline, obs, at(6, 30))
    names = {c["metadata"]["name"]: h for h, (c, _) in enumerate(pairs)}
    deleted = {r.name for r in first.delete}
    assert {names[n] for n in deleted if n in names} == set(range(6 - KEEP_SUCCEEDED))
    assert failures[0]["metadata"]["name"] in deleted and failures[1]["metadata"]["name"] not in deleted
    assert first.status.rowsWritten == 60, "recorded in the same status write, before they go"


def test_unrecorded_runs_are_kept() -> None:
    status = FeaturePipelineStatus(recordedRuns=[])
    pipeline = make_pipeline(schedule="0 * * * *", status=status)
    runs = [make_run(window(h, h + 1), kind=RunKind.SCHEDULE, name=f"r{h}") for h in range(6)]
    plan = plan_at(pipeline, Observation(runs=runs), at(6, 30))
    assert {r.name for r in plan.delete} == {"r0", "r1", "r2"}
    assert sorted(plan.status.recordedRuns) == [f"r{h}" for h in range(6)]


def test_recorded_names_of_removed_children_are_dropped() -> None:
    pipeline = make_pipeline(
        backfill=daily_backfill(days=1), status={"recordedRuns": ["gone"], "rowsWritten": 3}
    )
    c, p = done(pipeline, window(0, DAY), rows=4)
    plan = plan_at(pipeline, observed(pipeline, c, pods=[p]), at(30))
    assert plan.status.recordedRuns == [c["metadata"]["name"]]
    assert plan.status.rowsWritten == 7


def test_last_run_is_the_latest_to_finish() -> None:
    pipeline = make_pipeline(backfill=daily_backfill(days=2))
    early, early_pod = done(pipeline, window(DAY, 2 * DAY), rows=1)
    late = child(pipeline, window(0, DAY), RunPhase.FAILED)
    late["status"]["conditions"][0]["lastTransitionTime"] = "2026-11-06T00:00:00Z"
    plan = plan_at(pipeline, observed(pipeline, early, late, pods=[early_pod]), at(200))
    assert plan.status.lastRun is not None
    assert plan.status.lastRun.name == late["metadata"]["name"]
    assert plan.status.lastRun.result == RunResult.FAILED
    assert plan.status.lastSuccessfulRun is not None


def stream_observed(replicas: int, ready: int, annotations: dict[str, str]) -> Observation:
    return Observation(
        stream={
            "metadata": {"name": "sessions-stream", "annotations": annotations},
            "spec": {"replicas": replicas},
            "status": {"readyReplicas": ready},
        }
    )


@pytest.mark.parametrize(
    ("ready", "phase", "reason"),
    [
        pytest.param(0, PipelinePhase.PENDING, "ConsumersNotReady", id="none-ready"),
        pytest.param(1, PipelinePhase.STREAMING, "ConsumersNotReady", id="some-ready"),
        pytest.param(3, PipelinePhase.STREAMING, "ConsumersReady", id="all-ready"),
    ],
)
def test_streaming(ready: int, phase: PipelinePhase, reason: str) -> None:
    pipeline = make_pipeline("sessions", mode="streaming", streaming={"consumers": 3})
    desired = desired_stream(pipeline, IMAGES)
    plan = plan_at(pipeline, stream_observed(3, ready, desired["metadata"]["annotations"]), at(1))
    assert plan.apply == [], "nothing changed"
    assert (plan.status.phase, plan.status.consumers) == (phase, ready)
    assert condition(plan, "Ready")[1] == reason


@pytest.mark.parametrize(
    ("observation", "applies"),
    [
        pytest.param(Observation(), True, id="missing"),
        pytest.param(stream_observed(3, 3, {"loom.ml/spec-hash": "old"}), True, id="spec-changed"),
    ],
)
def test_streaming_applies_its_deployment(observation: Observation, applies: bool) -> None:
    pipeline = make_pipeline("sessions", mode="streaming", streaming={"consumers": 3})
    plan = plan_at(pipeline, observation, at(1))
    assert [d["kind"] for d in plan.apply] == (["Deployment"] if applies else [])


def test_streaming_suspended() -> None:
    pipeline = make_pipeline("sessions", mode="streaming", suspend=True)
    plan = plan_at(pipeline, Observation(), at(1))
    assert plan.apply[0]["spec"]["replicas"] == 0
    assert plan.status.phase == PipelinePhase.SUSPENDED


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(None, {}, True, id="no-status-yet"),
        pytest.param({"rowsWritten": 1}, {"rowsWritten": 1}, False, id="same"),
        pytest.param({"rowsWritten": 1}, {"rowsWritten": 2}, True, id="changed"),
        pytest.param(
            {"freshnessSeconds": 10.0}, {"freshnessSeconds": 40.0}, False, id="freshness-drift-small"
        ),
        pytest.param(
            {"freshnessSeconds": 10.0}, {"freshnessSeconds": 75.0}, True, id="freshness-drift-minute"
        ),
        pytest.param({}, {"freshnessSeconds": 1.0}, True, id="freshness-appears"),
    ],
)
def test_needs_patch(old: dict[str, Any] | None, new: dict[str, Any], expected: bool) -> None:
    before = FeaturePipelineStatus.model_validate(old) if old is not None else None
    assert needs_patch(before, FeaturePipelineStatus.model_validate(new)) == expected


def test_generation_is_observed() -> None:
    pipeline = make_pipeline(backfill=daily_backfill(days=1), generation=7)
    plan = plan_at(pipeline, observed(pipeline), at(30))
    assert plan.status.observedGeneration == 7
    assert all(c.observedGeneration == 7 for c in plan.status.conditions)


def test_condition_transition_time_is_kept_while_unchanged() -> None:
    pipeline = make_pipeline(backfill=daily_backfill(days=2))
    running = child(pipeline, window(0, DAY))
    first = plan_at(pipeline, observed(pipeline, running), at(50))
    second = plan_at(then(pipeline, first), observed(pipeline, running), at(51))
    times = {c.type: c.lastTransitionTime for c in first.status.conditions}
    assert {c.type: c.lastTransitionTime for c in second.status.conditions} == times
    assert times["Running"] == at(50)


def test_run_names_match_children() -> None:
    pipeline = make_pipeline(backfill=daily_backfill(days=1))
    plan = plan_at(pipeline, observed(pipeline), at(30))
    assert plan.create[0]["metadata"]["name"] == run_name(pipeline, window(0, DAY))
