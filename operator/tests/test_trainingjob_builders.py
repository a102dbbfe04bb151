"""Builders: pods and the headless Service of a TrainingJob's gang."""

from __future__ import annotations

from typing import Any

import pytest
from test_trainingjob_factories import make_job

from loom.builders.trainingjob import (
    GANG_GATE,
    desired_pods,
    desired_service,
    is_gang_scheduled,
    members,
    name_problem,
    pod_gpus,
    spec_hash,
)


def env_of(pod: dict[str, Any], container: int = 0) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][container]["env"]}


def test_pod_names_labels_and_owner() -> None:
    job = make_job(labels={"kueue.x-k8s.io/queue-name": "team-a"})
    pods = desired_pods(job, attempt=2)
    assert [p["metadata"]["name"] for p in pods] == [
        "train-master-0-a2",
        "train-worker-0-a2",
        "train-worker-1-a2",
        "train-worker-2-a2",
    ]
    labels = pods[2]["metadata"]["labels"]
    assert labels["loom.ml/trainingjob"] == "train"
    assert labels["loom.ml/role"] == "worker"
    assert labels["loom.ml/replica-index"] == "1"
    assert labels["loom.ml/attempt"] == "2"
    assert labels["app.kubernetes.io/managed-by"] == "loom-operator"
    assert labels["app.kubernetes.io/instance"] == "train"
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
    owner = pods[0]["metadata"]["ownerReferences"][0]
    assert owner == {
        "apiVersion": "loom.ml/v1alpha1",
        "kind": "TrainingJob",
        "name": "train",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_pods_are_gated_with_stable_dns_and_never_restart_in_place() -> None:
    pod = desired_pods(make_job(), 0)[1]
    spec = pod["spec"]
    assert spec["schedulingGates"] == [{"name": GANG_GATE}]
    assert (spec["hostname"], spec["subdomain"]) == ("worker-0", "train")
    assert spec["restartPolicy"] == "Never"


def test_torch_distributed_env_master_and_workers() -> None:
    pods = desired_pods(make_job(gpus=8), 0)
    master, worker2 = env_of(pods[0]), env_of(pods[3])
    assert master["MASTER_ADDR"] == "master-0.train.ns.svc" == worker2["PET_MASTER_ADDR"]
    assert master["MASTER_PORT"] == "23456" == worker2["PET_MASTER_PORT"]
    assert master["WORLD_SIZE"] == "32" == worker2["WORLD_SIZE"]  # 4 pods x 8 GPUs
    assert (master["RANK"], worker2["RANK"]) == ("0", "24")
    assert (worker2["LOCAL_WORLD_SIZE"], worker2["PET_NPROC_PER_NODE"]) == ("8", "8")
    assert (worker2["PET_NNODES"], worker2["PET_NODE_RANK"]) == ("4", "3")
    assert "PET_RDZV_BACKEND" not in worker2


@pytest.mark.parametrize(
    ("gpus", "nproc", "expected"),
    [
        pytest.param(4, None, "4", id="from-gpu-request"),
        pytest.param(0, None, "1", id="cpu-only-is-1"),
        pytest.param(8, 2, "2", id="explicit-nproc"),
    ],
)
def test_nproc_per_node(gpus: int, nproc: int | None, expected: str) -> None:
    job = make_job(gpus=gpus, **({"nprocPerNode": nproc} if nproc else {}))
    env = env_of(desired_pods(job, 0)[1])
    assert env["PET_NPROC_PER_NODE"] == expected == env["LOCAL_WORLD_SIZE"]
    assert env["WORLD_SIZE"] == str(4 * int(expected))


def test_rank_zero_without_master_is_first_role_by_name() -> None:
    job = make_job(roles={"worker": 2, "evaluator": 1}, gpus=1)
    gang = members(job)
    assert [(m.role, m.index, m.node_rank) for m in gang] == [
        ("evaluator", 0, 0),
        ("worker", 0, 1),
        ("worker", 1, 2),
    ]
    assert env_of(desired_pods(job, 0)[2])["MASTER_ADDR"] == "evaluator-0.train.ns.svc"


def test_elastic_env_and_size() -> None:
    job = make_job(
        roles={"worker": 2}, gpus=8, elastic={"minReplicas": 2, "maxReplicas": 6, "maxRestarts": 3}
    )
    pods = desired_pods(job, 1, size=4)
    assert len(pods) == 4
    env = env_of(pods[3])
    assert env["PET_NNODES"] == "2:6"
    assert env["PET_RDZV_BACKEND"] == "c10d"
    assert env["PET_RDZV_ENDPOINT"] == "worker-0.train.ns.svc:29400"
    assert env["PET_RDZV_ID"] == "uid-1"
    assert env["PET_MAX_RESTARTS"] == "3"
    assert env["WORLD_SIZE"] == "32"
    assert env["LOOM_ATTEMPT"] == "1"


def test_template_env_is_kept_but_loom_variables_win() -> None:
    container = {
        "name": "t",
        "image": "x",
        "env": [{"name": "MASTER_PORT", "value": "1"}, {"name": "NCCL_DEBUG", "value": "INFO"}],
    }
    job = make_job(template={"spec": {"containers": [container]}})
    env = desired_pods(job, 0)[0]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert names.count("MASTER_PORT") == 1 and names[0] == "NCCL_DEBUG"
    assert {e["name"]: e["value"] for e in env}["MASTER_PORT"] == "23456"


def test_excluded_nodes_are_added_to_every_required_term() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["b"]}]},
                ]
            }
        }
    }
    job = make_job(template={"spec": {"containers": [{"name": "t", "image": "x"}], "affinity": affinity}})
    pod = desired_pods(job, 1, excluded_nodes=["gpu-3", "gpu-1"])[0]
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    for term in terms["nodeSelectorTerms"]:
        assert term["matchFields"] == [  # one value per node field requirement: the API server's rule
            {"key": "metadata.name", "operator": "NotIn", "values": ["gpu-1"]},
            {"key": "metadata.name", "operator": "NotIn", "values": ["gpu-3"]},
        ]
        assert term["matchExpressions"]
    # the job's template is untouched
    assert "matchFields" not in str(job.spec.replicaSpecs["master"].template)


def test_no_affinity_without_exclusions() -> None:
    assert "affinity" not in desired_pods(make_job(), 0)[0]["spec"]


def test_gang_scheduler_pods_are_not_gated() -> None:
    template = {"spec": {"schedulerName": "volcano", "containers": [{"name": "t", "image": "x"}]}}
    job = make_job(template=template)
    assert is_gang_scheduled(job)
    assert all("schedulingGates" not in p["spec"] for p in desired_pods(job, 0))


def test_priority_class_and_template_metadata() -> None:
    template = {
        "metadata": {"labels": {"team": "ranking"}, "annotations": {"a": "b"}},
        "spec": {"containers": [{"name": "t", "image": "x"}]},
    }
    job = make_job(template=template, run_policy={"priorityClassName": "high"})
    pod = desired_pods(job, 0)[0]
    assert pod["spec"]["priorityClassName"] == "high"
    assert pod["metadata"]["labels"]["team"] == "ranking"
    assert pod["metadata"]["annotations"] == {"a": "b", "loom.ml/spec-hash": spec_hash(job)}


def test_spec_hash_follows_the_pod_spec_not_the_retry_policy() -> None:
    job = make_job()
    assert spec_hash(job) == spec_hash(make_job(run_policy={"backoffLimit": 9, "suspend": True}))
    assert spec_hash(job) != spec_hash(make_job(gpus=4))
    assert spec_hash(job) != spec_hash(make_job(roles={"master": 1, "worker": 4}))
    assert spec_hash(job) != spec_hash(make_job(run_policy={"priorityClassName": "high"}))


def test_headless_service_follows_the_current_attempt() -> None:
    service = desired_service(make_job(), 3)
    assert service["metadata"]["name"] == "train"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"loom.ml/trainingjob": "train", "loom.ml/attempt": "3"}
    assert service["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


@pytest.mark.parametrize(
    ("spec", "gpus"),
    [
        pytest.param({"containers": [{"resources": {"limits": {"nvidia.com/gpu": "2"}}}] * 2}, 4, id="sum"),
        pytest.param({"containers": [{"resources": {"requests": {"nvidia.com/gpu": 3}}}]}, 3, id="requests"),
        pytest.param(
            {
                "containers": [{"resources": {"limits": {"nvidia.com/gpu": 1}}}],
                "initContainers": [{"resources": {"limits": {"nvidia.com/gpu": 4}}}],
            },
            4,
            id="init-max",
        ),
        pytest.param({"containers": [{}]}, 0, id="none"),
    ],
)
def test_pod_gpus(spec: dict[str, Any], gpus: int) -> None:
    assert pod_gpus(spec) == gpus


@pytest.mark.parametrize(
    ("name", "ok"),
    [("train", True), ("a" * 63, True), ("a" * 64, False), ("1train", False), ("my.job", False)],
)
def test_name_problem(name: str, ok: bool) -> None:
    assert (name_problem(make_job(name)) is None) == ok
