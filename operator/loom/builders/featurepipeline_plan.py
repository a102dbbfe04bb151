"""The FeaturePipeline reconcile decision: which runs to start, which old ones to remove, what the
status says. `decide(pipeline, observed, now, images) -> Plan`.

Pure: no I/O; `now` is a parameter. Batch pipelines get one child per window:
- backfill: one run per step, in time order, at most backfill.parallelism at once; a window with a
  child (running, succeeded or failed) is not started again, so backfill children are the record of
  which windows are done (they are kept; failures were retried by the engine: spec.retries);
- schedule: at the newest tick T not yet run, one run of [watermark - allowedLateness, T), once no
  backfill window is left to run and no earlier scheduled run is active; finished scheduled runs are
  removed once recorded, beyond the newest few (as a CronJob's history limits);
- suspend: nothing new starts.
Streaming pipelines get a Deployment of consumers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loom.api.featurepipeline import EngineType, FeaturePipeline, FeaturePipelineStatus, PipelineMode
from loom.builders.featurepipeline import (
    ANNOTATION_SPEC_HASH,
    Images,
    RunKind,
    Window,
    desired_run,
    desired_stream,
    run_name,
)
from loom.builders.featurepipeline_runs import Run, RunPhase
from loom.builders.featurepipeline_status import Event, Observed, build_status, events
from loom.builders.featurepipeline_windows import (
    advance_watermark,
    backfill_windows,
    latest_tick,
    next_tick,
    scheduled_window,
    utc,
)

RESYNC_SECONDS = 60.0
ENGINE_RETRY_SECONDS = 30.0
KEEP_SUCCEEDED = 3
KEEP_FAILED = 1
ENGINE_CRDS = {
    EngineType.SPARK: (
        "sparkapplications.sparkoperator.k8s.io",
        "SparkApplication",
        "the Kubeflow Spark Operator",
    ),
    EngineType.RAY: ("rayjobs.ray.io", "RayJob", "KubeRay"),
}


@dataclass(frozen=True)
class Observation:
    """What the controller saw: the pipeline's run children (as Runs), its Deployment, and which
    engine CRDs the cluster serves."""

    runs: Sequence[Run] = ()
    stream: Mapping[str, Any] | None = None
    crds: frozenset[str] = frozenset()


@dataclass
class Plan:
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[Run] = field(default_factory=list)
    apply: list[dict[str, Any]] = field(default_factory=list)
    status: FeaturePipelineStatus = field(default_factory=FeaturePipelineStatus)
    events: list[Event] = field(default_factory=list)
    recorded: list[Run] = field(default_factory=list)  # runs this status counts for the first time
    requeue_after: float | None = None


def engine_problem(pipeline: FeaturePipeline, crds: frozenset[str]) -> str | None:
    """Why the pipeline's engine cannot run here (its CRD is not served), or None."""
    engine = EngineType(pipeline.spec.engine.type)
    if engine not in ENGINE_CRDS or ENGINE_CRDS[engine][0] in crds:
        return None
    crd, kind, project = ENGINE_CRDS[engine]
    return (
        f"engine {engine} needs the {kind} CRD ({crd}), which this cluster does not serve: "
        f"install {project}, or use engine.type local"
    )


def stored_status(pipeline: FeaturePipeline) -> FeaturePipelineStatus:
    return pipeline.status or FeaturePipelineStatus()


def _best(runs: Sequence[Run]) -> Run | None:
    """The run that speaks for a window: a success, else an active one, else the last failure."""
    rank = {RunPhase.SUCCEEDED: 3, RunPhase.RUNNING: 2, RunPhase.PENDING: 2, RunPhase.FAILED: 1}
    return max(runs, key=lambda r: (rank[r.phase], r.created or r.window.end), default=None)


def _new_run(
    pipeline: FeaturePipeline, kind: RunKind, window: Window, child: Mapping[str, Any], now: datetime
) -> Run:
    return Run(
        name=run_name(pipeline, window),
        kind=kind,
        window=window,
        child_kind=str(child["kind"]),
        phase=RunPhase.PENDING,
        created=now,
    )


def _garbage(runs: Sequence[Run], recorded: set[str]) -> list[Run]:
    """Finished scheduled runs beyond the newest KEEP_SUCCEEDED / KEEP_FAILED, once recorded."""
    out: list[Run] = []
    for phase, keep in ((RunPhase.SUCCEEDED, KEEP_SUCCEEDED), (RunPhase.FAILED, KEEP_FAILED)):
        finished = sorted(
            (r for r in runs if r.kind == RunKind.SCHEDULE and r.phase == phase),
            key=lambda r: r.window.end,
            reverse=True,
        )
        out += [r for r in finished[keep:] if r.name in recorded]
    return out


def _stream_plan(pipeline: FeaturePipeline, observed: Observation, images: Images, now: datetime) -> Plan:
    desired = desired_stream(pipeline, images)
    current = observed.stream
    plan = Plan()
    annotations = ((current or {}).get("metadata") or {}).get("annotations") or {}
    if (
        current is None
        or annotations.get(ANNOTATION_SPEC_HASH) != desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
        or (current.get("spec") or {}).get("replicas") != desired["spec"]["replicas"]
    ):
        plan.apply.append(desired)
    o = Observed(runs=observed.runs, stream=current)
    previous = stored_status(pipeline)
    plan.status, plan.recorded = build_status(pipeline, previous, o, now)
    plan.events = events(previous, plan.status, o, plan.recorded)
    plan.requeue_after = RESYNC_SECONDS
    return plan


def decide(pipeline: FeaturePipeline, observed: Observation, now: datetime, images: Images) -> Plan:
    if pipeline.spec.mode == PipelineMode.STREAMING:
        return _stream_plan(pipeline, observed, images, now)
    spec = pipeline.spec
    previous = stored_status(pipeline)
    problem = engine_problem(pipeline, observed.crds)
    runs = list(observed.runs)
    can_start = not spec.suspend and problem is None
    plan = Plan()
    created: list[Run] = []

    def start(kind: RunKind, window: Window) -> None:
        child = desired_run(pipeline, kind, window, images)
        plan.create.append(child)
        run = _new_run(pipeline, kind, window, child, now)
        created.append(run)
        runs.append(run)

    by_window: dict[Window, list[Run]] = {}
    for run in runs:
        by_window.setdefault(run.window, []).append(run)
    windows = backfill_windows(spec.backfill)
    missing = [w for w in windows if w not in by_window]
    active_backfill = sum(1 for w in windows for r in by_window.get(w, []) if r.active)
    if can_start and spec.backfill is not None:
        for window in missing[: max(0, spec.backfill.parallelism - active_backfill)]:
            start(RunKind.BACKFILL, window)

    origin = utc(spec.backfill.start) if spec.backfill else None
    succeeded = [r.window for r in runs if r.phase == RunPhase.SUCCEEDED]
    watermark = advance_watermark(previous.watermark, origin, succeeded)
    waiting = ""
    if spec.schedule:
        tick = latest_tick(spec.schedule, now)
        scheduled = [r for r in runs if r.kind == RunKind.SCHEDULE]
        done_through = max((r.window.end for r in scheduled), default=None)
        # Without a watermark a backfill's start is where the data begins; lateness is counted back
        # from a watermark only.
        base = watermark or origin
        due = scheduled_window(spec.schedule, tick, base, spec.allowedLateness if watermark else "0s")
        if missing or any(r.active for w in windows for r in by_window.get(w, [])):
            waiting = "scheduled runs wait for the backfill to finish"
        elif any(r.active for r in scheduled):
            waiting = "the previous scheduled run is still running"
        elif (done_through is None or done_through < tick) and due is not None and can_start:
            start(RunKind.SCHEDULE, due)
        plan.requeue_after = max(0.05, (next_tick(spec.schedule, now) - now).total_seconds() + 0.05)

    o = Observed(
        runs=runs,
        created=created,
        backfill=[(w, _best(by_window.get(w, []) + [r for r in created if r.window == w])) for w in windows],
        watermark=watermark,
        engine_problem=problem,
        waiting=waiting,
    )
    plan.status, plan.recorded = build_status(pipeline, previous, o, now)
    plan.events = events(previous, plan.status, o, plan.recorded)
    plan.delete = _garbage(runs, set(plan.status.recordedRuns))
    resync = ENGINE_RETRY_SECONDS if problem else RESYNC_SECONDS
    plan.requeue_after = min(plan.requeue_after or resync, resync)
    return plan
