"""Children of an InferenceService: Deployment per revision with the native sidecar, the Service."""

from __future__ import annotations

from typing import Any

import pytest
from test_inferenceservice_factories import make_isvc

from loom.builders.inferenceservice import (
    SidecarConfig,
    desired_deployment,
    desired_service,
    load_timeout_seconds,
    parse_quantity,
    revision_hash,
    selector,
    url,
)


def containers(deployment: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    return spec["initContainers"][0], spec["containers"][0]


@pytest.mark.parametrize(
    ("quantity", "value"),
    [("4Gi", 4 << 30), ("500M", 500_000_000), ("1.5Gi", 3 << 29), ("1e9", 10**9), ("128974848", 128974848)],
)
def test_parse_quantity(quantity: str, value: int) -> None:
    assert parse_quantity(quantity) == value


def test_parse_quantity_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity("lots")


def test_revision_changes_with_template_model_and_sidecar_but_not_replicas() -> None:
    base = make_isvc()
    rev = revision_hash(base)
    assert len(rev) == 10 and rev == revision_hash(make_isvc())
    assert revision_hash(make_isvc(replicas=5, minReplicas=2)) == rev
    assert revision_hash(make_isvc(canary={"trafficPercent": 50})) == rev
    assert revision_hash(make_isvc(model={"uri": "/models/other.safetensors"})) != rev
    changed = make_isvc()
    changed.spec.predictor.template["spec"]["containers"][0]["image"] = "ranker:2"
    assert revision_hash(changed) != rev
    assert revision_hash(base, SidecarConfig(image="loom-sidecar:dev")) != rev


def test_deployment_injects_native_sidecar_with_startup_probe_sized_for_the_model() -> None:
    isvc = make_isvc(model={"uri": "https://m/x.safetensors", "sizeLimit": "80Gi"})
    d = desired_deployment(isvc, "abc", 3, SidecarConfig(image="loom-sidecar:test"))
    sidecar, server = containers(d)
    assert sidecar["name"] == "loom-sidecar" and sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "loom-sidecar:test"
    assert sidecar["command"] == [
        "loom-sidecar",
        "serve",
        "--dir",
        "/loom/models",
        "--listen",
        "0.0.0.0:8470",
        "ranker=https://m/x.safetensors",
    ]
    probe = sidecar["startupProbe"]
    assert probe["httpGet"] == {"path": "/readyz", "port": 8470}
    # 80 GiB at 200 MB/s is ~430 s; with the base allowance the probe waits well over that.
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 80 * 2**30 / 200e6 + 120
    assert d["spec"]["progressDeadlineSeconds"] > probe["periodSeconds"] * probe["failureThreshold"]
    assert sidecar["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e["value"] for e in server["env"]}
    assert env == {"LOOM_MODEL_DIR": "/loom/models", "LOOM_MODEL_NAME": "ranker"}


def test_memory_emptydir_is_mounted_in_both_and_memory_accounts_for_it() -> None:
    d = desired_deployment(make_isvc(), "abc", 1)
    sidecar, server = containers(d)
    volumes = d["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "loom-models", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}]
    assert {"name": "loom-models", "mountPath": "/loom/models"} in sidecar["volumeMounts"]
    assert {"name": "loom-models", "mountPath": "/loom/models", "readOnly": True} in server["volumeMounts"]
    assert server["resources"]["limits"]["memory"] == "12Gi"  # 8Gi of its own + the 4Gi model
    assert server["resources"]["requests"]["memory"] == "8Gi"
    assert parse_quantity(sidecar["resources"]["limits"]["memory"]) > 4 << 30  # it writes the pages


def test_size_limit_defaults_to_the_memory_request() -> None:
    isvc = make_isvc(model={"uri": "/m/x.safetensors"})
    d = desired_deployment(isvc, "abc", 1)
    assert d["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] == "8Gi"
    assert load_timeout_seconds(make_isvc(model={"uri": "/m", "loadTimeoutSeconds": 900}).spec) == 900


def test_deployment_identity_labels_and_owner() -> None:
    isvc = make_isvc()
    d = desired_deployment(isvc, "abc", 2)
    assert d["metadata"]["name"] == "ranker-abc" and d["metadata"]["namespace"] == "serving"
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["selector"]["matchLabels"] == {
        "loom.ml/inferenceservice": "ranker",
        "loom.ml/revision": "abc",
    }
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert labels["loom.ml/revision"] == "abc" and labels["app.kubernetes.io/managed-by"] == "loom-operator"
    owner = d["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "InferenceService" and owner["uid"] == "uid-ranker" and owner["controller"]
    assert selector(isvc) == "loom.ml/inferenceservice=ranker"
    assert url(isvc) == "http://ranker.serving.svc.cluster.local"


def test_spec_hash_ignores_replicas() -> None:
    isvc = make_isvc()
    one, five = desired_deployment(isvc, "abc", 1), desired_deployment(isvc, "abc", 5)
    assert one["metadata"]["annotations"] == five["metadata"]["annotations"]


def test_pods_avoid_gpu_unhealthy_nodes_within_the_users_affinity() -> None:
    isvc = make_isvc()
    isvc.spec.predictor.template["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["b"]}]},
                ]
            }
        }
    }
    d = desired_deployment(isvc, "abc", 1)
    terms = d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    avoid = {"key": "loom.ml/gpu-health", "operator": "NotIn", "values": ["unhealthy"]}
    assert all(avoid in t["matchExpressions"] and len(t["matchExpressions"]) == 2 for t in terms)
    assert isvc.spec.predictor.template["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"][0]["matchExpressions"] == [{"key": "pool", "operator": "In", "values": ["a"]}]


def test_user_init_containers_run_after_the_sidecar() -> None:
    isvc = make_isvc()
    isvc.spec.predictor.template["spec"]["initContainers"] = [{"name": "warmup", "image": "w"}]
    names = [
        c["name"] for c in desired_deployment(isvc, "abc", 1)["spec"]["template"]["spec"]["initContainers"]
    ]
    assert names == ["loom-sidecar", "warmup"]


def test_service_selects_every_revision_on_the_serving_port() -> None:
    s = desired_service(make_isvc())
    assert s["metadata"]["name"] == "ranker"
    assert s["spec"]["selector"] == {"loom.ml/inferenceservice": "ranker", "loom.ml/role": "predictor"}
    assert s["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 9000, "protocol": "TCP"}]
    assert s["metadata"]["ownerReferences"][0]["name"] == "ranker"
