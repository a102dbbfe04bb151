"""FeaturePipeline status and events, built in memory from what one reconcile observed and decided.

Pure: no I/O; `now` is a parameter. Each finished run is recorded once: its rows are added to
rowsWritten and it becomes lastRun in the same status write that adds its name to recordedRuns, so
a restarted operator never counts a run twice. The controller patches the result once, when
`needs_patch` says it changed, and records `events()` after that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from loom.api.common import Condition, ConditionStatus
from loom.api.featurepipeline import (
    BackfillStatus,
    FeaturePipeline,
    FeaturePipelineStatus,
    PipelineMode,
    PipelinePhase,
    RunResult,
    RunStatus,
)
from loom.api.featurepipeline import Window as WindowModel
from loom.builders import readiness
from loom.builders.featurepipeline import Window, rfc3339
from loom.builders.featurepipeline_runs import Run, RunPhase

FAILED_WINDOWS_SHOWN = 20
FRESHNESS_RESOLUTION_SECONDS = 60.0


class Event(NamedTuple):
    type: str
    reason: str
    message: str
    run: str = ""  # the run it is about, for RunStarted (dropped when the child existed already)


@dataclass(frozen=True)
class Observed:
    """One reconcile's view: every run (including those created in it) and what the plan decided."""

    runs: Sequence[Run] = ()
    created: Sequence[Run] = ()
    backfill: Sequence[tuple[Window, Run | None]] = ()  # each backfill window and its run, if any
    watermark: datetime | None = None
    engine_problem: str | None = None  # why the engine cannot run, e.g. its CRD is not installed
    stream: Mapping[str, Any] | None = None  # the streaming Deployment as observed
    waiting: str = ""  # why no scheduled run starts now, if one is due


def _condition(
    previous: Sequence[Condition],
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    gen: int | None,
    now: datetime,
) -> Condition:
    status = ConditionStatus.TRUE if ok else ConditionStatus.FALSE
    old = next((c for c in previous if c.type == type_), None)
    since = old.lastTransitionTime if old and old.status == status and old.lastTransitionTime else now
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:1000],
        lastTransitionTime=since,
        observedGeneration=gen,
    )


def _order(run: Run) -> tuple[datetime, datetime]:
    return (run.finished_at or run.window.end, run.window.end)


def run_status(run: Run) -> RunStatus:
    summary = run.summary
    seconds = summary.seconds if summary and summary.seconds is not None else None
    if seconds is None and run.created and run.finished_at:
        seconds = max(0.0, (run.finished_at - run.created).total_seconds())
    if run.phase == RunPhase.SUCCEEDED:
        if summary and summary.rows_out is not None:
            message = (
                f"{summary.rows_out} rows from {summary.rows_in if summary.rows_in is not None else '?'} "
                f"in, {summary.online_written if summary.online_written is not None else 0} entities online"
            )
        else:
            message = "succeeded (no summary reported)"
    else:
        message = f"{run.reason}: {run.message}" if run.message else run.reason
    return RunStatus(
        name=run.name,
        window=WindowModel(start=run.window.start, end=run.window.end),
        result=RunResult.SUCCEEDED if run.phase == RunPhase.SUCCEEDED else RunResult.FAILED,
        rows=summary.rows_out if summary else None,
        seconds=round(seconds, 3) if seconds is not None else None,
        message=message[:1000],
    )


def newly_finished(previous: FeaturePipelineStatus, runs: Sequence[Run]) -> list[Run]:
    """Finished runs the status has not recorded yet, oldest first."""
    recorded = set(previous.recordedRuns)
    return sorted((r for r in runs if r.phase.finished and r.name not in recorded), key=_order)


def backfill_status(backfill: Sequence[tuple[Window, Run | None]]) -> BackfillStatus | None:
    if not backfill:
        return None
    failed = [w for w, r in backfill if r is not None and r.phase == RunPhase.FAILED]
    return BackfillStatus(
        windowsTotal=len(backfill),
        succeeded=sum(1 for _, r in backfill if r is not None and r.phase == RunPhase.SUCCEEDED),
        failed=len(failed),
        running=sum(1 for _, r in backfill if r is not None and r.active),
        failedWindows=[rfc3339(w.start) for w in failed[:FAILED_WINDOWS_SHOWN]],
    )


def _failure(run: Run) -> str:
    return f"window {run.window} ({run.name}) failed: {run.reason}: {run.message or 'no message'}"


def _phase(
    pipeline: FeaturePipeline, o: Observed, last: RunStatus | None, bf: BackfillStatus | None
) -> PipelinePhase:
    spec = pipeline.spec
    if spec.mode == PipelineMode.STREAMING:
        if spec.suspend:
            return PipelinePhase.SUSPENDED
        ready = int(((o.stream or {}).get("status") or {}).get("readyReplicas") or 0)
        return PipelinePhase.STREAMING if ready > 0 else PipelinePhase.PENDING
    if any(r.active for r in o.runs):
        return PipelinePhase.RUNNING
    if spec.suspend:
        return PipelinePhase.SUSPENDED
    if o.engine_problem or last is None:
        return PipelinePhase.PENDING if o.engine_problem or not spec.schedule else PipelinePhase.SCHEDULED
    if last.result == RunResult.FAILED:
        return PipelinePhase.FAILED
    backfill_pending = bf is not None and bf.succeeded + bf.failed < bf.windowsTotal
    if bf is not None and bf.failed and not backfill_pending and not spec.schedule:
        return PipelinePhase.FAILED
    if spec.schedule:
        return PipelinePhase.SCHEDULED
    return PipelinePhase.RUNNING if backfill_pending else PipelinePhase.SUCCEEDED


def _conditions(
    pipeline: FeaturePipeline,
    previous: FeaturePipelineStatus,
    o: Observed,
    status: FeaturePipelineStatus,
    now: datetime,
) -> list[Condition]:
    gen = pipeline.metadata.get("generation")
    prev = previous.conditions
    out: list[Condition] = []
    spec = pipeline.spec
    if spec.mode == PipelineMode.STREAMING:
        want = 0 if spec.suspend else spec.streaming.consumers
        consumers = status.consumers or 0
        text = (
            f"{consumers}/{want} consumers ready; rows written and freshness are the consumers' metrics "
            "loom_feature_rows_written_total and loom_feature_freshness_seconds"
        )
        ok = consumers >= want
        out.append(
            _condition(prev, "Ready", ok, "ConsumersReady" if ok else "ConsumersNotReady", text, gen, now)
        )
        return out
    failed = [r for _, r in o.backfill if r is not None and r.phase == RunPhase.FAILED]
    last = status.lastRun
    ready: tuple[bool, str, str]
    if o.engine_problem:
        ready = (False, "EngineNotInstalled", o.engine_problem)
    elif last is not None and last.result == RunResult.FAILED:
        failed_run = next((r for r in o.runs if r.name == last.name), None)
        text = _failure(failed_run) if failed_run else f"window {last.window.start}: {last.message}"
        ready = (False, "RunFailed", text)
    elif failed:
        shown = "; ".join(_failure(r) for r in failed[:3])
        ready = (False, "WindowsFailed", f"{len(failed)} backfill window(s) failed: {shown}")
    elif status.watermark is not None:
        ready = (True, "Succeeded", f"written up to {rfc3339(status.watermark)}, {status.rowsWritten} rows")
    elif spec.schedule:  # set up: like a CronJob, current before its first tick
        ready = (True, "Scheduled", o.waiting or "waiting for the schedule's next tick")
    else:
        ready = (False, "NoRunYet", o.waiting or "no run has finished yet")
    out.append(_condition(prev, "Ready", *ready, gen, now))
    active = sorted(r.name for r in o.runs if r.active)
    if active:
        out.append(
            _condition(
                prev, "Running", True, "RunsActive", f"{len(active)} running: {', '.join(active)}", gen, now
            )
        )
    elif spec.suspend:
        out.append(
            _condition(prev, "Running", False, "Suspended", "spec.suspend: no new runs start", gen, now)
        )
    else:
        out.append(_condition(prev, "Running", False, "Idle", o.waiting or "no run is active", gen, now))
    bf = status.backfill
    if bf is not None:
        done = bf.succeeded + bf.failed
        if done < bf.windowsTotal:
            text = f"{done}/{bf.windowsTotal} windows done, {bf.running} running"
            out.append(_condition(prev, "BackfillComplete", False, "InProgress", text, gen, now))
        else:
            reason = "WindowsFailed" if bf.failed else "Succeeded"
            text = f"{bf.succeeded}/{bf.windowsTotal} windows succeeded, {bf.failed} failed"
            out.append(_condition(prev, "BackfillComplete", True, reason, text, gen, now))
    if spec.engine.type != "local":
        if o.engine_problem:
            out.append(
                _condition(prev, "EngineAvailable", False, "CRDNotInstalled", o.engine_problem, gen, now)
            )
        else:
            text = f"{spec.engine.type} runs are served by this cluster"
            out.append(_condition(prev, "EngineAvailable", True, "CRDInstalled", text, gen, now))
    return out


def build_status(
    pipeline: FeaturePipeline, previous: FeaturePipelineStatus, o: Observed, now: datetime
) -> tuple[FeaturePipelineStatus, list[Run]]:
    """The new status, and the runs it records for the first time (oldest first)."""
    new = newly_finished(previous, o.runs)
    existing = {r.name for r in o.runs}
    rows = (previous.rowsWritten or 0) + sum(r.summary.rows_out or 0 for r in new if r.summary)
    successes = [r for r in new if r.phase == RunPhase.SUCCEEDED]
    newest = max(
        [
            t
            for t in [previous.newestEventTime, *(r.summary.newest_event for r in successes if r.summary)]
            if t
        ],
        default=None,
    )
    last_success = max(
        [t for t in [previous.lastSuccessfulRun, *(r.finished_at or now for r in successes)] if t],
        default=None,
    )
    last = run_status(new[-1]) if new else previous.lastRun
    bf = backfill_status(o.backfill)
    status = FeaturePipelineStatus(
        watermark=o.watermark,
        lastSuccessfulRun=last_success,
        rowsWritten=rows,
        newestEventTime=newest,
        freshnessSeconds=round(max(0.0, (now - newest).total_seconds()), 1) if newest else None,
        lastRun=last,
        activeRuns=sorted(r.name for r in o.runs if r.active),
        backfill=bf,
        recordedRuns=[n for n in previous.recordedRuns if n in existing] + [r.name for r in new],
        observedGeneration=pipeline.metadata.get("generation"),
    )
    if pipeline.spec.mode == PipelineMode.STREAMING:
        status.consumers = int(((o.stream or {}).get("status") or {}).get("readyReplicas") or 0)
        status.rowsWritten = None  # not known here: each consumer counts its own (metrics, progress lines)
    status.phase = _phase(pipeline, o, last, bf)
    status.conditions = _conditions(pipeline, previous, o, status, now)
    readiness.featurepipeline(status, previous.conditions, pipeline.metadata.get("generation"), now)
    return status, new


def needs_patch(old: FeaturePipelineStatus | None, new: FeaturePipelineStatus) -> bool:
    """Anything but freshness changed, or freshness drifted by a minute (the metric is live)."""
    if old is None:
        return True
    if old.model_dump(exclude={"freshnessSeconds"}) != new.model_dump(exclude={"freshnessSeconds"}):
        return True
    if (old.freshnessSeconds is None) != (new.freshnessSeconds is None):
        return True
    drift = abs((old.freshnessSeconds or 0.0) - (new.freshnessSeconds or 0.0))
    return drift >= FRESHNESS_RESOLUTION_SECONDS


def _condition_of(status: FeaturePipelineStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def _transitioned(
    previous: FeaturePipelineStatus, new: FeaturePipelineStatus, type_: str
) -> Condition | None:
    """The condition `type_` of `new` when its status or reason differs from before."""
    cond, old = _condition_of(new, type_), _condition_of(previous, type_)
    if cond is None or (old is not None and (old.status, old.reason) == (cond.status, cond.reason)):
        return None
    return cond


def events(
    previous: FeaturePipelineStatus, new: FeaturePipelineStatus, o: Observed, recorded: Sequence[Run]
) -> list[Event]:
    """The events worth recording for this reconcile."""
    out: list[Event] = []
    for run in o.created:
        text = f"{run.kind} run {run.name} ({run.child_kind}) for window {run.window}"
        out.append(Event("Normal", "RunStarted", text, run.name))
    for run in recorded:
        if run.phase == RunPhase.SUCCEEDED:
            text = f"{run.name}: window {run.window}: {run_status(run).message}"
            out.append(Event("Normal", "RunSucceeded", text, run.name))
        else:
            out.append(Event("Warning", "RunFailed", _failure(run), run.name))
    engine = _transitioned(previous, new, "EngineAvailable")
    if engine is not None and engine.status == ConditionStatus.FALSE:
        out.append(Event("Warning", "EngineNotInstalled", engine.message))
    backfill = _transitioned(previous, new, "BackfillComplete")
    if backfill is not None and backfill.status == ConditionStatus.TRUE:
        type_ = "Warning" if backfill.reason == "WindowsFailed" else "Normal"
        out.append(Event(type_, "BackfillComplete", backfill.message))
    if new.phase == PipelinePhase.SUSPENDED and previous.phase != PipelinePhase.SUSPENDED:
        out.append(Event("Normal", "Suspended", "spec.suspend: no new runs start; running ones finish"))
    return out
