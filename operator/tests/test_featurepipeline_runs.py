"""Phase detection of each engine's child, and the run summary from its pod's termination message."""

from __future__ import annotations

from typing import Any

import pytest
from test_featurepipeline_factories import child, error_line, make_pipeline, pod, summary_line, window

from loom.builders.featurepipeline_runs import (
    RunPhase,
    Summary,
    job_phase,
    observe_run,
    parse_summary,
    ray_phase,
    spark_phase,
)


def cond(type_: str, status: str = "True") -> dict[str, Any]:
    return {"type": type_, "status": status}


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        pytest.param({}, RunPhase.PENDING, id="new"),
        pytest.param({"active": 1}, RunPhase.RUNNING, id="active"),
        pytest.param({"conditions": [cond("Complete")]}, RunPhase.SUCCEEDED, id="complete"),
        pytest.param({"conditions": [cond("SuccessCriteriaMet")]}, RunPhase.SUCCEEDED, id="success-criteria"),
        pytest.param({"conditions": [cond("Failed")]}, RunPhase.FAILED, id="failed"),
        pytest.param(
            {"active": 1, "conditions": [cond("FailureTarget")]}, RunPhase.FAILED, id="failure-target"
        ),
        pytest.param(
            {"active": 1, "conditions": [cond("Failed", "False")]}, RunPhase.RUNNING, id="failed-false"
        ),
    ],
)
def test_job_phase(status: dict[str, Any], phase: RunPhase) -> None:
    assert job_phase({"status": status}) == phase


@pytest.mark.parametrize(
    ("state", "phase"),
    [
        pytest.param("", RunPhase.PENDING, id="new"),
        pytest.param("SUBMITTED", RunPhase.PENDING, id="submitted-not-terminal"),
        pytest.param("SUBMISSION_FAILED", RunPhase.PENDING, id="submission-failed-retried"),
        pytest.param("PENDING_RERUN", RunPhase.PENDING, id="pending-rerun"),
        pytest.param("RUNNING", RunPhase.RUNNING, id="running"),
        pytest.param("SUCCEEDING", RunPhase.RUNNING, id="succeeding-not-terminal"),
        pytest.param("FAILING", RunPhase.RUNNING, id="failing-not-terminal"),
        pytest.param("INVALIDATING", RunPhase.RUNNING, id="invalidating"),
        pytest.param("COMPLETED", RunPhase.SUCCEEDED, id="completed"),
        pytest.param("FAILED", RunPhase.FAILED, id="failed"),
    ],
)
def test_spark_phase(state: str, phase: RunPhase) -> None:
    assert spark_phase({"status": {"applicationState": {"state": state}}}) == phase


def test_spark_phase_without_status() -> None:
    assert spark_phase({}) == RunPhase.PENDING


@pytest.mark.parametrize(
    ("deployment", "job", "phase"),
    [
        pytest.param("", "", RunPhase.PENDING, id="new"),
        pytest.param("Initializing", "", RunPhase.PENDING, id="initializing"),
        pytest.param("Running", "RUNNING", RunPhase.RUNNING, id="running"),
        pytest.param("Retrying", "FAILED", RunPhase.RUNNING, id="retrying"),
        pytest.param("Complete", "SUCCEEDED", RunPhase.SUCCEEDED, id="complete-succeeded"),
        pytest.param("Complete", "FAILED", RunPhase.FAILED, id="complete-failed"),
        pytest.param("Complete", "STOPPED", RunPhase.FAILED, id="complete-stopped"),
        pytest.param("Complete", "", RunPhase.RUNNING, id="complete-job-status-not-yet"),
        pytest.param("Failed", "", RunPhase.FAILED, id="failed"),
        pytest.param("ValidationFailed", "", RunPhase.FAILED, id="validation-failed"),
        pytest.param("Running", "SUCCEEDED", RunPhase.RUNNING, id="deployment-lags-job"),
    ],
)
def test_ray_phase(deployment: str, job: str, phase: RunPhase) -> None:
    assert ray_phase({"status": {"jobDeploymentStatus": deployment, "jobStatus": job}}) == phase


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
        pytest.param(
            '{"rows_in": 30, "rows_out": 10, "online_written": 9, "watermark": "2026-11-02T00:00:00Z",'
            ' "newest_event": "2026-11-01T23:00:00Z", "seconds": 2}',
            Summary(
                rows_in=30,
                rows_out=10,
                online_written=9,
                watermark=window(24, 24).start,
                newest_event=window(23, 23).start,
                seconds=2.0,
            ),
            id="summary",
        ),
        pytest.param(
            'log line\n{"rows_out": 5, "newest_event": null}\n\n',
            Summary(rows_out=5),
            id="last-line-wins",
        ),
        pytest.param(
            '{"error": "column ts is not in source", "exit_code": 65}',
            Summary(error="column ts is not in source", exit_code=65),
            id="error",
        ),
        pytest.param("Traceback: boom", Summary(error="Traceback: boom"), id="not-json"),
        pytest.param('["a"]', Summary(error='["a"]'), id="json-not-object"),
        pytest.param('{"rows_out": "ten", "seconds": true}', Summary(), id="wrong-types-ignored"),
    ],
)
def test_parse_summary(message: str | None, expected: Summary | None) -> None:
    assert parse_summary(message) == expected


def test_observed_job_success_reads_the_succeeded_pod() -> None:
    pipeline = make_pipeline()
    job = child(pipeline, window(0, 24), RunPhase.SUCCEEDED)
    pods = [
        pod(job, exit_code=69, message=error_line("redis unreachable", 69), finished="2026-11-05T00:00:01Z"),
        pod(job, exit_code=0, message=summary_line(42), finished="2026-11-05T00:00:05Z"),
    ]
    run = observe_run(job, pods)
    assert run is not None
    assert run.phase == RunPhase.SUCCEEDED and run.summary is not None and run.summary.rows_out == 42
    assert run.window == window(0, 24)
    assert run.finished_at is not None and run.reason == ""


@pytest.mark.parametrize(
    ("code", "message", "reason", "text"),
    [
        pytest.param(
            65,
            error_line("column ts is not in source"),
            "BadInput",
            "column ts is not in source (exit 65)",
            id="bad-input",
        ),
        pytest.param(
            69,
            error_line("connection refused", 69),
            "SourceUnavailable",
            "connection refused (exit 69)",
            id="unavailable",
        ),
        pytest.param(3, "segfault", "ExitCode3", "segfault (exit 3)", id="other-code-raw-message"),
        pytest.param(1, None, "ExitCode1", "Job has reached the specified backoff limit", id="no-message"),
    ],
)
def test_observed_job_failure(code: int, message: str | None, reason: str, text: str) -> None:
    pipeline = make_pipeline()
    job = child(pipeline, window(0, 24), RunPhase.FAILED)
    run = observe_run(job, [pod(job, exit_code=code, message=message)])
    assert run is not None and run.phase == RunPhase.FAILED
    assert (run.reason, run.message) == (reason, text)


def test_other_runs_pods_are_not_read() -> None:
    pipeline = make_pipeline()
    mine = child(pipeline, window(0, 24), RunPhase.SUCCEEDED)
    other = child(pipeline, window(24, 48), RunPhase.SUCCEEDED)
    run = observe_run(mine, [pod(other, message=summary_line(7))])
    assert run is not None and run.summary is None


def test_spark_reads_the_driver_not_executors() -> None:
    pipeline = make_pipeline(engine="spark")
    app = child(pipeline, window(0, 24), RunPhase.SUCCEEDED)
    pods = [pod(app, message=summary_line(1), role="executor"), pod(app, message=summary_line(99))]
    run = observe_run(app, pods)
    assert run is not None and run.summary is not None and run.summary.rows_out == 99


def test_spark_failure_message_from_the_application() -> None:
    pipeline = make_pipeline(engine="spark")
    app = child(pipeline, window(0, 24), RunPhase.FAILED)
    run = observe_run(app, [])
    assert run is not None and run.phase == RunPhase.FAILED
    assert run.reason == "SparkApplicationFailed"
    assert "ExitCode: 65" in run.message


def test_ray_reads_the_submitter() -> None:
    pipeline = make_pipeline(engine="ray")
    job = child(pipeline, window(0, 24), RunPhase.FAILED)
    run = observe_run(job, [pod(job, exit_code=0, message=error_line("null user_id in 3 rows"))])
    assert run is not None and run.phase == RunPhase.FAILED
    assert run.reason == "BadInput" and run.message.startswith("null user_id in 3 rows")


def test_objects_without_a_window_are_not_runs() -> None:
    job = child(make_pipeline(), window(0, 1))
    job["metadata"]["annotations"] = {}
    assert observe_run(job, []) is None
    assert observe_run({"kind": "Deployment", "metadata": {"name": "x"}}, []) is None
