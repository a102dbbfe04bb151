"""Fixture factories for TrainingJob tests (JobSet's MakeJobSet style): jobs, their pods in any state,
nodes and clusters, built from the real builders so that tests never copy YAML around."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from loom.api.trainingjob import TrainingJob, TrainingJobStatus
from loom.builders.trainingjob import desired_pods
from loom.builders.trainingjob_gang import GpuPod, Node, gpu_pod_from
from loom.builders.trainingjob_plan import Cluster
from loom.controllers.trainingjob_observe import slim_pod

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_job(
    name: str = "train",
    *,
    roles: dict[str, int] | None = None,
    gpus: int = 8,
    policy: str = "OnFailure",
    status: dict[str, Any] | None = None,
    run_policy: dict[str, Any] | None = None,
    elastic: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    template: dict[str, Any] | None = None,
    **spec: Any,
) -> TrainingJob:
    roles = {"master": 1, "worker": 3} if roles is None else roles
    container: dict[str, Any] = {"name": "trainer", "image": "pytorch"}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    pod_template = template or {"spec": {"containers": [container]}}
    body: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": "uid-1",
            "generation": 1,
            "creationTimestamp": T0.isoformat(),
            "labels": labels or {},
        },
        "spec": {
            "replicaSpecs": {
                role: {"replicas": n, "restartPolicy": policy, "template": copy.deepcopy(pod_template)}
                for role, n in roles.items()
            },
            "runPolicy": run_policy or {},
            **({"elastic": elastic} if elastic else {}),
            **spec,
        },
    }
    if status is not None:
        body["status"] = status
    return TrainingJob.model_validate(body)


def with_status(job: TrainingJob, status: Any) -> TrainingJob:
    if isinstance(status, dict):
        status = TrainingJobStatus.model_validate(status)
    return job.model_copy(update={"status": status})


def make_pod(
    job: TrainingJob,
    role: str = "worker",
    index: int = 0,
    attempt: int = 0,
    *,
    phase: str = "Running",
    node: str | None = "gpu-0",
    gated: bool = False,
    ready: bool | None = None,
    exit_code: int | None = None,
    reason: str | None = None,
    pod_reason: str | None = None,
    disruption: str | None = None,
    deleting: bool = False,
    created: datetime = T0,
    size: int | None = None,
    uid: str | None = None,
) -> dict[str, Any]:
    """A pod of `job`'s gang `attempt` as the index would show it."""
    pods = desired_pods(job, attempt, size=size)
    pod = next(
        p
        for p in pods
        if p["metadata"]["labels"]["loom.ml/role"] == role
        and p["metadata"]["labels"]["loom.ml/replica-index"] == str(index)
    )
    pod = copy.deepcopy(pod)
    meta = pod["metadata"]
    meta["uid"] = uid or f"uid-{meta['name']}"
    meta["creationTimestamp"] = created.isoformat()
    if deleting:
        meta["deletionTimestamp"] = created.isoformat()
    if not gated:
        pod["spec"]["schedulingGates"] = []
    if node and phase != "Pending":
        pod["spec"]["nodeName"] = node
    status: dict[str, Any] = {"phase": phase}
    ready = phase == "Running" if ready is None else ready
    status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    if disruption:
        status["conditions"].append({"type": "DisruptionTarget", "status": "True", "reason": disruption})
    if pod_reason:
        status["reason"] = pod_reason
    if exit_code is not None:
        state = {
            "terminated": {
                "exitCode": exit_code,
                "reason": reason or ("Completed" if not exit_code else "Error"),
            }
        }
        status["containerStatuses"] = [{"name": "trainer", "ready": False, "state": state}]
    elif phase == "Running":
        status["containerStatuses"] = [{"name": "trainer", "ready": True, "state": {"running": {}}}]
    pod["status"] = status
    return slim_pod(pod)


def make_gang(
    job: TrainingJob, attempt: int = 0, *, size: int | None = None, **kw: Any
) -> list[dict[str, Any]]:
    """Every pod of gang `attempt`, each on its own node gpu-<rank>."""
    pods = desired_pods(job, attempt, size=size)
    out = []
    for rank, p in enumerate(pods):
        labels = p["metadata"]["labels"]
        kw2 = {"node": f"gpu-{rank}", **kw}
        out.append(
            make_pod(
                job, labels["loom.ml/role"], int(labels["loom.ml/replica-index"]), attempt, size=size, **kw2
            )
        )
    return out


def make_nodes(count: int = 4, gpus: int = 8, **overrides: Any) -> dict[str, Node]:
    return {
        f"gpu-{i}": Node(
            name=f"gpu-{i}", gpus=gpus, labels={"kubernetes.io/hostname": f"gpu-{i}"}, **overrides
        )
        for i in range(count)
    }


def make_cluster(
    nodes: dict[str, Node] | None = None,
    pods: list[dict[str, Any]] | None = None,
    others: list[GpuPod] | None = None,
) -> Cluster:
    """A cluster whose free GPUs account for `pods` (the job's own) and `others`."""
    nodes = make_nodes() if nodes is None else nodes
    gpu_pods = [gpu_pod_from(p) for p in pods or []] + list(others or [])
    return Cluster(nodes=nodes, pods=gpu_pods)


def test_factories_build_a_running_gang() -> None:
    job = make_job()
    gang = make_gang(job)
    assert [p["metadata"]["name"] for p in gang] == [
        "train-master-0-a0",
        "train-worker-0-a0",
        "train-worker-1-a0",
        "train-worker-2-a0",
    ]
    assert all(p["status"]["phase"] == "Running" and not p["spec"]["schedulingGates"] for p in gang)
    assert make_cluster(pods=gang).free == {"gpu-0": 0, "gpu-1": 0, "gpu-2": 0, "gpu-3": 0}
