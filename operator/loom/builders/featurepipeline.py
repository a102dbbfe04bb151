"""FeaturePipeline -> its children: one run per window (a batch/v1 Job, a SparkApplication or a RayJob,
by engine), or a Deployment of stream consumers.

Pure: no I/O. A run's name says its window: `<pipeline>-<start:%Y%m%d%H%M>-<sha1(start, end)[:5]>`,
so a restarted operator finds the run it made instead of making a second one. Every child carries
the label `loom.ml/featurepipeline`, the window in annotations, an owner reference, and passes the
pipeline to the runtime as env LOOM_PIPELINE (JSON: metadata name/namespace + spec); a run writes its
one-line JSON summary to LOOM_TERMINATION_LOG=/dev/termination-log, which the kubelet turns into the
terminated container's message, so the controller reads results without reading logs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from loom.api.common import API_VERSION
from loom.api.featurepipeline import LABEL_PIPELINE, EngineType, FeaturePipeline
from loom.builders.common import owner_reference, recommended_labels

DEFAULT_IMAGE = "ghcr.io/loom-ml/loom-features:0.1.0"
DEFAULT_SPARK_VERSION = "4.0.1"
SPARK_MAIN = "local:///opt/loom/spark_main.py"
TERMINATION_LOG = "/dev/termination-log"
EXIT_BAD_INPUT = 65  # EX_DATAERR: the data is wrong; retrying cannot help
LABEL_RUN = "loom.ml/featurepipeline-run"
LABEL_RUN_KIND = "loom.ml/run-kind"
LABEL_ROLE = "loom.ml/role"
ANNOTATION_START = "loom.ml/window-start"
ANNOTATION_END = "loom.ml/window-end"
ANNOTATION_SPEC_HASH = "loom.ml/spec-hash"
CONTAINER = "features"
CHILD_API_VERSIONS = {
    "Job": "batch/v1",
    "SparkApplication": "sparkoperator.k8s.io/v1beta2",
    "RayJob": "ray.io/v1",
}
# KubeRay refuses RayJob names over 47 characters (its RayCluster gets a 6-character suffix).
_NAME_PREFIX = {EngineType.LOCAL: 44, EngineType.SPARK: 44, EngineType.RAY: 28}
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


class RunKind(StrEnum):
    BACKFILL = "backfill"
    SCHEDULE = "schedule"


@dataclass(frozen=True, order=True)
class Window:
    """Event time [start, end) of one run."""

    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"{rfc3339(self.start)}/{rfc3339(self.end)}"


@dataclass(frozen=True)
class Images:
    """Images of pipeline pods when engine.image is unset: the operator's LOOM_FEATURES_IMAGE, with the
    tag suffix -spark / -ray for those engines' variants (Dockerfile.features)."""

    base: str = DEFAULT_IMAGE
    spark_version: str = DEFAULT_SPARK_VERSION

    def image(self, pipeline: FeaturePipeline) -> str:
        engine = pipeline.spec.engine
        if engine.image:
            return engine.image
        return self.base if engine.type == EngineType.LOCAL else f"{self.base}-{engine.type}"


def rfc3339(moment: datetime) -> str:
    text = moment.isoformat().replace("+00:00", "Z")
    return text if text.endswith("Z") else text + "Z"


def _dns_prefix(name: str, length: int) -> str:
    """A DNS-1035 label prefix of a pipeline name (Spark and KubeRay refuse anything else)."""
    text = _NOT_DNS.sub("-", name.lower())
    if not text[:1].isalpha():
        text = "fp-" + text
    return text[:length].rstrip("-")


def run_name(pipeline: FeaturePipeline, window: Window) -> str:
    digest = hashlib.sha1(f"{rfc3339(window.start)}/{rfc3339(window.end)}".encode()).hexdigest()[:5]
    prefix = _dns_prefix(str(pipeline.metadata["name"]), _NAME_PREFIX[EngineType(pipeline.spec.engine.type)])
    return f"{prefix}-{window.start:%Y%m%d%H%M}-{digest}"


def stream_name(pipeline: FeaturePipeline) -> str:
    return f"{_dns_prefix(str(pipeline.metadata['name']), 56)}-stream"


def labels(pipeline: FeaturePipeline, component: str) -> dict[str, str]:
    return recommended_labels(pipeline, component) | {LABEL_PIPELINE: str(pipeline.metadata["name"])}


def pipeline_json(pipeline: FeaturePipeline) -> str:
    """What LOOM_PIPELINE carries: the pipeline as the runtime loads it (no status)."""
    meta = {k: pipeline.metadata[k] for k in ("name", "namespace") if k in pipeline.metadata}
    body = {
        "apiVersion": API_VERSION,
        "kind": "FeaturePipeline",
        "metadata": meta,
        "spec": pipeline.spec.model_dump(mode="json", exclude_none=True),
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def _env(pipeline: FeaturePipeline, *, termination_log: bool = True) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"name": "LOOM_PIPELINE", "value": pipeline_json(pipeline)}]
    if termination_log:
        out.append({"name": "LOOM_TERMINATION_LOG", "value": TERMINATION_LOG})
    return out


def run_args(pipeline: FeaturePipeline, window: Window) -> list[str]:
    engine = EngineType(pipeline.spec.engine.type)
    args = ["features", "run", "--start", rfc3339(window.start), "--end", rfc3339(window.end)]
    return args if engine == EngineType.LOCAL else [*args[:2], "--engine", str(engine), *args[2:]]


def _metadata(
    pipeline: FeaturePipeline, name: str, kind: RunKind, window: Window, component: str
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": pipeline.metadata.get("namespace"),
        "labels": labels(pipeline, component) | {LABEL_RUN: name, LABEL_RUN_KIND: str(kind)},
        "annotations": {ANNOTATION_START: rfc3339(window.start), ANNOTATION_END: rfc3339(window.end)},
    }


def _pod_metadata(meta: dict[str, Any], role: str) -> dict[str, Any]:
    return {"labels": meta["labels"] | {LABEL_ROLE: role}, "annotations": dict(meta["annotations"])}


def desired_run(pipeline: FeaturePipeline, kind: RunKind, window: Window, images: Images) -> dict[str, Any]:
    """The child that computes `window` on the pipeline's engine."""
    build = {EngineType.LOCAL: desired_job, EngineType.SPARK: desired_spark, EngineType.RAY: desired_rayjob}
    return build[EngineType(pipeline.spec.engine.type)](pipeline, kind, window, images)


def desired_job(pipeline: FeaturePipeline, kind: RunKind, window: Window, images: Images) -> dict[str, Any]:
    """engine local: a Job of one pod; the Job's own retries (backoffLimit = spec.retries), except that
    bad input (exit 65) fails it at once: a re-run would read the same data."""
    name = run_name(pipeline, window)
    meta = _metadata(pipeline, name, kind, window, "run")
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": images.image(pipeline),
        "command": ["loom"],
        "args": run_args(pipeline, window),
        "env": _env(pipeline),
        "terminationMessagePolicy": "File",
    }
    if pipeline.spec.engine.resources:
        container["resources"] = pipeline.spec.engine.resources
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if pipeline.spec.engine.serviceAccountName:
        pod_spec["serviceAccountName"] = pipeline.spec.engine.serviceAccountName
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta | {"ownerReferences": [owner_reference(pipeline)]},
        "spec": {
            "backoffLimit": pipeline.spec.retries,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": [EXIT_BAD_INPUT],
                        },
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {"metadata": _pod_metadata(meta, "run"), "spec": pod_spec},
        },
    }


def _spark_resources(resources: dict[str, Any] | None) -> dict[str, Any]:
    """engine.resources (Kubernetes quantities) as Spark's cores / memory, where they translate."""
    requests = {**((resources or {}).get("limits") or {}), **((resources or {}).get("requests") or {})}
    out: dict[str, Any] = {}
    cpu = str(requests.get("cpu", ""))
    if cpu.isdigit() and int(cpu) > 0:
        out["cores"] = int(cpu)
    memory = re.fullmatch(r"([0-9]+)(Gi|Mi)", str(requests.get("memory", "")))
    if memory:
        out["memory"] = memory.group(1) + memory.group(2)[0].lower()
    return out


def desired_spark(pipeline: FeaturePipeline, kind: RunKind, window: Window, images: Images) -> dict[str, Any]:
    """engine spark: a SparkApplication for the Kubeflow Spark Operator running the runtime under PySpark.
    Its labels reach the driver pod, whose termination message carries the run's summary."""
    name = run_name(pipeline, window)
    meta = _metadata(pipeline, name, kind, window, "run")
    engine = pipeline.spec.engine
    retries = pipeline.spec.retries
    role_spec = {"env": _env(pipeline), **_spark_resources(engine.resources)}
    driver: dict[str, Any] = {
        **_pod_metadata(meta, "driver"),
        "cores": 1,
        "memory": "1g",
        **role_spec,
    }
    if engine.serviceAccountName:
        driver["serviceAccount"] = engine.serviceAccountName
    restart: dict[str, Any] = {"type": "Never"}
    if retries:
        restart = {
            "type": "OnFailure",
            "onFailureRetries": retries,
            "onFailureRetryInterval": 10,
            "onSubmissionFailureRetries": retries,
            "onSubmissionFailureRetryInterval": 20,
        }
    return {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": meta | {"ownerReferences": [owner_reference(pipeline)]},
        "spec": {
            "type": "Python",
            "mode": "cluster",
            "sparkVersion": images.spark_version,
            "image": images.image(pipeline),
            "mainApplicationFile": SPARK_MAIN,
            "arguments": run_args(pipeline, window),
            "restartPolicy": restart,
            "driver": driver,
            "executor": {
                **_pod_metadata(meta, "executor"),
                "instances": engine.executors,
                "cores": 1,
                "memory": "2g",
                **role_spec,
            },
        },
    }


# The submitter: KubeRay's own sequence (submit once by submission id, then follow the logs), plus
# the runtime's last JSON line kept as the pod's termination message, where the controller reads it.
_SUBMIT = """addr="http://${RAY_DASHBOARD_ADDRESS}"
if ! ray job status --address "$addr" "$RAY_JOB_SUBMISSION_ID" >/dev/null 2>&1; then
  ray job submit --address "$addr" --submission-id "$RAY_JOB_SUBMISSION_ID" \\
    --runtime-env-json "$LOOM_RAY_RUNTIME_ENV" --no-wait -- ENTRYPOINT
fi
set +e
ray job logs --address "$addr" --follow "$RAY_JOB_SUBMISSION_ID" | tee /tmp/loom-run.log
code=${PIPESTATUS[0]}
grep '^{' /tmp/loom-run.log | tail -n 1 > /dev/termination-log
exit "$code"
"""


def desired_rayjob(
    pipeline: FeaturePipeline, kind: RunKind, window: Window, images: Images
) -> dict[str, Any]:
    """engine ray: a RayJob for KubeRay running the runtime under Ray Data on a cluster of its own,
    shut down when the job ends. Retries are the RayJob's (backoffLimit: a new cluster each)."""
    name = run_name(pipeline, window)
    meta = _metadata(pipeline, name, kind, window, "run")
    engine = pipeline.spec.engine
    image = images.image(pipeline)
    entrypoint = shlex.join(["loom", *run_args(pipeline, window)])
    runtime_env = json.dumps({"env_vars": {"LOOM_PIPELINE": pipeline_json(pipeline)}}, sort_keys=True)

    def pod(role: str, container: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"containers": [{"name": container, "image": image}]}
        if engine.resources:
            spec["containers"][0]["resources"] = engine.resources
        if engine.serviceAccountName:
            spec["serviceAccountName"] = engine.serviceAccountName
        return {"metadata": _pod_metadata(meta, role), "spec": spec}

    submitter: dict[str, Any] = {
        "name": "submitter",
        "image": image,
        "command": ["bash", "-ec", _SUBMIT.replace("ENTRYPOINT", entrypoint)],
        "env": [{"name": "LOOM_RAY_RUNTIME_ENV", "value": runtime_env}],
        "terminationMessagePolicy": "File",
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": meta | {"ownerReferences": [owner_reference(pipeline)]},
        "spec": {
            "entrypoint": entrypoint,
            "runtimeEnvYAML": runtime_env,
            "shutdownAfterJobFinishes": True,
            "backoffLimit": pipeline.spec.retries,
            "submissionMode": "K8sJobMode",
            "submitterPodTemplate": {
                "metadata": _pod_metadata(meta, "submitter"),
                "spec": {"restartPolicy": "Never", "containers": [submitter]},
            },
            "rayClusterSpec": {
                "headGroupSpec": {"rayStartParams": {}, "template": pod("head", "ray-head")},
                "workerGroupSpecs": [
                    {
                        "groupName": "workers",
                        "replicas": engine.executors,
                        "minReplicas": engine.executors,
                        "maxReplicas": engine.executors,
                        "rayStartParams": {},
                        "template": pod("worker", "ray-worker"),
                    }
                ],
            },
        },
    }


def desired_stream(pipeline: FeaturePipeline, images: Images) -> dict[str, Any]:
    """mode streaming: `streaming.consumers` pods of `loom features stream` in one consumer group, each
    named by its pod (POD_NAME), so a replacement pod takes over the entries of the one it replaces."""
    name = stream_name(pipeline)
    selector = {LABEL_PIPELINE: str(pipeline.metadata["name"]), LABEL_ROLE: "stream"}
    env = [
        *_env(pipeline),
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": images.image(pipeline),
        "command": ["loom"],
        "args": ["features", "stream"],
        "env": env,
        "terminationMessagePolicy": "File",
    }
    if pipeline.spec.engine.resources:
        container["resources"] = pipeline.spec.engine.resources
    pod_spec: dict[str, Any] = {"containers": [container]}
    if pipeline.spec.engine.serviceAccountName:
        pod_spec["serviceAccountName"] = pipeline.spec.engine.serviceAccountName
    replicas = 0 if pipeline.spec.suspend else pipeline.spec.streaming.consumers
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": pipeline.metadata.get("namespace"),
            "labels": labels(pipeline, "stream"),
            "ownerReferences": [owner_reference(pipeline)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels(pipeline, "stream") | selector}, "spec": pod_spec},
        },
    }
    digest = hashlib.sha256(json.dumps(body["spec"], sort_keys=True).encode()).hexdigest()[:16]
    body["metadata"]["annotations"] = {ANNOTATION_SPEC_HASH: digest}
    return body
