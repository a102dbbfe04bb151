"""Fixture factories for FeaturePipeline tests: pipelines, their children in any state, run pods with
termination messages, and Runs, built from the real builders so that tests never copy YAML around."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from loom.api.featurepipeline import FeaturePipeline, FeaturePipelineStatus
from loom.builders.featurepipeline import LABEL_ROLE, LABEL_RUN, Images, RunKind, Window, desired_run
from loom.builders.featurepipeline_plan import Observation, Plan, decide
from loom.builders.featurepipeline_runs import Run, RunPhase, Summary, observe_run

T0 = datetime(2026, 11, 1, tzinfo=UTC)
IMAGES = Images(base="loom-features:test")


def at(hours: float = 0, minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(hours=hours, minutes=minutes, seconds=seconds)


def window(start_hours: float, end_hours: float) -> Window:
    return Window(at(start_hours), at(end_hours))


def make_pipeline(
    name: str = "clicks",
    *,
    engine: str | dict[str, Any] = "local",
    schedule: str | None = None,
    backfill: dict[str, Any] | None = None,
    mode: str = "batch",
    status: dict[str, Any] | FeaturePipelineStatus | None = None,
    generation: int = 1,
    **spec: Any,
) -> FeaturePipeline:
    streaming = mode == "streaming"
    source: dict[str, Any] = {"timestampField": "ts", "entityKeys": ["user_id"]}
    if streaming:
        source["redisStream"] = {"url": "redis://127.0.0.1:6379/0", "stream": "clicks"}
    else:
        source["parquet"] = {"path": "/data/clicks/*.parquet"}
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ns", "uid": "uid-1", "generation": generation},
        "spec": {
            "source": source,
            "transform": {"sql": "SELECT user_id, max(ts) AS ts, count(*) AS clicks FROM source GROUP BY 1"},
            "mode": mode,
            "sinks": {"online": {"redis": {"url": "redis://127.0.0.1:6379/1", "keyPrefix": "user:"}}},
            "engine": engine if isinstance(engine, dict) else {"type": engine},
            **({"schedule": schedule} if schedule else {}),
            **({"backfill": backfill} if backfill else {}),
            **spec,
        },
    }
    if isinstance(status, FeaturePipelineStatus):
        status = status.model_dump(mode="json")
    if status is not None:
        body["status"] = status
    return FeaturePipeline.model_validate(body)


def with_status(pipeline: FeaturePipeline, status: FeaturePipelineStatus) -> FeaturePipeline:
    return pipeline.model_copy(update={"status": status})


def daily_backfill(days: int = 4, parallelism: int = 2, step: str = "1d") -> dict[str, Any]:
    return {
        "start": T0.isoformat(),
        "end": (T0 + timedelta(days=days)).isoformat(),
        "step": step,
        "parallelism": parallelism,
    }


def summary_line(rows_out: int = 10, *, newest: datetime | None = None, **extra: Any) -> str:
    body: dict[str, Any] = {
        "rows_in": rows_out * 3,
        "rows_out": rows_out,
        "online_written": rows_out,
        "offline_files": 1,
        "watermark": "2026-11-02T00:00:00Z",
        "newest_event": (newest or at(23)).isoformat().replace("+00:00", "Z"),
        "seconds": 1.5,
        **extra,
    }
    return json.dumps(body)


def error_line(error: str, exit_code: int = 65) -> str:
    return json.dumps({"error": error, "exit_code": exit_code, "window": {}})


_JOB_STATUS = {
    RunPhase.PENDING: {},
    RunPhase.RUNNING: {"active": 1},
    RunPhase.SUCCEEDED: {
        "succeeded": 1,
        "completionTime": "2026-11-05T00:00:10Z",
        "conditions": [{"type": "Complete", "status": "True"}],
    },
    RunPhase.FAILED: {
        "failed": 1,
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
                "lastTransitionTime": "2026-11-05T00:00:10Z",
            }
        ],
    },
}
_SPARK_STATE = {
    RunPhase.PENDING: "SUBMITTED",
    RunPhase.RUNNING: "RUNNING",
    RunPhase.SUCCEEDED: "COMPLETED",
    RunPhase.FAILED: "FAILED",
}
_RAY_STATUS = {
    RunPhase.PENDING: {"jobDeploymentStatus": "Initializing"},
    RunPhase.RUNNING: {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
    RunPhase.SUCCEEDED: {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
    RunPhase.FAILED: {"jobDeploymentStatus": "Complete", "jobStatus": "FAILED", "message": "job failed"},
}


def child(
    pipeline: FeaturePipeline,
    w: Window,
    phase: RunPhase = RunPhase.RUNNING,
    kind: RunKind = RunKind.BACKFILL,
    *,
    created: datetime | None = None,
) -> dict[str, Any]:
    """The pipeline's child for window `w`, as its engine's controller would report it in `phase`."""
    body = desired_run(pipeline, kind, w, IMAGES)
    body["metadata"]["uid"] = "uid-" + body["metadata"]["name"]
    body["metadata"]["creationTimestamp"] = (created or w.end).isoformat()
    if body["kind"] == "Job":
        body["status"] = json.loads(json.dumps(_JOB_STATUS[phase]))
    elif body["kind"] == "SparkApplication":
        body["status"] = {"applicationState": {"state": _SPARK_STATE[phase]}}
        if phase == RunPhase.FAILED:
            body["status"]["applicationState"]["errorMessage"] = "driver container failed with ExitCode: 65"
    else:
        body["status"] = dict(_RAY_STATUS[phase])
    return body


def pod(
    run_child: dict[str, Any],
    *,
    exit_code: int | None = 0,
    message: str | None = None,
    role: str | None = None,
    finished: str = "2026-11-05T00:00:09Z",
) -> dict[str, Any]:
    """A pod of the run: terminated with `exit_code` and `message` (None: still running)."""
    name = run_child["metadata"]["name"]
    default_role = {"Job": "run", "SparkApplication": "driver", "RayJob": "submitter"}[run_child["kind"]]
    state: dict[str, Any] = {"running": {}}
    if exit_code is not None:
        state = {"terminated": {"exitCode": exit_code, "finishedAt": finished, "reason": "Completed"}}
        if message is not None:
            state["terminated"]["message"] = message
    return {
        "metadata": {"name": f"{name}-x", "labels": {LABEL_RUN: name, LABEL_ROLE: role or default_role}},
        "status": {"containerStatuses": [{"name": "features", "state": state}]},
    }


def observed(
    pipeline: FeaturePipeline,
    *children: dict[str, Any],
    pods: list[dict[str, Any]] | None = None,
    crds: frozenset[str] | None = None,
) -> Observation:
    runs = [r for c in children if (r := observe_run(c, pods or [])) is not None]
    engine_crds = frozenset({"sparkapplications.sparkoperator.k8s.io", "rayjobs.ray.io"})
    return Observation(runs=runs, crds=engine_crds if crds is None else crds)


def done(
    pipeline: FeaturePipeline,
    w: Window,
    rows: int = 10,
    kind: RunKind = RunKind.BACKFILL,
    newest: datetime | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A succeeded child of window `w` and its pod's summary."""
    c = child(pipeline, w, RunPhase.SUCCEEDED, kind)
    return c, pod(c, message=summary_line(rows, newest=newest))


def make_run(
    w: Window,
    phase: RunPhase = RunPhase.SUCCEEDED,
    kind: RunKind = RunKind.BACKFILL,
    rows: int | None = 10,
    name: str | None = None,
) -> Run:
    return Run(
        name=name or f"clicks-{w.start:%Y%m%d%H%M}",
        kind=kind,
        window=w,
        child_kind="Job",
        phase=phase,
        summary=Summary(rows_out=rows, newest_event=w.end - timedelta(minutes=1))
        if rows is not None
        else None,
        created=w.end,
        finished_at=w.end + timedelta(seconds=10) if phase.finished else None,
    )


def plan_at(pipeline: FeaturePipeline, obs: Observation, now: datetime) -> Plan:
    return decide(pipeline, obs, now, IMAGES)


def then(pipeline: FeaturePipeline, plan: Plan) -> FeaturePipeline:
    """The pipeline after the plan's status was written."""
    return with_status(pipeline, plan.status)
