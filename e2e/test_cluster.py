"""The local cluster behaves as the other e2e suites assume: GPU nodes, the pod lifecycle, and
Loom's KWOK test stages (exit codes, OOM kills, evictions, NotReady nodes)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from e2e.pools import Pool
from e2e.support import evict_pod, kubectl, set_node_ready, set_pod_exit, wait_for


def _pod(namespace: str, name: str, gpus: int = 0, pool: Pool | None = None) -> None:
    resources = {"limits": {"nvidia.com/gpu": gpus}} if gpus else {}
    spec = {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox", "resources": resources}],
    }
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": pool.pin(spec) if pool else spec,
            }
        ),
    )


def _get(namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(kubectl("get", "pod", "-n", namespace, name, "-o", "json"))
    return obj


def _phase(namespace: str, name: str) -> str:
    return str(_get(namespace, name).get("status", {}).get("phase", ""))


def test_gpu_nodes_advertise_gpus(kubeconfig: str) -> None:
    nodes = json.loads(kubectl("get", "nodes", "-l", "loom.ml/pool=gpu", "-o", "json"))["items"]
    assert len(nodes) >= 1
    assert all(int(n["status"]["allocatable"]["nvidia.com/gpu"]) >= 1 for n in nodes)


def test_gpu_pod_is_scheduled_on_a_gpu_node_and_runs(namespace: str, pool: Pool) -> None:
    _pod(namespace, "gpu", gpus=2, pool=pool)
    wait_for(lambda: _phase(namespace, "gpu") == "Running", timeout=30, what="pod Running")
    pod = _get(namespace, "gpu")
    assert pod["spec"]["nodeName"] in pool.nodes
    assert all(c["type"] != "Ready" or c["status"] == "True" for c in pod["status"]["conditions"])


@pytest.mark.parametrize(("code", "phase"), [(0, "Succeeded"), (3, "Failed"), (139, "Failed")])
def test_exit_code_stage(namespace: str, code: int, phase: str) -> None:
    _pod(namespace, "p")
    wait_for(lambda: _phase(namespace, "p") == "Running", timeout=30, what="pod Running")
    set_pod_exit(namespace, "p", code)
    wait_for(lambda: _phase(namespace, "p") == phase, timeout=30, what=f"pod {phase}")
    terminated = _get(namespace, "p")["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == code


def test_oom_and_eviction_stages(namespace: str) -> None:
    _pod(namespace, "oom")
    _pod(namespace, "evicted")
    for name in ("oom", "evicted"):
        wait_for(lambda n=name: _phase(namespace, n) == "Running", timeout=30, what=f"{name} Running")
    set_pod_exit(namespace, "oom", 137, oom=True)
    evict_pod(namespace, "evicted")
    wait_for(lambda: _phase(namespace, "oom") == "Failed", timeout=30, what="oom pod Failed")
    assert (
        _get(namespace, "oom")["status"]["containerStatuses"][0]["state"]["terminated"]["reason"]
        == "OOMKilled"
    )
    wait_for(lambda: _phase(namespace, "evicted") == "Failed", timeout=30, what="evicted pod Failed")
    assert _get(namespace, "evicted")["status"]["reason"] == "Evicted"


def test_node_not_ready_and_back(kubeconfig: str) -> None:
    node = "cpu-node-0"

    def ready() -> str:
        conditions = json.loads(kubectl("get", "node", node, "-o", "json"))["status"]["conditions"]
        return next(c["status"] for c in conditions if c["type"] == "Ready")

    set_node_ready(node, False)
    try:
        wait_for(lambda: ready() == "False", timeout=30, what=f"{node} NotReady")
    finally:
        set_node_ready(node, True)
    wait_for(lambda: ready() == "True", timeout=30, what=f"{node} Ready again")


def test_a_wait_that_times_out_says_what_it_saw(namespace: str) -> None:
    """Not just `last value: None`: the pods, why they are not scheduled, the warnings."""
    _pod(namespace, "huge", gpus=1000)
    with pytest.raises(TimeoutError) as raised:
        wait_for(lambda: _phase(namespace, "huge") == "Running", timeout=4, what="a pod no node can hold")
    text = str(raised.value)
    assert f"namespace {namespace}: 1 pods" in text, text
    assert "pod huge: Pending on (unscheduled); PodScheduled=False Unschedulable" in text, text
    assert "Insufficient nvidia.com/gpu" in text and "event huge: FailedScheduling" in text, text
