"""The children a FeaturePipeline makes: names, labels, env, and each engine's retry and result plumbing."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from test_featurepipeline_factories import IMAGES, make_pipeline, window

from loom.api.featurepipeline import LABEL_PIPELINE, FeaturePipeline
from loom.builders.featurepipeline import (
    ANNOTATION_END,
    ANNOTATION_START,
    LABEL_RUN,
    LABEL_RUN_KIND,
    Images,
    RunKind,
    desired_run,
    desired_stream,
    pipeline_json,
    run_name,
    stream_name,
)

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


@pytest.mark.parametrize(
    ("name", "engine", "limit"),
    [
        pytest.param("clicks", "local", 63, id="short"),
        pytest.param("a" * 60, "local", 63, id="long-local"),
        pytest.param("a" * 60, "spark", 63, id="long-spark"),
        pytest.param("a" * 60, "ray", 47, id="long-ray-kuberay-limit"),
        pytest.param("team.clicks", "spark", 63, id="dots"),
        pytest.param("7day-clicks", "ray", 47, id="leading-digit"),
    ],
)
def test_run_names_are_deterministic_dns_labels(name: str, engine: str, limit: int) -> None:
    pipeline = make_pipeline(name, engine=engine)
    first = run_name(pipeline, window(0, 24))
    assert first == run_name(pipeline, window(0, 24))
    assert first != run_name(pipeline, window(0, 25)), "same start, other end: another run"
    assert len(first) <= limit and DNS_1035.match(first), first
    assert "-202611010000-" in first


def test_run_name_format() -> None:
    assert re.fullmatch(r"clicks-202611010000-[0-9a-f]{5}", run_name(make_pipeline(), window(0, 24)))


def test_stream_name() -> None:
    assert stream_name(make_pipeline("sessions", mode="streaming")) == "sessions-stream"
    assert len(stream_name(make_pipeline("s" * 70, mode="streaming"))) <= 63


def test_every_child_carries_labels_window_and_owner() -> None:
    for engine in ("local", "spark", "ray"):
        pipeline = make_pipeline(engine=engine)
        child = desired_run(pipeline, RunKind.SCHEDULE, window(0, 1), IMAGES)
        meta = child["metadata"]
        assert meta["labels"][LABEL_PIPELINE] == "clicks"
        assert meta["labels"][LABEL_RUN] == meta["name"]
        assert meta["labels"][LABEL_RUN_KIND] == "schedule"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "loom-operator"
        assert meta["annotations"] == {
            ANNOTATION_START: "2026-11-01T00:00:00Z",
            ANNOTATION_END: "2026-11-01T01:00:00Z",
        }
        owner = meta["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "FeaturePipeline",
            "clicks",
            "uid-1",
            True,
        )


def test_pipeline_json_is_what_the_runtime_loads() -> None:
    pipeline = make_pipeline(backfill={"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"})
    data = json.loads(pipeline_json(pipeline))
    assert data["metadata"] == {"name": "clicks", "namespace": "ns"}
    assert "status" not in data
    again = FeaturePipeline.model_validate(data)
    assert again.spec == pipeline.spec


def test_the_runtime_loads_the_pipeline_the_job_passes() -> None:
    from loom.features.config import parse_pipeline

    pipeline = make_pipeline(schedule="0 * * * *", allowedLateness="30m")
    job = desired_run(pipeline, RunKind.SCHEDULE, window(0, 1), IMAGES)
    env = env_of(job["spec"]["template"]["spec"]["containers"][0])
    loaded = parse_pipeline(env["LOOM_PIPELINE"], "env LOOM_PIPELINE")
    assert loaded.spec == pipeline.spec and loaded.metadata["name"] == "clicks"


def test_local_job_retries_natively_but_not_bad_input() -> None:
    pipeline = make_pipeline(retries=4, engine={"type": "local", "serviceAccountName": "features"})
    job = desired_run(pipeline, RunKind.BACKFILL, window(0, 24), IMAGES)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["spec"]["backoffLimit"] == 4
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "features", "operator": "In", "values": [65]},
    }
    pod = job["spec"]["template"]
    assert pod["spec"]["restartPolicy"] == "Never", "podFailurePolicy needs restartPolicy Never"
    assert pod["spec"]["serviceAccountName"] == "features"
    assert pod["metadata"]["labels"][LABEL_RUN] == job["metadata"]["name"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == "loom-features:test"
    assert container["command"] == ["loom"]
    assert container["args"] == [
        "features",
        "run",
        "--start",
        "2026-11-01T00:00:00Z",
        "--end",
        "2026-11-02T00:00:00Z",
    ]
    env = env_of(container)
    assert env["LOOM_TERMINATION_LOG"] == "/dev/termination-log"
    assert json.loads(env["LOOM_PIPELINE"])["metadata"]["name"] == "clicks"
    assert container["terminationMessagePolicy"] == "File"


def test_engine_resources_and_image_override() -> None:
    resources = {"requests": {"cpu": "2", "memory": "4Gi"}}
    pipeline = make_pipeline(engine={"type": "local", "image": "mine:1", "resources": resources})
    job = desired_run(pipeline, RunKind.BACKFILL, window(0, 1), IMAGES)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "mine:1" and container["resources"] == resources


@pytest.mark.parametrize(
    ("retries", "policy"),
    [
        pytest.param(0, {"type": "Never"}, id="no-retries"),
        pytest.param(
            3,
            {
                "type": "OnFailure",
                "onFailureRetries": 3,
                "onFailureRetryInterval": 10,
                "onSubmissionFailureRetries": 3,
                "onSubmissionFailureRetryInterval": 20,
            },
            id="on-failure",
        ),
    ],
)
def test_spark_application(retries: int, policy: dict[str, Any]) -> None:
    resources = {"requests": {"cpu": "2", "memory": "3Gi"}}
    pipeline = make_pipeline(
        engine={"type": "spark", "executors": 5, "serviceAccountName": "spark", "resources": resources},
        retries=retries,
    )
    app = desired_run(pipeline, RunKind.BACKFILL, window(0, 24), Images(base="img:1", spark_version="3.5.5"))
    spec = app["spec"]
    assert (app["apiVersion"], app["kind"]) == ("sparkoperator.k8s.io/v1beta2", "SparkApplication")
    assert (spec["type"], spec["mode"], spec["sparkVersion"]) == ("Python", "cluster", "3.5.5")
    assert spec["image"] == "img:1-spark"
    assert spec["mainApplicationFile"] == "local:///opt/loom/spark_main.py"
    assert spec["arguments"][:4] == ["features", "run", "--engine", "spark"]
    assert spec["restartPolicy"] == policy
    assert spec["executor"]["instances"] == 5
    assert (spec["driver"]["cores"], spec["driver"]["memory"]) == (2, "3g")
    assert spec["driver"]["serviceAccount"] == "spark"
    assert spec["driver"]["labels"]["loom.ml/role"] == "driver"
    assert env_of(spec["driver"])["LOOM_TERMINATION_LOG"] == "/dev/termination-log"
    assert "LOOM_PIPELINE" in env_of(spec["executor"])


def test_rayjob() -> None:
    pipeline = make_pipeline(engine={"type": "ray", "executors": 3}, retries=2)
    job = desired_run(pipeline, RunKind.BACKFILL, window(0, 24), IMAGES)
    spec = job["spec"]
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert spec["backoffLimit"] == 2
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["entrypoint"].startswith("loom features run --engine ray --start 2026-11-01T00:00:00Z")
    runtime_env = json.loads(spec["runtimeEnvYAML"])
    assert json.loads(runtime_env["env_vars"]["LOOM_PIPELINE"])["metadata"]["name"] == "clicks"
    workers = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 3
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "loom-features:test-ray"
    submitter = spec["submitterPodTemplate"]
    assert submitter["metadata"]["labels"]["loom.ml/role"] == "submitter"
    script = submitter["spec"]["containers"][0]["command"][-1]
    assert spec["entrypoint"] in script and "/dev/termination-log" in script
    assert "--submission-id" in script, "a retried submitter must not submit the job twice"


def test_stream_deployment() -> None:
    pipeline = make_pipeline("sessions", mode="streaming", streaming={"consumers": 4})
    deployment = desired_stream(pipeline, IMAGES)
    assert deployment["metadata"]["name"] == "sessions-stream"
    assert deployment["spec"]["replicas"] == 4
    template = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    container = template["spec"]["containers"][0]
    assert container["args"] == ["features", "stream"]
    assert env_of(container)["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    suspended = desired_stream(make_pipeline("sessions", mode="streaming", suspend=True), IMAGES)
    assert suspended["spec"]["replicas"] == 0
    assert (
        suspended["metadata"]["annotations"]["loom.ml/spec-hash"]
        != deployment["metadata"]["annotations"]["loom.ml/spec-hash"]
    )
