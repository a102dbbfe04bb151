"""How the controllers read a GPU-unhealthy node (the agent's condition and taint, or a person's label):
a TrainingJob gang there is lost like on a NotReady node (restart elsewhere, node excluded, no GPUs
counted free), and the InferenceService replaces its pods there. Plus the model load time a serving
pod reports."""

from __future__ import annotations

from typing import Any

import pytest

from loom.builders.trainingjob_gang import free_gpus, is_eligible, node_from
from loom.health.failures import FailureKind, NodeState, classify
from loom.health.pods import gpu_unhealthy, model_load_seconds


def node(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "gpu-1", "labels": {}},
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {"nvidia.com/gpu": "8"},
        },
    }
    if "label" in extra:
        body["metadata"]["labels"]["loom.ml/gpu-health"] = "unhealthy"
    if "condition" in extra:
        body["status"]["conditions"].append({"type": "GPUHealthy", "status": "False", "message": "XID 79"})
    if "taint" in extra:
        body["spec"]["taints"] = [{"key": "loom.ml/gpu-unhealthy", "effect": "NoSchedule"}]
    return body


@pytest.mark.parametrize("mark", ["label", "condition", "taint"])
def test_a_gpu_unhealthy_node_is_lost_to_gangs(mark: str) -> None:
    bad = node_from(node(**{mark: True}))
    assert not bad.ready and bad.gpu_problem == gpu_unhealthy(node(**{mark: True}))
    assert free_gpus([bad], []) == {}
    assert not is_eligible(bad, {"tolerations": [{"operator": "Exists"}]})  # even for pods tolerating all
    good = node_from(node())
    assert good.ready and good.gpu_problem is None and free_gpus([good], []) == {"gpu-1": 8}


def test_a_running_pod_on_it_is_a_retryable_node_failure() -> None:
    pod = {
        "metadata": {"name": "job-worker-0-a0"},
        "spec": {"nodeName": "gpu-1"},
        "status": {"phase": "Running"},
    }
    # What TrainingJob's node_state gives for a node whose Node.ready is False.
    failure = classify(pod, "Never", NodeState.NOT_READY)
    assert failure is not None and failure.kind is FailureKind.NODE_LOST and not failure.is_permanent
    assert failure.message == "pod job-worker-0-a0: node gpu-1 is lost, NotReady or GPU-unhealthy"


def serving_pod(started_at: str | None, initialized_at: str | None, started: bool = True) -> dict[str, Any]:
    state = {"running": {"startedAt": started_at}} if started_at else {"waiting": {}}
    conditions = [{"type": "Initialized", "status": "True", "lastTransitionTime": initialized_at}]
    return {
        "status": {
            "initContainerStatuses": [{"name": "loom-sidecar", "started": started, "state": state}],
            "conditions": conditions if initialized_at else [],
        }
    }


def test_model_load_seconds_from_sidecar_start_to_initialized() -> None:
    assert model_load_seconds(serving_pod("2026-01-01T00:00:00Z", "2026-01-01T00:00:42Z")) == 42.0
    assert model_load_seconds(serving_pod("2026-01-01T00:00:00Z", None)) is None
    assert model_load_seconds(serving_pod("2026-01-01T00:00:00Z", "2026-01-01T00:00:42Z", False)) is None
    assert model_load_seconds({"status": {}}) is None
