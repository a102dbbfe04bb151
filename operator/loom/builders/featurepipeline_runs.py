"""What a FeaturePipeline's children say about their runs: the phase of each child, and the run's
summary from its pod's termination message.

Pure: no I/O. Phases follow each engine's own status:
- batch/v1 Job: conditions Complete / SuccessCriteriaMet (succeeded), Failed / FailureTarget (failed);
- SparkApplication: status.applicationState.state, where only COMPLETED and FAILED are terminal;
- RayJob: jobDeploymentStatus with jobStatus: Complete + SUCCEEDED succeeded; Complete + FAILED or
  STOPPED, Failed and ValidationFailed failed.
The summary is the JSON line the runtime writes to /dev/termination-log (rows_in, rows_out,
online_written, watermark, newest_event, seconds; or error and exit_code).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from loom.builders.featurepipeline import (
    ANNOTATION_END,
    ANNOTATION_START,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_RUN_KIND,
    RunKind,
    Window,
)

RUN_KINDS = ("Job", "SparkApplication", "RayJob")
EXIT_REASONS = {65: "BadInput", 69: "SourceUnavailable", 70: "InternalError", 137: "Killed"}
_SUMMARY_ROLE = {"Job": None, "SparkApplication": "driver", "RayJob": "submitter"}


class RunPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        return self in (RunPhase.SUCCEEDED, RunPhase.FAILED)


@dataclass(frozen=True)
class Summary:
    """The runtime's summary line of one run (a failure has `error` and `exit_code`)."""

    rows_in: int | None = None
    rows_out: int | None = None
    online_written: int | None = None
    watermark: datetime | None = None
    newest_event: datetime | None = None
    seconds: float | None = None
    error: str | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class Run:
    """One child of a pipeline as observed: its window, phase, and what it reported."""

    name: str
    kind: RunKind
    window: Window
    child_kind: str
    phase: RunPhase
    uid: str = ""
    summary: Summary | None = None
    reason: str = ""
    message: str = ""
    created: datetime | None = None
    finished_at: datetime | None = None

    @property
    def active(self) -> bool:
        return not self.phase.finished


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_summary(message: str | None) -> Summary | None:
    """The summary in a termination message: its last non-empty line, as JSON. A message that is not
    such a line (a runtime that died before writing one) is kept whole as the error."""
    lines = [line for line in (message or "").splitlines() if line.strip()]
    if not lines:
        return None
    try:
        data = json.loads(lines[-1])
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Summary(error=" ".join(lines)[-500:])
    seconds = data.get("seconds")
    error = data.get("error")
    return Summary(
        rows_in=_int(data.get("rows_in")),
        rows_out=_int(data.get("rows_out")),
        online_written=_int(data.get("online_written")),
        watermark=parse_time(data.get("watermark")),
        newest_event=parse_time(data.get("newest_event")),
        seconds=float(seconds)
        if isinstance(seconds, int | float) and not isinstance(seconds, bool)
        else None,
        error=str(error) if error else None,
        exit_code=_int(data.get("exit_code")),
    )


def _condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            found: Mapping[str, Any] = c
            return found
    return None


def job_phase(job: Mapping[str, Any]) -> RunPhase:
    if _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet"):
        return RunPhase.SUCCEEDED
    if _condition(job, "Failed") or _condition(job, "FailureTarget"):
        return RunPhase.FAILED
    status = job.get("status") or {}
    return RunPhase.RUNNING if status.get("active") or status.get("ready") else RunPhase.PENDING


_SPARK_PENDING = {"", "SUBMITTED", "PENDING_RERUN", "SUBMISSION_FAILED", "SUSPENDED", "UNKNOWN"}


def spark_phase(app: Mapping[str, Any]) -> RunPhase:
    state = str(((app.get("status") or {}).get("applicationState") or {}).get("state") or "")
    if state == "COMPLETED":
        return RunPhase.SUCCEEDED
    if state == "FAILED":
        return RunPhase.FAILED
    return RunPhase.PENDING if state in _SPARK_PENDING else RunPhase.RUNNING


def ray_phase(rayjob: Mapping[str, Any]) -> RunPhase:
    status = rayjob.get("status") or {}
    deployment = str(status.get("jobDeploymentStatus") or "")
    job = str(status.get("jobStatus") or "")
    if deployment == "Complete":
        if job == "SUCCEEDED":
            return RunPhase.SUCCEEDED
        return RunPhase.FAILED if job in ("FAILED", "STOPPED") else RunPhase.RUNNING
    if deployment in ("Failed", "ValidationFailed"):
        return RunPhase.FAILED
    return RunPhase.RUNNING if deployment in ("Running", "Retrying", "Suspending") else RunPhase.PENDING


PHASES = {"Job": job_phase, "SparkApplication": spark_phase, "RayJob": ray_phase}


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        state = (c.get("state") or {}).get("terminated")
        if state:
            found: Mapping[str, Any] = state
            return found
    return None


def pod_summary(pods: Iterable[Mapping[str, Any]], succeeded: bool) -> tuple[Summary | None, int | None]:
    """The summary and exit code of a run's pods: the one that exited 0 when the run succeeded, else
    the last one to terminate."""
    ended = [(t, p) for p in pods if (t := _terminated(p)) is not None]
    if succeeded:
        ended = [(t, p) for t, p in ended if t.get("exitCode") == 0] or ended
    if not ended:
        return None, None
    last, _ = max(ended, key=lambda tp: str(tp[0].get("finishedAt") or ""))
    code = _int(last.get("exitCode"))
    summary = parse_summary(last.get("message"))
    if summary is not None and summary.exit_code is None and summary.error:
        summary = Summary(**{**summary.__dict__, "exit_code": code})
    return summary, code


def _child_message(child: Mapping[str, Any]) -> tuple[str, str, datetime | None]:
    """(reason, message, finished at) as the child itself reports them."""
    kind = child.get("kind")
    status = child.get("status") or {}
    if kind == "Job":
        c = _condition(child, "Failed") or _condition(child, "FailureTarget")
        if c is not None:
            return (
                str(c.get("reason") or "Failed"),
                str(c.get("message") or ""),
                parse_time(c.get("lastTransitionTime")),
            )
        return "", "", parse_time(status.get("completionTime"))
    if kind == "SparkApplication":
        state = status.get("applicationState") or {}
        reason = "SparkApplicationFailed" if state.get("state") == "FAILED" else ""
        return reason, str(state.get("errorMessage") or ""), parse_time(status.get("terminationTime"))
    reason = str(status.get("reason") or "")
    if not reason and status.get("jobStatus") in ("FAILED", "STOPPED"):
        reason = f"RayJob{str(status['jobStatus']).title()}"
    return reason, str(status.get("message") or ""), parse_time(status.get("endTime"))


def window_of(child: Mapping[str, Any]) -> Window | None:
    annotations = (child.get("metadata") or {}).get("annotations") or {}
    start, end = parse_time(annotations.get(ANNOTATION_START)), parse_time(annotations.get(ANNOTATION_END))
    return Window(start, end) if start and end else None


def observe_run(child: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> Run | None:
    """A child as a Run (None for an object that is not one of Loom's runs)."""
    kind = str(child.get("kind") or "")
    window = window_of(child)
    meta = child.get("metadata") or {}
    if kind not in PHASES or window is None:
        return None
    name = str(meta.get("name"))
    role = _SUMMARY_ROLE[kind]
    own = [
        p
        for p in pods
        if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_RUN) == name
        and (role is None or ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_ROLE) == role)
    ]
    phase = PHASES[kind](child)
    summary, code = pod_summary(own, phase == RunPhase.SUCCEEDED)
    reason, message, finished = _child_message(child)
    if phase == RunPhase.FAILED:
        exit_code = summary.exit_code if summary and summary.exit_code is not None else code
        if exit_code in EXIT_REASONS:
            reason = EXIT_REASONS[exit_code]
        elif exit_code:
            reason = f"ExitCode{exit_code}"
        reason = reason or "Failed"
        if summary is not None and summary.error:
            message = summary.error + (f" (exit {exit_code})" if exit_code is not None else "")
    try:
        run_kind = RunKind(str((meta.get("labels") or {}).get(LABEL_RUN_KIND) or RunKind.BACKFILL))
    except ValueError:
        run_kind = RunKind.BACKFILL
    return Run(
        name=name,
        kind=run_kind,
        window=window,
        child_kind=kind,
        phase=phase,
        uid=str(meta.get("uid") or ""),
        summary=summary,
        reason=reason if phase == RunPhase.FAILED else "",
        message=message,
        created=parse_time(meta.get("creationTimestamp")),
        finished_at=finished if phase.finished else None,
    )
