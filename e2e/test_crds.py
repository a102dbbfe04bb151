"""Smoke e2e: the CRDs install, the API server rejects malformed specs with a message naming the
field, the shipped examples are accepted, and `kubectl get` shows the printer columns."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.support import ROOT, kubectl, kubectl_result

EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))


@pytest.fixture
def namespace(kubeconfig: str) -> Iterator[str]:
    """Overrides the suite's: a namespace outside the pattern this session's operator watches, so
    that the examples applied here are validated and listed, never run (their gangs alone ask for
    every GPU of the cluster's shared nodes, and the grace periods of their pods hold them on)."""
    name = f"e2e-schema-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def example(kind: str) -> dict[str, Any]:
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == kind:
                return copy.deepcopy(doc)
    raise LookupError(f"no example of {kind} in manifests/examples")


def mutate(kind: str, change: Any) -> dict[str, Any]:
    doc = example(kind)
    change(doc["spec"])
    return doc


def _set(path: str, value: Any) -> Any:
    def change(spec: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return change


def _delete(key: str) -> Any:
    return lambda spec: spec.pop(key)


INVALID = [
    # TrainingJob
    pytest.param("TrainingJob", _set("replicaSpecs", {}), "spec.replicaSpecs", id="tj-no-roles"),
    pytest.param(
        "TrainingJob",
        _set("replicaSpecs.master.replicas", 2),
        "master.replicas must be 1",
        id="tj-two-masters",
    ),
    pytest.param(
        "TrainingJob",
        _set("replicaSpecs.worker.restartPolicy", "Sometimes"),
        "spec.replicaSpecs.worker.restartPolicy",
        id="tj-bad-restart-policy",
    ),
    pytest.param(
        "TrainingJob",
        _set("replicaSpecs.worker.template", {"spec": {"containers": []}}),
        "spec.replicaSpecs.worker.template.spec.containers in body should have at least 1 items",
        id="tj-no-containers",
    ),
    pytest.param(
        "TrainingJob",
        _set("runPolicy.backoffLimit", -1),
        "spec.runPolicy.backoffLimit",
        id="tj-negative-backoff",
    ),
    pytest.param(
        "TrainingJob",
        _set("runPolicy.cleanPodPolicy", "Some"),
        "spec.runPolicy.cleanPodPolicy",
        id="tj-bad-clean-pod-policy",
    ),
    pytest.param(
        "TrainingJob",
        lambda s: s["replicaSpecs"].update(Bad_Role=s["replicaSpecs"]["worker"]),
        "replicaSpecs keys must be lowercase DNS labels",
        id="tj-bad-role-name",
    ),
    pytest.param(
        "TrainingJob",
        lambda s: (s["replicaSpecs"].pop("master"), s.update(elastic={"minReplicas": 4, "maxReplicas": 2})),
        "elastic.minReplicas must be <= elastic.maxReplicas",
        id="tj-elastic-min-above-max",
    ),
    pytest.param(
        "TrainingJob", _set("replicaSpec", {}), 'unknown field "spec.replicaSpec"', id="tj-typo-field"
    ),
    # InferenceService
    pytest.param("InferenceService", _delete("model"), "spec.model: Required value", id="isvc-no-model"),
    pytest.param(
        "InferenceService",
        lambda s: s.update(minReplicas=5, maxReplicas=2),
        "minReplicas must be <= maxReplicas",
        id="isvc-min-above-max",
    ),
    pytest.param(
        "InferenceService",
        _set("model.uri", "bucket/model.safetensors"),
        "model.uri must be an absolute path or a URI: http(s)://HOST/PATH, s3://BUCKET[/KEY]",
        id="isvc-relative-uri",
    ),
    pytest.param("InferenceService", _set("model.format", "onnx"), "spec.model.format", id="isvc-bad-format"),
    pytest.param(
        "InferenceService", _set("scaling.metric", "gpu"), "spec.scaling.metric", id="isvc-bad-metric"
    ),
    pytest.param(
        "InferenceService",
        _set("canary.trafficPercent", 150),
        "spec.canary.trafficPercent",
        id="isvc-canary-over-100",
    ),
    pytest.param(
        "InferenceService",
        lambda s: s["scaling"].update(panicWindowSeconds=120, stableWindowSeconds=60),
        "panicWindowSeconds must be <= scaling.stableWindowSeconds",
        id="isvc-panic-above-stable",
    ),
    pytest.param(
        "InferenceService", _set("model.sizeLimit", "lots"), "spec.model.sizeLimit", id="isvc-bad-size-limit"
    ),
    # FeaturePipeline
    pytest.param(
        "FeaturePipeline",
        _set("source.redisStream", {"url": "redis://r:6379", "stream": "s"}),
        "source must set exactly one of: parquet, redisStream",
        id="fp-two-sources",
    ),
    pytest.param(
        "FeaturePipeline",
        _set("transform.python", "mod:fn"),
        "transform must set exactly one of: sql, python",
        id="fp-two-transforms",
    ),
    pytest.param(
        "FeaturePipeline",
        _set("mode", "streaming"),
        "set either schedule (batch) or mode: streaming",
        id="fp-schedule-and-streaming",
    ),
    pytest.param("FeaturePipeline", _set("sinks", {}), "sinks needs offline or online", id="fp-no-sink"),
    pytest.param(
        "FeaturePipeline", _set("source.entityKeys", []), "spec.source.entityKeys", id="fp-no-entity-keys"
    ),
    pytest.param(
        "FeaturePipeline",
        _set("backfill.end", "2026-10-01T00:00:00Z"),
        "backfill.start must be before backfill.end",
        id="fp-backfill-reversed",
    ),
    pytest.param(
        "FeaturePipeline",
        lambda s: s["transform"].update(sql=None, python="not a function"),
        "spec.transform.python",
        id="fp-bad-python-ref",
    ),
    pytest.param("FeaturePipeline", _set("engine.type", "flink"), "spec.engine.type", id="fp-bad-engine"),
    pytest.param("FeaturePipeline", _set("schedule", "every hour"), "spec.schedule", id="fp-bad-cron"),
    pytest.param(
        "FeaturePipeline",
        lambda s: _streaming(s, engine="spark"),
        "spark and ray run batch windows only",
        id="fp-streaming-on-spark",
    ),
    pytest.param(
        "FeaturePipeline",
        lambda s: s["source"].update(parquet=None, redisStream={"url": "redis://r:6379", "stream": "s"}),
        "a batch pipeline reads source.parquet",
        id="fp-redis-stream-in-batch",
    ),
    pytest.param(
        "FeaturePipeline",
        lambda s: (s.pop("schedule"), s.pop("backfill")),
        "a batch pipeline needs a schedule, a backfill, or both",
        id="fp-batch-without-schedule-or-backfill",
    ),
    pytest.param(
        "FeaturePipeline", _set("allowedLateness", "1 hour"), "spec.allowedLateness", id="fp-bad-lateness"
    ),
    pytest.param("FeaturePipeline", _set("backfill.step", "1w"), "spec.backfill.step", id="fp-bad-step"),
    pytest.param(
        "FeaturePipeline",
        lambda s: _streaming(s, maxLatency="1d"),
        "spec.streaming.maxLatency",
        id="fp-bad-max-latency",
    ),
    pytest.param(
        "FeaturePipeline",
        _set("backfill.parallelism", 0),
        "spec.backfill.parallelism",
        id="fp-no-parallelism",
    ),
    pytest.param("FeaturePipeline", _set("retries", -1), "spec.retries", id="fp-negative-retries"),
]


def _streaming(spec: dict[str, Any], *, engine: str = "local", **streaming: Any) -> None:
    """The example turned into a streaming pipeline (then broken by the caller's arguments)."""
    spec.pop("schedule")
    spec.pop("backfill")
    spec.update(mode="streaming", engine={"type": engine}, streaming=streaming)
    spec["source"].update(parquet=None, redisStream={"url": "redis://r:6379", "stream": "s"})


def _server_dry_run(doc: dict[str, Any], namespace: str) -> tuple[int, str]:
    text = yaml.safe_dump({k: v for k, v in doc.items()}, sort_keys=False)
    result = kubectl_result("create", "--dry-run=server", "-n", namespace, "-f", "-", input=text)
    return result.returncode, result.stdout + result.stderr


def _drop_nones(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None}
    return value


@pytest.mark.parametrize(("kind", "change", "message"), INVALID)
def test_invalid_spec_is_rejected_naming_the_field(
    kind: str, change: Any, message: str, namespace: str
) -> None:
    code, output = _server_dry_run(_drop_nones(mutate(kind, change)), namespace)
    assert code != 0, f"the API server accepted an invalid {kind}:\n{output}"
    assert message in output, f"rejection does not name the problem ({message!r}):\n{output}"


def test_at_least_five_invalid_cases_per_kind() -> None:
    for kind in ("TrainingJob", "InferenceService", "FeaturePipeline"):
        assert sum(1 for p in INVALID if p.values[0] == kind) >= 5, kind


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_accepted(path: Path, namespace: str) -> None:
    kubectl("apply", "--server-side", "-n", namespace, "-f", str(path))


def test_printer_columns_and_short_names(namespace: str) -> None:
    for path in EXAMPLES:
        kubectl("apply", "--server-side", "-n", namespace, "-f", str(path))
    expected = {
        "ltj": ["NAME", "PHASE", "REPLICAS", "READY", "RESTARTS", "GANG", "AGE"],
        "lis": ["NAME", "PHASE", "MODEL", "REPLICAS", "READY", "AGE"],
        "lfp": ["NAME", "PHASE", "ENGINE", "WATERMARK", "ROWS", "AGE"],
    }
    for short_name, columns in expected.items():
        header = kubectl("get", short_name, "-n", namespace).splitlines()[0].split()
        assert header == columns, f"kubectl get {short_name}: {header}"
    listed = kubectl("get", "loom", "-n", namespace, "-o", "name")
    assert "trainingjob.loom.ml/dlrm-pretrain" in listed
    assert "inferenceservice.loom.ml/ranker" in listed
    assert "featurepipeline.loom.ml/user-clicks" in listed


def test_defaults_are_applied_by_the_api_server(namespace: str) -> None:
    doc = example("TrainingJob")
    doc["spec"].pop("runPolicy")
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    spec = yaml.safe_load(kubectl("get", "ltj", doc["metadata"]["name"], "-n", namespace, "-o", "yaml"))[
        "spec"
    ]
    assert spec["runPolicy"]["backoffLimit"] == 3
    assert spec["runPolicy"]["cleanPodPolicy"] == "Running"
    assert spec["replicaSpecs"]["worker"]["replicas"] == 3


def test_kustomize_base_installs_the_operator(kubeconfig: str) -> None:
    rendered = kubectl("kustomize", str(ROOT / "manifests" / "base"))
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=rendered)
    kubectl("rollout", "status", "deployment/loom-operator", "-n", "loom-system", "--timeout=60s")
    dev = kubectl("kustomize", str(ROOT / "manifests" / "overlays" / "dev"))
    assert "--peering=loom" in dev and "kind: ClusterKopfPeering" in dev
    kubectl("delete", "deployment", "loom-operator", "-n", "loom-system", "--wait=false")
