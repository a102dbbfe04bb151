"""Failure classification: one row per (pod state, restart policy) with the expected kind and action."""

from __future__ import annotations

from typing import Any

import pytest

from loom.health.failures import Action, FailureKind, NodeState, classify, failed_container


def pod(
    phase: str = "Running",
    *,
    exit_code: int | None = None,
    reason: str = "Error",
    pod_reason: str | None = None,
    disruption: str | None = None,
    deleting: bool = False,
    node: str | None = "gpu-0",
    sidecar_exit: int | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    statuses: list[dict[str, Any]] = []
    if exit_code is not None:
        statuses.append(
            {"name": "trainer", "state": {"terminated": {"exitCode": exit_code, "reason": reason}}}
        )
    else:
        statuses.append({"name": "trainer", "state": {"running": {}}})
    init: list[dict[str, Any]] = []
    spec: dict[str, Any] = {"containers": [{"name": "trainer"}]}
    if node:
        spec["nodeName"] = node
    if sidecar_exit is not None:
        spec["initContainers"] = [{"name": "sidecar", "restartPolicy": "Always"}]
        init.append(
            {"name": "sidecar", "state": {"terminated": {"exitCode": sidecar_exit, "reason": "Error"}}}
        )
    status: dict[str, Any] = {"phase": phase, "containerStatuses": statuses, "initContainerStatuses": init}
    if pod_reason:
        status["reason"] = pod_reason
    if message:
        status["message"] = message
    if disruption:
        status["conditions"] = [{"type": "DisruptionTarget", "status": "True", "reason": disruption}]
    meta: dict[str, Any] = {"name": "job-worker-1-a0"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": spec, "status": status}


R, F = Action.RESTART, Action.FAIL
CASES = [
    # ExitCode: 1-127 permanent, 128-255 retryable (Kubeflow's contract), OOM retryable.
    pytest.param(pod("Failed", exit_code=1), "ExitCode", FailureKind.EXIT_CODE, F, id="exitcode-1-permanent"),
    pytest.param(
        pod("Failed", exit_code=127), "ExitCode", FailureKind.EXIT_CODE, F, id="exitcode-127-permanent"
    ),
    pytest.param(pod("Failed", exit_code=128), "ExitCode", FailureKind.EXIT_CODE, R, id="exitcode-128-retry"),
    pytest.param(
        pod("Failed", exit_code=139), "ExitCode", FailureKind.EXIT_CODE, R, id="exitcode-sigsegv-retry"
    ),
    pytest.param(pod("Failed", exit_code=255), "ExitCode", FailureKind.EXIT_CODE, R, id="exitcode-255-retry"),
    pytest.param(
        pod("Failed", exit_code=137, reason="OOMKilled"),
        "ExitCode",
        FailureKind.OOM_KILLED,
        R,
        id="exitcode-oom",
    ),
    # OnFailure: everything restarts.
    pytest.param(pod("Failed", exit_code=1), "OnFailure", FailureKind.EXIT_CODE, R, id="onfailure-1-retry"),
    pytest.param(
        pod("Failed", exit_code=137, reason="OOMKilled"),
        "OnFailure",
        FailureKind.OOM_KILLED,
        R,
        id="onfailure-oom",
    ),
    # Never: the program's failures are final, disruptions are not the program's.
    pytest.param(pod("Failed", exit_code=139), "Never", FailureKind.EXIT_CODE, F, id="never-139-permanent"),
    pytest.param(
        pod("Failed", exit_code=137, reason="OOMKilled"),
        "Never",
        FailureKind.OOM_KILLED,
        F,
        id="never-oom-permanent",
    ),
    pytest.param(
        pod("Failed", exit_code=137, pod_reason="Evicted"),
        "Never",
        FailureKind.EVICTED,
        R,
        id="never-evicted-retry",
    ),
    # Disruptions under every policy.
    pytest.param(
        pod("Failed", exit_code=137, pod_reason="Evicted"), "ExitCode", FailureKind.EVICTED, R, id="evicted"
    ),
    pytest.param(
        pod("Failed", exit_code=143, disruption="TerminationByKubelet"),
        "ExitCode",
        FailureKind.EVICTED,
        R,
        id="disruption-kubelet",
    ),
    pytest.param(
        pod("Failed", exit_code=1, disruption="PreemptionByScheduler"),
        "ExitCode",
        FailureKind.PREEMPTED,
        R,
        id="preempted-exit-1-still-retry",
    ),
    pytest.param(
        pod("Running", deleting=True, disruption="DeletionByTaintManager"),
        "Never",
        FailureKind.NODE_LOST,
        R,
        id="taint-manager-deletion",
    ),
    pytest.param(
        pod("Running", exit_code=1, deleting=True),
        "ExitCode",
        FailureKind.DELETED,
        R,
        id="deleted-sigterm-exit-1",
    ),
    pytest.param(pod("Failed"), "ExitCode", FailureKind.UNKNOWN, R, id="failed-without-exit-code"),
    # A container failed while the pod still runs (a sidecar keeps it alive).
    pytest.param(
        pod("Running", exit_code=2), "ExitCode", FailureKind.EXIT_CODE, F, id="container-exit-pod-running"
    ),
]


@pytest.mark.parametrize(("p", "policy", "kind", "action"), CASES)
def test_classify(p: dict[str, Any], policy: str, kind: FailureKind, action: Action) -> None:
    failure = classify(p, policy)
    assert failure is not None
    assert (failure.kind, failure.action) == (kind, action)
    assert failure.pod == "job-worker-1-a0"


@pytest.mark.parametrize(
    ("p", "node"),
    [
        pytest.param(pod("Running"), NodeState.READY, id="running"),
        pytest.param(pod("Pending", node=None), NodeState.GONE, id="pending-unscheduled"),
        pytest.param(pod("Succeeded", exit_code=0), NodeState.GONE, id="succeeded-on-lost-node"),
        pytest.param(pod("Running", sidecar_exit=137), NodeState.READY, id="native-sidecar-stopped"),
    ],
)
def test_healthy_pods_have_no_failure(p: dict[str, Any], node: NodeState) -> None:
    assert classify(p, "ExitCode", node) is None


@pytest.mark.parametrize("node", [NodeState.GONE, NodeState.NOT_READY], ids=["gone", "not-ready"])
@pytest.mark.parametrize("policy", ["Never", "OnFailure", "ExitCode"])
def test_lost_node_is_retryable_under_every_policy(node: NodeState, policy: str) -> None:
    failure = classify(pod("Running"), policy, node)
    assert failure is not None
    assert (failure.kind, failure.action, failure.node) == (FailureKind.NODE_LOST, Action.RESTART, "gpu-0")


def test_message_names_pod_container_and_exit_code() -> None:
    failure = classify(pod("Failed", exit_code=3, message="boom"), "ExitCode")
    assert failure is not None
    assert failure.message == "pod job-worker-1-a0 container trainer exited with code 3: boom"
    oom = classify(pod("Failed", exit_code=137, reason="OOMKilled"), "ExitCode")
    assert (
        oom is not None
        and oom.message == "pod job-worker-1-a0 container trainer exited with code 137 (OOMKilled)"
    )


def test_unknown_policy_defaults_to_restart() -> None:
    failure = classify(pod("Failed", exit_code=1), "Sometimes")
    assert failure is not None and failure.action is Action.RESTART


def test_failed_container_prefers_init_containers_and_skips_zero() -> None:
    p = pod("Failed", exit_code=5)
    p["status"]["initContainerStatuses"] = [{"name": "setup", "state": {"terminated": {"exitCode": 9}}}]
    assert failed_container(p) == ("setup", 9, "")
    assert failed_container(pod("Succeeded", exit_code=0)) is None
