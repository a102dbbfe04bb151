"""FeaturePipeline e2e: backfills, failures, retries, crashes, suspend, schedules with late data, Spark and
Ray children under their real CRDs, and streaming consumers, against the real control plane.

KWOK runs no containers: a run's pod runs until the test sets its exit code and termination message
(the kwok.loom.ml/exit-code and kwok.loom.ml/termination-message stages), which is what a kubelet
reports when the runtime writes its summary to /dev/termination-log. SparkApplication and RayJob
statuses are written the way the Spark Operator and KubeRay document them.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from e2e.support import (
    GROUP,
    VERSION,
    Operator,
    apply_yaml,
    events_of,
    get_cr,
    kubectl,
    patch_status,
    pods,
    set_pod_result,
    wait_for,
)

PLURAL = "featurepipelines"
LABEL = "loom.ml/featurepipeline"
RUN = "loom.ml/featurepipeline-run"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
CHILD_RESOURCE = {"local": "jobs", "spark": "sparkapplications.sparkoperator.k8s.io", "ray": "rayjobs.ray.io"}


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def pipeline(
    name: str,
    *,
    engine: str = "local",
    days: int | None = None,
    parallelism: int = 2,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": {
            "parquet": {"path": "/data/clicks/*.parquet"},
            "timestampField": "ts",
            "entityKeys": ["user_id"],
        },
        "transform": {
            "sql": "SELECT user_id, max(ts) AS ts, count(*) AS clicks FROM source GROUP BY user_id"
        },
        "sinks": {"online": {"redis": {"url": "redis://127.0.0.1:6379/0", "keyPrefix": "user:"}}},
        "engine": {"type": engine},
        "retries": 0,
    }
    if days is not None:
        body["backfill"] = {
            "start": rfc3339(T0),
            "end": rfc3339(T0 + timedelta(days=days)),
            "step": "1d",
            "parallelism": parallelism,
        }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FeaturePipeline",
        "metadata": {"name": name},
        "spec": body,
    }


def summary(rows: int, end: datetime, seconds: float = 0.5) -> str:
    return json.dumps(
        {
            "rows_in": rows * 3,
            "rows_out": rows,
            "online_written": rows,
            "offline_files": 1,
            "watermark": rfc3339(end),
            "newest_event": rfc3339(end - timedelta(minutes=1)),
            "seconds": seconds,
        }
    )


def status(namespace: str, name: str) -> dict[str, Any]:
    obj = get_cr(PLURAL, namespace, name) or {}
    found: dict[str, Any] = obj.get("status") or {}
    return found


def condition(namespace: str, name: str, type_: str) -> dict[str, Any]:
    return next((c for c in status(namespace, name).get("conditions", []) if c["type"] == type_), {})


def children(namespace: str, name: str, engine: str = "local") -> list[dict[str, Any]]:
    out = kubectl("get", CHILD_RESOURCE[engine], "-n", namespace, "-l", f"{LABEL}={name}", "-o", "json")
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return sorted(items, key=lambda c: c["metadata"]["annotations"]["loom.ml/window-start"])


def window_of(child: dict[str, Any]) -> tuple[str, str]:
    a = child["metadata"]["annotations"]
    return a["loom.ml/window-start"], a["loom.ml/window-end"]


def is_finished(job: dict[str, Any]) -> bool:
    return any(
        c["type"] in ("Complete", "Failed") and c["status"] == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def running_pod(namespace: str, run: str) -> str | None:
    for p in pods(namespace, f"{RUN}={run}"):
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"):
            name: str = p["metadata"]["name"]
            return name
    return None


def finish(namespace: str, run: str, code: int = 0, message: str | None = None) -> None:
    """Let the run's running pod exit with `code`, reporting `message` as the runtime would."""
    pod = wait_for(lambda: running_pod(namespace, run), 30, what=f"a running pod of {run}")
    set_pod_result(namespace, pod, code, message)


def wait_status(namespace: str, name: str, check: Any, timeout: float = 30, what: str = "") -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        st = status(namespace, name)
        return st if check(st) else None

    result: dict[str, Any] = wait_for(ready, timeout, what=what or f"status of {name}")
    return result


def reasons(namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events_of(namespace, name, "FeaturePipeline")]


# -- backfill ----------------------------------------------------------------------------------------
def test_backfill_runs_windows_two_at_a_time_and_reports_rows(operator: Operator, namespace: str) -> None:
    apply_yaml(pipeline("clicks", days=5, parallelism=2), namespace)
    expected_rows = 0
    most_active = 0
    for day in range(5):
        wait_for(lambda d=day: len(children(namespace, "clicks")) >= min(5, d + 2), 30, what="next windows")
        jobs = children(namespace, "clicks")
        active = [j for j in jobs if not is_finished(j)]
        most_active = max(most_active, len(active))
        assert len(active) <= 2, f"{len(active)} windows running at once: {[window_of(j) for j in active]}"
        oldest = active[0]
        assert window_of(oldest)[0] == rfc3339(T0 + timedelta(days=day)), "windows start in time order"
        rows = 10 * (day + 1)
        expected_rows += rows
        finish(namespace, oldest["metadata"]["name"], 0, summary(rows, T0 + timedelta(days=day + 1)))
        wait_status(namespace, "clicks", lambda st, r=expected_rows: st.get("rowsWritten") == r)
    assert most_active == 2
    st = wait_status(
        namespace, "clicks", lambda st: st.get("phase") == "Succeeded", what="backfill Succeeded"
    )
    assert st["watermark"] == rfc3339(T0 + timedelta(days=5))
    assert st["rowsWritten"] == 150
    assert st["backfill"] == {
        "windowsTotal": 5,
        "succeeded": 5,
        "failed": 0,
        "running": 0,
        "failedWindows": [],
    }
    assert st["newestEventTime"] == rfc3339(T0 + timedelta(days=5, minutes=-1))
    assert st["freshnessSeconds"] > 0 and st["activeRuns"] == []
    assert st["lastRun"]["result"] == "Succeeded" and st["lastRun"]["rows"] == 50
    assert st["lastRun"]["window"] == {"start": rfc3339(T0 + timedelta(days=4)), "end": st["watermark"]}
    assert st["observedGeneration"] == 1
    jobs = children(namespace, "clicks")
    assert [window_of(j)[0] for j in jobs] == [rfc3339(T0 + timedelta(days=d)) for d in range(5)]
    assert condition(namespace, "clicks", "BackfillComplete")["reason"] == "Succeeded"
    assert condition(namespace, "clicks", "Ready")["status"] == "True"
    seen = wait_for(lambda: (r := reasons(namespace, "clicks")).count("RunSucceeded") == 5 and r, 10)
    assert seen.count("RunStarted") == 5 and "BackfillComplete" in seen
    text = operator.metrics()
    labels = f'engine="local",name="clicks",namespace="{namespace}"'
    assert f"loom_feature_rows_written_total{{{labels}}} 150.0" in text
    assert f'loom_feature_freshness_seconds{{name="clicks",namespace="{namespace}"}}' in text
    assert re.search(r'loom_feature_run_duration_seconds_count\{engine="local",result="succeeded"\} \d', text)
    # What `kubectl get lfp` shows.
    row = kubectl("get", "lfp", "clicks", "-n", namespace).splitlines()[1].split()
    assert row[:2] == ["clicks", "Succeeded"] and row[4] == "150"


def test_failing_window_is_reported_by_window_with_its_message(operator: Operator, namespace: str) -> None:
    apply_yaml(pipeline("bad", days=2, retries=3), namespace)
    jobs = wait_for(lambda: len(c := children(namespace, "bad")) == 2 and c, 30, what="two windows")
    error = "column dwell_ms is not in source /data/clicks/*.parquet; its columns: user_id, ts"
    finish(namespace, jobs[0]["metadata"]["name"], 0, summary(4, T0 + timedelta(days=1)))
    finish(namespace, jobs[1]["metadata"]["name"], 65, json.dumps({"error": error, "exit_code": 65}))
    st = wait_status(namespace, "bad", lambda st: st.get("phase") == "Failed", what="pipeline Failed")
    assert st["backfill"]["failed"] == 1 and st["backfill"]["failedWindows"] == [
        rfc3339(T0 + timedelta(days=1))
    ]
    assert st["watermark"] == rfc3339(T0 + timedelta(days=1)), "the watermark stops before the bad window"
    ready = condition(namespace, "bad", "Ready")
    assert ready["status"] == "False" and ready["reason"] in ("RunFailed", "WindowsFailed")
    assert error in ready["message"] and rfc3339(T0 + timedelta(days=1)) in ready["message"]
    assert "BadInput" in ready["message"]
    failed_job = children(namespace, "bad")[1]
    assert len(pods(namespace, f"{RUN}={failed_job['metadata']['name']}")) == 1, "exit 65 is not retried"
    assert any(c["reason"] == "PodFailurePolicy" for c in failed_job["status"]["conditions"])
    warnings = [e for e in events_of(namespace, "bad", "FeaturePipeline") if e["reason"] == "RunFailed"]
    assert warnings and warnings[0]["type"] == "Warning" and error in warnings[0]["message"]
    assert len(children(namespace, "bad")) == 2, "a failed window is not started again"


def test_failed_attempts_are_retried_by_the_job(operator: Operator, namespace: str) -> None:
    apply_yaml(pipeline("retry", days=1, retries=1), namespace)
    job = wait_for(lambda: children(namespace, "retry"), 30, what="the window's Job")[0]
    run = job["metadata"]["name"]
    assert job["spec"]["backoffLimit"] == 1
    finish(namespace, run, 69, json.dumps({"error": "redis 127.0.0.1:6379 unreachable", "exit_code": 69}))
    finish(namespace, run, 0, summary(9, T0 + timedelta(days=1)))  # the Job's second pod
    st = wait_status(namespace, "retry", lambda st: st.get("phase") == "Succeeded", 60, what="retried run")
    assert st["rowsWritten"] == 9 and st["lastRun"]["result"] == "Succeeded"
    assert len(pods(namespace, f"{RUN}={run}")) == 2
    assert len(children(namespace, "retry")) == 1


def test_operator_killed_mid_backfill_neither_duplicates_nor_loses(
    operator: Operator, namespace: str
) -> None:
    apply_yaml(pipeline("crash", days=6, parallelism=2), namespace)
    jobs = wait_for(lambda: len(c := children(namespace, "crash")) == 2 and c, 30, what="first windows")
    finish(namespace, jobs[0]["metadata"]["name"], 0, summary(1, T0 + timedelta(days=1)))
    wait_for(lambda: len(children(namespace, "crash")) == 3, 30, what="third window")
    operator.kill()
    # While the operator is down two runs finish; nothing starts.
    for job in [j for j in children(namespace, "crash") if not is_finished(j)]:
        day = (datetime.fromisoformat(window_of(job)[0].replace("Z", "+00:00")) - T0).days
        finish(namespace, job["metadata"]["name"], 0, summary(day + 1, T0 + timedelta(days=day + 1)))
    wait_for(lambda: all(is_finished(j) for j in children(namespace, "crash")), 30, what="runs finished")
    assert len(children(namespace, "crash")) == 3
    operator.start()
    for day in range(3, 6):
        wait_for(lambda d=day: len(children(namespace, "crash")) > d, 30, what=f"window {day}")
        job = next(
            j for j in children(namespace, "crash") if window_of(j)[0] == rfc3339(T0 + timedelta(days=day))
        )
        finish(namespace, job["metadata"]["name"], 0, summary(day + 1, T0 + timedelta(days=day + 1)))
    st = wait_status(namespace, "crash", lambda st: st.get("phase") == "Succeeded", 60, what="converged")
    assert st["rowsWritten"] == sum(range(1, 7)), "each run counted once across the crash"
    jobs = children(namespace, "crash")
    assert len(jobs) == 6 and len({window_of(j) for j in jobs}) == 6
    assert st["watermark"] == rfc3339(T0 + timedelta(days=6))
    succeeded = [e for e in events_of(namespace, "crash", "FeaturePipeline") if e["reason"] == "RunSucceeded"]
    assert len(succeeded) == len({e["message"] for e in succeeded}) == 6


def test_suspend_stops_new_runs(operator: Operator, namespace: str) -> None:
    apply_yaml(pipeline("pause", days=3, parallelism=1), namespace)
    first = wait_for(lambda: children(namespace, "pause"), 30, what="first window")[0]
    kubectl("patch", "lfp", "pause", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_for(lambda: condition(namespace, "pause", "Running").get("reason") == "RunsActive", 10)
    finish(namespace, first["metadata"]["name"], 0, summary(2, T0 + timedelta(days=1)))
    st = wait_status(namespace, "pause", lambda st: st.get("phase") == "Suspended", what="Suspended")
    assert st["rowsWritten"] == 2, "the running run finished and was recorded"
    time.sleep(1.5)
    assert len(children(namespace, "pause")) == 1
    assert "Suspended" in reasons(namespace, "pause")
    kubectl("patch", "lfp", "pause", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_for(lambda: len(children(namespace, "pause")) == 2, 30, what="the next window after resume")


# -- schedule ------------------------------------------------------------------------------------------
def test_schedule_recomputes_allowed_lateness_from_the_watermark(operator: Operator, namespace: str) -> None:
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    spec = pipeline("hourly", schedule="* * * * *", allowedLateness="30m")
    spec["spec"]["backfill"] = {
        "start": rfc3339(hour - timedelta(hours=2)),
        "end": rfc3339(hour),
        "step": "2h",
    }
    apply_yaml(spec, namespace)
    backfill = wait_for(lambda: children(namespace, "hourly"), 30, what="backfill window")[0]
    time.sleep(1)
    assert len(children(namespace, "hourly")) == 1, "the schedule waits for the backfill"
    finish(namespace, backfill["metadata"]["name"], 0, summary(5, hour))

    def scheduled() -> list[dict[str, Any]]:
        return [
            c
            for c in children(namespace, "hourly")
            if c["metadata"]["labels"]["loom.ml/run-kind"] == "schedule"
        ]

    first = wait_for(scheduled, 30, what="first scheduled run")[0]
    start, end = window_of(first)
    assert start == rfc3339(hour - timedelta(minutes=30)), "watermark - allowedLateness"
    tick = datetime.fromisoformat(end.replace("Z", "+00:00"))
    assert tick.second == 0 and hour < tick <= datetime.now(UTC), "ends at the newest cron tick"
    finish(namespace, first["metadata"]["name"], 0, summary(7, tick))
    st = wait_status(namespace, "hourly", lambda st: st.get("watermark") == end, what="watermark at the tick")
    assert st["phase"] in ("Scheduled", "Running") and st["rowsWritten"] == 12  # Running: the next tick came
    # The next tick recomputes the last 30 minutes again, so that late events count.
    second = wait_for(lambda: len(s := scheduled()) == 2 and s[1], 75, interval=1, what="the next tick's run")
    assert window_of(second) == (rfc3339(tick - timedelta(minutes=30)), rfc3339(tick + timedelta(minutes=1)))


# -- engines -------------------------------------------------------------------------------------------
_RESTARTED: list[Operator] = []


@pytest.fixture
def engine_operator(operator: Operator, engine_crds: list[str]) -> Operator:
    """The session's operator, watching the engine kinds: one started before their CRDs existed (a fresh
    cluster) is restarted once, rather than waiting for Kopf to notice the new resources."""
    if "Unresolved resources cannot be served" in operator.logs() and not _RESTARTED:
        operator.stop()
        operator.start()
        _RESTARTED.append(operator)
    return operator


def test_spark_applications_under_the_real_crd(
    engine_operator: Operator, namespace: str, engine_crds: list[str]
) -> None:
    apply_yaml(pipeline("sparky", engine="spark", days=2, retries=2), namespace)
    apps = wait_for(lambda: len(c := children(namespace, "sparky", "spark")) == 2 and c, 60, what="two apps")
    good, bad = (a["metadata"]["name"] for a in apps)
    assert apps[0]["spec"]["restartPolicy"]["onFailureRetries"] == 2
    resource = CHILD_RESOURCE["spark"]
    patch_status(resource, namespace, good, {"applicationState": {"state": "SUBMITTED"}, "driverInfo": {}})
    time.sleep(1)
    assert set(status(namespace, "sparky")["activeRuns"]) == {good, bad}, "SUBMITTED is not terminal"
    # The driver pod, as the Spark Operator makes it: the application's driver labels, named <app>-driver.
    driver = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{good}-driver",
            "labels": {**apps[0]["spec"]["driver"]["labels"], "spark-role": "driver"},
        },
        "spec": {"containers": [{"name": "spark-kubernetes-driver", "image": apps[0]["spec"]["image"]}]},
    }
    apply_yaml(driver, namespace)
    patch_status(
        resource,
        namespace,
        good,
        {"applicationState": {"state": "RUNNING"}, "driverInfo": {"podName": f"{good}-driver"}},
    )
    finish(namespace, good, 0, summary(21, T0 + timedelta(days=1)))
    patch_status(resource, namespace, good, {"applicationState": {"state": "COMPLETED"}, "driverInfo": {}})
    patch_status(
        resource,
        namespace,
        bad,
        {
            "applicationState": {
                "state": "FAILED",
                "errorMessage": "driver container failed with ExitCode: 1",
            },
            "driverInfo": {},
        },
    )
    st = wait_status(namespace, "sparky", lambda st: st.get("phase") == "Failed", what="spark results mapped")
    assert st["rowsWritten"] == 21 and st["watermark"] == rfc3339(T0 + timedelta(days=1))
    assert st["backfill"]["succeeded"] == 1 and st["backfill"]["failed"] == 1
    assert "driver container failed with ExitCode: 1" in condition(namespace, "sparky", "Ready")["message"]
    assert condition(namespace, "sparky", "EngineAvailable")["status"] == "True"


def test_rayjobs_under_the_real_crd(
    engine_operator: Operator, namespace: str, engine_crds: list[str]
) -> None:
    apply_yaml(pipeline("rays", engine="ray", days=2, retries=1), namespace)
    jobs = wait_for(lambda: len(c := children(namespace, "rays", "ray")) == 2 and c, 60, what="two RayJobs")
    good, bad = (j["metadata"]["name"] for j in jobs)
    assert jobs[0]["spec"]["backoffLimit"] == 1 and jobs[0]["spec"]["shutdownAfterJobFinishes"] is True
    resource = CHILD_RESOURCE["ray"]
    patch_status(resource, namespace, good, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"})
    time.sleep(1)
    assert good in status(namespace, "rays")["activeRuns"]
    # The submitter pod, as KubeRay's submitter Job makes it from submitterPodTemplate.
    template = jobs[0]["spec"]["submitterPodTemplate"]
    submitter = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{good}-submitter", "labels": template["metadata"]["labels"]},
        "spec": {"containers": [{"name": "submitter", "image": template["spec"]["containers"][0]["image"]}]},
    }
    apply_yaml(submitter, namespace)
    finish(namespace, good, 0, summary(33, T0 + timedelta(days=1)))
    patch_status(resource, namespace, good, {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"})
    patch_status(
        resource,
        namespace,
        bad,
        {
            "jobDeploymentStatus": "Complete",
            "jobStatus": "FAILED",
            "message": "Job entrypoint command failed with exit code 65",
        },
    )
    st = wait_status(namespace, "rays", lambda st: st.get("phase") == "Failed", what="ray results mapped")
    assert st["rowsWritten"] == 33 and st["backfill"]["failed"] == 1
    assert "exit code 65" in condition(namespace, "rays", "Ready")["message"]


# -- streaming -----------------------------------------------------------------------------------------
def test_streaming_runs_a_deployment_of_consumers(operator: Operator, namespace: str) -> None:
    spec = pipeline("sessions", mode="streaming", streaming={"consumers": 3, "batchSize": 500})
    spec["spec"]["source"] = {
        "redisStream": {"url": "redis://127.0.0.1:6379/0", "stream": "sessions"},
        "timestampField": "ts",
        "entityKeys": ["session_id"],
    }
    apply_yaml(spec, namespace)
    st = wait_status(namespace, "sessions", lambda st: st.get("consumers") == 3, 30, what="3 consumers")
    assert st["phase"] == "Streaming"
    deployment = json.loads(kubectl("get", "deployment", "sessions-stream", "-n", namespace, "-o", "json"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["features", "stream"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert json.loads(env["LOOM_PIPELINE"]["value"])["spec"]["streaming"]["batchSize"] == 500
    assert condition(namespace, "sessions", "Ready")["reason"] == "ConsumersReady"
    kubectl(
        "patch",
        "lfp",
        "sessions",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"streaming":{"consumers":1}}}',
    )
    wait_status(namespace, "sessions", lambda st: st.get("consumers") == 1, 30, what="scaled to 1")
    kubectl("patch", "lfp", "sessions", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    st = wait_status(namespace, "sessions", lambda st: st.get("phase") == "Suspended", 30, what="suspended")
    assert (
        json.loads(kubectl("get", "deployment", "sessions-stream", "-n", namespace, "-o", "json"))["spec"][
            "replicas"
        ]
        == 0
    )


@pytest.mark.parametrize("engine", ["spark", "ray"])
def test_engine_children_pass_their_crd_validation(
    operator: Operator, namespace: str, engine_crds: list[str], engine: str
) -> None:
    """Loom's child as the real CRD's schema sees it, with unknown fields refused (strict)."""
    apply_yaml(pipeline(f"strict-{engine}", engine=engine, days=1), namespace)
    child = wait_for(lambda: children(namespace, f"strict-{engine}", engine), 60, what="the child")[0]
    child.pop("status", None)
    child["metadata"] = {"name": "strict-copy"}
    result = kubectl(
        "create",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(child),
        check=False,
    )
    assert "created (server dry run)" in result, result
    assert get_cr(PLURAL, namespace, f"strict-{engine}") is not None
