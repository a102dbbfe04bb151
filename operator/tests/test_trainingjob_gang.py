"""Gang admission: free GPUs per node and the best-fit-decreasing check."""

from __future__ import annotations

from typing import Any

import pytest

from loom.builders.trainingjob_gang import (
    GpuPod,
    Node,
    fits,
    free_gpus,
    gpu_pod_from,
    is_eligible,
    node_from,
)


def spec(gpus: int, **extra: Any) -> dict[str, Any]:
    return {"containers": [{"resources": {"limits": {"nvidia.com/gpu": gpus}}}], **extra}


NODES = {n: Node(n, gpus=8, labels={"pool": "a" if n < "c" else "b"}) for n in ("a", "b", "c")}


def test_free_gpus_subtracts_bound_and_places_admitted_pending() -> None:
    pods = [
        GpuPod("ns", "bound", "a", 3),
        GpuPod("ns", "done", "a", 5, terminal=True),
        GpuPod("ns", "gated", None, 8, gated=True),
        GpuPod("ns", "admitted", None, 6),
        GpuPod("ns", "unobserved-ungate", None, 8, gated=True),
    ]
    nodes = [*NODES.values(), Node("down", ready=False, gpus=8), Node("cordoned", unschedulable=True, gpus=8)]
    free = free_gpus(nodes, pods, admitted=frozenset({("ns", "unobserved-ungate")}))
    # a: 8-3 = 5; the 8-GPU admitted pod goes to b (best fit of 8 is an empty node), the 6 to c
    assert free == {"a": 5, "b": 0, "c": 2}


@pytest.mark.parametrize(
    ("free", "demands", "ok"),
    [
        pytest.param({"a": 8, "b": 8}, [8, 8], True, id="two-whole-nodes"),
        pytest.param({"a": 4, "b": 4}, [8], False, id="total-is-enough-but-no-node-is"),
        pytest.param({"a": 4, "b": 4, "c": 8}, [4, 4, 8], True, id="best-fit-keeps-the-big-node"),
        pytest.param({"a": 6, "b": 2}, [2, 6], True, id="decreasing-order"),
        pytest.param({}, [0, 0], True, id="cpu-only-always-fits"),
    ],
)
def test_fits(free: dict[str, int], demands: list[int], ok: bool) -> None:
    nodes = {n: Node(n, gpus=8) for n in free}
    assert fits(free, nodes, [spec(g) for g in demands]) is ok


@pytest.mark.parametrize(
    ("pod_spec", "eligible"),
    [
        pytest.param(spec(1), {"a", "b", "c"}, id="anywhere"),
        pytest.param(spec(1, nodeSelector={"pool": "b"}), {"c"}, id="node-selector"),
        pytest.param(
            spec(
                1,
                affinity={
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}],
                                    "matchFields": [
                                        {"key": "metadata.name", "operator": "NotIn", "values": ["a"]}
                                    ],
                                }
                            ]
                        }
                    }
                },
            ),
            {"b"},
            id="affinity-expressions-and-fields",
        ),
    ],
)
def test_eligibility(pod_spec: dict[str, Any], eligible: set[str]) -> None:
    assert {n for n, node in NODES.items() if is_eligible(node, pod_spec)} == eligible


def test_taints_need_tolerations() -> None:
    tainted = Node("t", gpus=8, taints=(("nvidia.com/gpu", "present", "NoSchedule"),))
    assert not is_eligible(tainted, spec(1))
    assert is_eligible(tainted, spec(1, tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]))
    assert is_eligible(tainted, spec(1, tolerations=[{"key": "nvidia.com/gpu", "value": "present"}]))
    assert not is_eligible(tainted, spec(1, tolerations=[{"key": "nvidia.com/gpu", "value": "x"}]))
    assert is_eligible(tainted, spec(1, tolerations=[{"operator": "Exists"}]))


def test_node_and_pod_from_api_objects() -> None:
    node = node_from(
        {
            "metadata": {"name": "n", "labels": {"x": "y"}},
            "spec": {
                "taints": [{"key": "k", "effect": "NoExecute"}, {"key": "p", "effect": "PreferNoSchedule"}]
            },
            "status": {
                "allocatable": {"nvidia.com/gpu": "8"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )
    assert node == Node("n", ready=True, gpus=8, labels={"x": "y"}, taints=(("k", "", "NoExecute"),))
    pod = gpu_pod_from(
        {
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {**spec(2), "schedulingGates": [{"name": "g"}]},
            "status": {"phase": "Pending"},
        }
    )
    assert pod == GpuPod("ns", "p", None, 2, gated=True, terminal=False)
