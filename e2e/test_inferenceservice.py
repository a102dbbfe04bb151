"""InferenceService e2e on the local cluster (real API server, controller-manager, scheduler; KWOK
pods): children and status, canary rollouts and rollbacks, load failures, pod health replacement.

KWOK runs no containers: the native sidecar is reported started (so Loaded) as the pod initializes;
load failures are simulated with the kwok.loom.ml/exit-code stage or by writing the pod status a
real kubelet would write (eviction, NotReady, CrashLoopBackOff).
"""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from e2e.pools import Pool
from e2e.support import ROOT, Operator, apply_yaml, apps, core, get_cr, kubectl, set_pod_exit, wait_for

PLURAL = "inferenceservices"
pytestmark = pytest.mark.timeout(120)


def isvc(
    name: str, pool: Pool, *, image: str = "ghcr.io/loom-ml/ranker-server:1.4", **spec: Any
) -> dict[str, Any]:
    """An InferenceService of one-GPU pods on the test's own `pool`; `spec` overrides top-level spec
    fields."""
    body: dict[str, Any] = {
        "apiVersion": "loom.ml/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "https://models.example.com/ranker.safetensors", "sizeLimit": "1Gi"},
            "predictor": {
                "template": {
                    "spec": pool.pin(
                        {
                            "containers": [
                                {
                                    "name": "server",
                                    "image": image,
                                    "ports": [{"containerPort": 8080, "name": "http"}],
                                    "resources": {
                                        "requests": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": 1},
                                        "limits": {"memory": "2Gi", "nvidia.com/gpu": 1},
                                    },
                                }
                            ]
                        }
                    )
                }
            },
            "scaling": {"autoscaler": "external"},
        },
    }
    body["spec"].update(copy.deepcopy(spec))
    return body


def with_image(doc: dict[str, Any], image: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["spec"]["predictor"]["template"]["spec"]["containers"][0]["image"] = image
    return doc


def status(ns: str, name: str) -> dict[str, Any]:
    obj = get_cr(PLURAL, ns, name) or {}
    result: dict[str, Any] = obj.get("status") or {}
    return result


def condition(ns: str, name: str, type_: str) -> dict[str, Any]:
    return next((c for c in status(ns, name).get("conditions", []) if c["type"] == type_), {})


def live_pods(ns: str, name: str) -> list[Any]:
    pods = core().list_namespaced_pod(ns, label_selector=f"loom.ml/inferenceservice={name}").items
    return [
        p for p in pods if not p.metadata.deletion_timestamp and p.status.phase not in ("Failed", "Succeeded")
    ]


def ready_pods(ns: str, name: str) -> list[Any]:
    return [
        p
        for p in live_pods(ns, name)
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def deployments(ns: str, name: str) -> dict[str, Any]:
    items = apps().list_namespaced_deployment(ns, label_selector=f"loom.ml/inferenceservice={name}").items
    return {d.metadata.labels["loom.ml/revision"]: d for d in items}


def events(ns: str, name: str) -> list[tuple[str, str]]:
    out = kubectl("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}", "-o", "json")
    return [(e["reason"], e["message"]) for e in json.loads(out)["items"]]


def patch_pod_status(ns: str, pod: str, status_patch: dict[str, Any]) -> None:
    """Write what a real kubelet would (strategic merge: conditions and containerStatuses by key)."""
    kubectl("patch", "pod", pod, "-n", ns, "--subresource=status", "-p", json.dumps({"status": status_patch}))


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_serving(ns: str, name: str, replicas: int, timeout: float = 30) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        s = status(ns, name)
        ok = (
            s.get("readyReplicas") == replicas and s.get("replicas") == replicas and s.get("phase") == "Ready"
        )
        return s if ok and condition(ns, name, "RolloutComplete").get("status") == "True" else None

    return wait_for(ready, timeout=timeout, what=f"{name} serving {replicas} Ready replicas")


def test_children_sidecar_status_and_columns(operator: Operator, namespace: str, pool: Pool) -> None:
    apply_yaml(isvc("ranker", pool, replicas=2, minReplicas=1, maxReplicas=4), namespace)
    s = wait_serving(namespace, "ranker", 2)
    assert s["url"] == f"http://ranker.{namespace}.svc.cluster.local"
    assert s["selector"] == "loom.ml/inferenceservice=ranker"
    assert s["modelStatus"]["state"] == "Loaded" and s["modelStatus"]["loadedReplicas"] == 2
    types = {c["type"]: c["status"] for c in s["conditions"]}
    assert types == {
        "Ready": "True",
        "ModelLoaded": "True",
        "RolloutComplete": "True",
        "ScalingActive": "False",
    }

    (revision, deployment), *others = deployments(namespace, "ranker").items()
    assert not others and s["revisions"]["latestReady"] == revision
    owner = deployment.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("InferenceService", "ranker", True)
    pod_spec = deployment.spec.template.spec
    sidecar, server = pod_spec.init_containers[0], pod_spec.containers[0]
    assert (sidecar.name, sidecar.restart_policy) == ("loom-sidecar", "Always")
    assert sidecar.startup_probe.http_get.path == "/readyz" and sidecar.startup_probe.failure_threshold >= 24
    assert sidecar.termination_message_policy == "FallbackToLogsOnError"
    assert (
        {m.name for m in sidecar.volume_mounts} == {m.name for m in server.volume_mounts} == {"loom-models"}
    )
    assert (
        pod_spec.volumes[0].empty_dir.medium == "Memory" and pod_spec.volumes[0].empty_dir.size_limit == "1Gi"
    )
    assert {e.name: e.value for e in server.env} == {
        "LOOM_MODEL_DIR": "/loom/models",
        "LOOM_MODEL_NAME": "ranker",
    }
    assert server.resources.limits["memory"] == "3Gi"
    assert deployment.spec.progress_deadline_seconds > 600

    service = core().read_namespaced_service("ranker", namespace)
    assert service.spec.selector == {"loom.ml/inferenceservice": "ranker", "loom.ml/role": "predictor"}
    assert service.metadata.owner_references[0].name == "ranker"
    pod = ready_pods(namespace, "ranker")[0]
    sidecar_status = next(c for c in pod.status.init_container_statuses if c.name == "loom-sidecar")
    assert sidecar_status.started  # KWOK reports the native sidecar started, as a kubelet would

    row = kubectl("get", "lis", "ranker", "-n", namespace, "-o", "wide").splitlines()
    assert row[0].split()[:6] == ["NAME", "PHASE", "MODEL", "REPLICAS", "READY", "DESIRED"]
    assert row[1].split()[1:6] == ["Ready", "Loaded", "2", "2", "2"]

    kubectl("scale", "lis/ranker", "-n", namespace, "--replicas=3")  # the scale subresource
    wait_serving(namespace, "ranker", 3)


def test_canary_rollout_is_bounded_and_promoted_across_an_operator_restart(
    operator: Operator, namespace: str, pool: Pool
) -> None:
    doc = isvc("ranker", pool, replicas=4, maxReplicas=8, canary={"trafficPercent": 25})
    apply_yaml(doc, namespace)
    old = wait_serving(namespace, "ranker", 4)["revisions"]["latestReady"]
    apply_yaml(with_image(doc, "ghcr.io/loom-ml/ranker-server:1.5"), namespace)
    most = 0

    def canary_started() -> str | None:
        nonlocal most
        most = max(most, len(live_pods(namespace, "ranker")))
        return status(namespace, "ranker").get("revisions", {}).get("canary")

    new = wait_for(canary_started, timeout=20, what="a canary revision")
    assert new != old
    operator.restart()  # mid-rollout: it picks up where it was, from the status and the cluster

    def promoted() -> bool:
        nonlocal most
        most = max(most, len(live_pods(namespace, "ranker")))
        return status(namespace, "ranker").get("revisions", {}).get("latestReady") == new

    wait_for(promoted, timeout=40, what="the canary promoted")
    wait_serving(namespace, "ranker", 4)
    assert most <= 4 + 1, f"{most} pods during the rollout: more than replicas + one canary step"
    wait_for(lambda: list(deployments(namespace, "ranker")) == [new], what="old revision deleted")
    reasons = [r for r, _ in events(namespace, "ranker")]
    assert "CanaryStarted" in reasons and "Promoted" in reasons


def start_held_canary(namespace: str, pool: Pool, **health: Any) -> tuple[dict[str, Any], str, str]:
    """A stable revision of 2 and a new revision whose canary is held for analysis (not promoted)."""
    doc = isvc(
        "ranker", pool, replicas=2, canary={"trafficPercent": 50, "promoteAfterSeconds": 300}, health=health
    )
    apply_yaml(doc, namespace)
    old = wait_serving(namespace, "ranker", 2)["revisions"]["latestReady"]
    apply_yaml(with_image(doc, "ghcr.io/loom-ml/ranker-server:broken"), namespace)
    new = wait_for(lambda: status(namespace, "ranker").get("revisions", {}).get("canary"), what="canary")

    def canary_ready() -> Any:
        return [p for p in ready_pods(namespace, "ranker") if p.metadata.labels["loom.ml/revision"] == new]

    pod = wait_for(canary_ready, what="canary pod Ready")[0]
    wait_for(lambda: len(live_pods(namespace, "ranker")) == 2, what="50%: one old pod, one new")
    time.sleep(1.5)  # held: not promoted
    assert len(live_pods(namespace, "ranker")) == 2 and len(canary_ready()) == 1
    return doc, old, pod.metadata.name


def wait_rolled_back(namespace: str, old: str) -> dict[str, Any]:
    def rolled_back() -> dict[str, Any] | None:
        c = condition(namespace, "ranker", "RolloutComplete")
        return c if c.get("reason") == "RolledBack" else None

    c = wait_for(rolled_back, what="rollback")
    s = wait_serving_revision(namespace, old, 2)
    assert s["revisions"]["failed"] and s["revisions"].get("canary") is None
    wait_for(lambda: list(deployments(namespace, "ranker")) == [old], what="failed revision deleted")
    return c


def wait_serving_revision(namespace: str, revision: str, replicas: int) -> dict[str, Any]:
    def serving() -> dict[str, Any] | None:
        s = status(namespace, "ranker")
        pods = ready_pods(namespace, "ranker")
        ok = len(pods) == replicas and all(p.metadata.labels["loom.ml/revision"] == revision for p in pods)
        return s if ok and len(live_pods(namespace, "ranker")) == replicas else None

    return wait_for(serving, timeout=30, what=f"revision {revision} serving {replicas}")


def test_canary_that_fails_to_load_is_rolled_back(operator: Operator, namespace: str, pool: Pool) -> None:
    _, old, pod = start_held_canary(namespace, pool)
    set_pod_exit(namespace, pod, 3)  # the sidecar: source unreachable
    c = wait_rolled_back(namespace, old)
    assert "SourceUnreachable" in c["message"]
    model = status(namespace, "ranker")["modelStatus"]
    assert (model["state"], model["reason"], model["exitCode"]) == ("FailedToLoad", "SourceUnreachable", 3)
    assert condition(namespace, "ranker", "Ready")["status"] == "True"  # the old revision serves on
    reasons = {r for r, _ in events(namespace, "ranker")}
    assert {"RolledBack", "ModelFailedToLoad"} <= reasons


def test_canary_that_fails_readiness_is_rolled_back(operator: Operator, namespace: str, pool: Pool) -> None:
    _, old, pod = start_held_canary(namespace, pool, notReadySeconds=2)
    patch_pod_status(
        namespace, pod, {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now()}]}
    )
    c = wait_rolled_back(namespace, old)
    assert "ReadinessFailed" in c["message"]
    assert status(namespace, "ranker")["modelStatus"]["state"] == "Loaded"  # the model was fine


def test_load_failures_are_reported_with_reason_and_exit_code(
    operator: Operator, namespace: str, pool: Pool
) -> None:
    apply_yaml(isvc("ranker", pool, replicas=1), namespace)
    wait_serving(namespace, "ranker", 1)
    set_pod_exit(namespace, ready_pods(namespace, "ranker")[0].metadata.name, 4)
    wait_for(
        lambda: any(r == "ModelFailedToLoad" and "NoSpace" in m for r, m in events(namespace, "ranker")),
        what="NoSpace reported",
    )
    pod = wait_for(lambda: ready_pods(namespace, "ranker"), what="replacement pod")[0].metadata.name
    message = 'Usage of EmptyDir volume "loom-models" exceeds the limit "1Gi". '
    patch_pod_status(namespace, pod, {"phase": "Failed", "reason": "Evicted", "message": message})
    wait_for(
        lambda: any("ModelExceedsSizeLimit" in m for r, m in events(namespace, "ranker")),
        what="eviction for the sizeLimit reported",
    )


def test_unhealthy_pods_are_replaced_one_at_a_time(operator: Operator, namespace: str, pool: Pool) -> None:
    apply_yaml(isvc("ranker", pool, replicas=3, minReplicas=2, health={"notReadySeconds": 2}), namespace)
    wait_serving(namespace, "ranker", 3)
    fewest = 3

    def replaced(victim: str) -> bool:
        nonlocal fewest
        fewest = min(fewest, len(ready_pods(namespace, "ranker")))
        names = [p.metadata.name for p in ready_pods(namespace, "ranker")]
        return victim not in names and len(names) == 3

    # NotReady after having been Ready
    victim = ready_pods(namespace, "ranker")[0].metadata.name
    patch_pod_status(
        namespace, victim, {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now()}]}
    )
    wait_for(lambda: replaced(victim), what="NotReady pod replaced")
    # CrashLoopBackOff
    victim = ready_pods(namespace, "ranker")[0].metadata.name
    crash = {
        "name": "server",
        "ready": False,
        "restartCount": 5,
        "state": {"running": None, "waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
    }
    patch_pod_status(namespace, victim, {"containerStatuses": [crash]})
    wait_for(lambda: replaced(victim), what="crash-looping pod replaced")
    # a node whose GPUs Loom's agent marked unhealthy
    victim_pod = ready_pods(namespace, "ranker")[0]
    bad_node = victim_pod.spec.node_name
    kubectl("label", "node", bad_node, "--overwrite", "loom.ml/gpu-health=unhealthy")
    try:
        # every pod there goes (one at a time: 3 replicas on 2 nodes may put two on it), none lands there
        wait_for(
            lambda: (
                replaced(victim_pod.metadata.name)
                and all(p.spec.node_name != bad_node for p in live_pods(namespace, "ranker"))
            ),
            what=f"every pod on the GPU-unhealthy node {bad_node} replaced",
        )
    finally:
        kubectl("label", "node", bad_node, "loom.ml/gpu-health-")
    assert fewest >= 2, "replacement went below minReplicas Ready pods"
    health = wait_for(
        lambda: (
            status(namespace, "ranker")["health"]["replacedPods"] >= 3
            and status(namespace, "ranker")["health"]
        ),
        what="health status",
    )
    assert health["lastReplaced"]["reason"] == "GPUUnhealthy"
    assert sum(1 for r, _ in events(namespace, "ranker") if r == "PodReplaced") >= 3


def test_serving_does_not_wait_for_the_shared_gpu_nodes(
    operator: Operator, namespace: str, pool: Pool
) -> None:
    """The cluster's own GPU nodes full (as gangs of the examples or of another session leave them,
    pods in their termination grace period included): this suite's services run on their pool."""
    nodes = json.loads(kubectl("get", "nodes", "-l", "loom.ml/pool=gpu", "-o", "json"))["items"]
    for node in nodes:
        name, gpus = node["metadata"]["name"], node["status"]["allocatable"].get("nvidia.com/gpu", "0")
        hog = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"hog-{name}"},
            "spec": {
                "nodeName": name,
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": gpus}}}
                ],
            },
        }
        apply_yaml(hog, namespace)
    apply_yaml(isvc("ranker", pool, replicas=2), namespace)
    wait_serving(namespace, "ranker", 2)
    assert {p.spec.node_name for p in live_pods(namespace, "ranker")} <= set(pool.nodes)


def test_example_manifest_is_served(operator: Operator, namespace: str, pool: Pool) -> None:
    doc = yaml.safe_load((ROOT / "manifests/examples/inferenceservice-ranker.yaml").read_text())
    template = doc["spec"]["predictor"]["template"]
    template["spec"] = pool.pin(template["spec"])
    apply_yaml(doc, namespace)
    wait_for(lambda: status(namespace, "ranker").get("readyReplicas") == 1, what="the example serving")
