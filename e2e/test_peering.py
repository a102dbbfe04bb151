"""Two operator processes with Kopf peering (equal explicit priorities: Kopf pauses both): while paused, no
controller of either writes anything, not even work queued before the pause; when the other
replica leaves, the remaining one resumes and catches up."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.install import PEERING_CRD
from e2e.support import (
    Operator,
    apply_yaml,
    get_cr,
    kubectl,
    unwatch_namespace,
    wait_established,
    wait_for,
    watch_namespace,
)

pytestmark = pytest.mark.timeout(240)

PEERING = "loom-e2e"


def _sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def writes(op: Operator) -> dict[str, float]:
    """What an operator did, from its own /metrics: API requests and reconciles per kind."""
    text = op.metrics()
    return {
        # writes, but the peering object's create at startup, before Kopf's peering can pause anything
        "api writes": _sum(text, "loom_api_requests_total")
        - sum(_sum(text, "loom_api_requests_total", operation=op) for op in ("get", "discover"))
        - _sum(text, "loom_api_requests_total", kind="KopfPeering", operation="create"),
        "TrainingJob reconciles": _sum(text, "loom_reconcile_seconds_count", kind="TrainingJob"),
        "InferenceService reconciles": _sum(text, "loom_reconcile_seconds_count", kind="InferenceService"),
    }


@pytest.fixture
def namespace(kubeconfig: str) -> Iterator[str]:
    """Overrides the suite's: outside the pattern the session's operator watches, so that only the
    two operators of this test act here."""
    name = f"e2e-peering-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    watch_namespace(name)
    yield name
    unwatch_namespace(name)
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def peers(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[tuple[Operator, Operator]]:
    kubectl("apply", "--server-side", "-f", "-", input=PEERING_CRD)
    wait_established("kopfpeerings.kopf.dev")
    apply_yaml({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}}, namespace)
    # the same explicit priority (the default is by age, which would let the older one act)
    args = ["--namespace", namespace, "--peering", PEERING, "--peering-priority", "0"]
    a = Operator(tmp_path / "a.log", env={"KUBECONFIG": kubeconfig}, args=args)
    b = Operator(tmp_path / "b.log", env={"KUBECONFIG": kubeconfig}, args=args)
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()
        # Loom's finalizers (Kopf's, for daemons and timers) need an operator: release them here.
        for kind in ("inferenceservices.loom.ml", f"kopfpeerings.kopf.dev/{PEERING}"):
            for obj in kubectl("get", kind, "-n", namespace, "-o", "name", check=False).split():
                kubectl(
                    "patch",
                    obj,
                    "-n",
                    namespace,
                    "--type=merge",
                    "-p",
                    '{"metadata":{"finalizers":null}}',
                    check=False,
                )


def stuck_job(name: str) -> dict[str, object]:
    """A gang that never fits (9 GPUs a pod, on 8-GPU nodes), released after 15 s."""
    container = {"name": "t", "image": "pytorch", "resources": {"limits": {"nvidia.com/gpu": 9}}}
    template = {"spec": {"terminationGracePeriodSeconds": 0, "containers": [container]}}
    return {
        "apiVersion": "loom.ml/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "replicaSpecs": {"worker": {"replicas": 2, "restartPolicy": "OnFailure", "template": template}},
            "runPolicy": {"schedulingTimeoutSeconds": 15},
        },
    }


IDLE_SERVICE = {
    "apiVersion": "loom.ml/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "idle"},
    "spec": {
        "model": {"uri": "https://models.example.com/m.safetensors", "sizeLimit": "1Gi"},
        "predictor": {"template": {"spec": {"containers": [{"name": "server", "image": "x"}]}}},
        "replicas": 0,
        "minReplicas": 0,
        "scaling": {"autoscaler": "external"},
    },
}


def finalizers(namespace: str) -> list[str]:
    peering = json.loads(kubectl("get", "kopfpeering", PEERING, "-n", namespace, "-o", "json"))
    return list(peering["metadata"].get("finalizers") or [])


def attempt(namespace: str, name: str) -> int:
    st = (get_cr("trainingjobs", namespace, name) or {}).get("status") or {}
    return int(st.get("attempt") or 0)


def test_a_paused_replica_does_nothing_until_it_is_active_again(
    peers: tuple[Operator, Operator], namespace: str
) -> None:
    a, b = peers
    a.start()
    apply_yaml(stuck_job("stuck"), namespace)
    apply_yaml(IDLE_SERVICE, namespace)
    reason = lambda: (get_cr("trainingjobs", namespace, "stuck") or {}).get("status") or {}  # noqa: E731
    wait_for(
        lambda: any(
            c["type"] == "Running" and c.get("reason") in ("WaitingForCapacity", "Unschedulable")
            for c in reason().get("conditions", [])
        ),
        what="the gang waiting for capacity (a gang-timeout timer queued in operator A)",
    )
    wait_for(lambda: writes(a)["InferenceService reconciles"] > 0, what="A ticking the InferenceService")
    created = time.monotonic()
    wait_for(lambda: "loom.ml/finalizer" in finalizers(namespace), what="Kopf's finalizer (for the daemon)")

    b.start()  # the same priority: Kopf pauses both
    wait_for(lambda: "Pausing all operators" in a.logs(), timeout=60, what="Kopf pausing A")
    wait_for(lambda: "Possibly conflicting operators" in b.logs(), timeout=60, what="B starting paused")
    wait_for(lambda: "loom_operator_active 0.0" in a.metrics(), timeout=10, what="A reporting itself paused")
    time.sleep(1)  # work in flight when the pause came ends
    paused = writes(a)
    time.sleep(max(0.0, created + 15 + 5 - time.monotonic()))  # past the gang timeout A had queued
    assert writes(a) == paused, "operator A acted while Kopf had paused it"
    assert writes(b)["api writes"] == 0, "operator B acted while Kopf had paused it:\n" + "\n".join(
        line for line in b.metrics().splitlines() if line.startswith("loom_api_requests_total")
    )
    assert attempt(namespace, "stuck") == 0

    b.stop()  # B leaves the peering: A resumes and catches up with the gang timeout
    wait_for(lambda: "loom_operator_active 1.0" in a.metrics(), timeout=60, what="A active again")
    wait_for(lambda: attempt(namespace, "stuck") == 1, timeout=30, what="A releasing the timed-out gang")
    wait_for(
        lambda: writes(a)["InferenceService reconciles"] > paused["InferenceService reconciles"], what="ticks"
    )
    kubectl("delete", "inferenceservice", "idle", "-n", namespace, "--wait=false")
    wait_for(lambda: get_cr("inferenceservices", namespace, "idle") is None, what="A releasing its service")

    a.stop()  # the last replica leaves the peering object deletable without an operator
    assert "loom.ml/finalizer" not in finalizers(namespace)
