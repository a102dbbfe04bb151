"""decide() on both gang paths: kube-scheduler's PodGroups where the API server serves them, Loom's gate
where it does not; what each does when the scheduler cannot place a gang; elastic shrink and growth; the
nodes later gangs avoid."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from test_trainingjob_factories import (
    T0,
    at,
    make_cluster,
    make_gang,
    make_job,
    make_nodes,
    make_pod,
    with_status,
)
from test_trainingjob_plan import cond, is_true, names, step

from loom.api.trainingjob import TrainingJob
from loom.builders import trainingjob as builder
from loom.builders import trainingjob_gang
from loom.builders.trainingjob import GangPath, gang_path
from loom.builders.trainingjob_decision import MAX_EXCLUDED_NODES
from loom.builders.trainingjob_gang import GpuPod, Node
from loom.builders.trainingjob_plan import Cluster, Plan, decide
from loom.builders.trainingjob_podgroup import desired_pod_group
from loom.controllers.trainingjob_observe import slim_pod_group


def served(cluster: Cluster) -> Cluster:
    return dataclasses.replace(cluster, pod_groups_served=True)


def in_group(pod: dict[str, Any], group: str) -> dict[str, Any]:
    """`pod` as kube-scheduler's gang scheduling sees it: in PodGroup `group`, no gate of Loom's."""
    pod["spec"] = {**pod["spec"], "schedulingGroup": {"podGroupName": group}, "schedulingGates": []}
    return pod


def group_of(
    job: TrainingJob,
    attempt: int = 0,
    size: int = 4,
    scheduled: bool | None = None,
    reason: str = "",
    message: str = "",
    since: Any = T0,
) -> dict[str, Any]:
    """The PodGroup Loom creates for gang `attempt`, with the scheduler's PodGroupScheduled condition."""
    body = desired_pod_group(job, attempt, size)
    body["metadata"]["uid"] = f"uid-group-{attempt}"
    if scheduled is not None:
        condition = {"type": "PodGroupScheduled", "status": "True" if scheduled else "False"}
        condition |= {"reason": reason, "message": message, "lastTransitionTime": since.isoformat()}
        body["status"] = {"conditions": [condition]}
    return slim_pod_group(body)


def unschedulable(
    pod: dict[str, Any], message: str = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
) -> dict[str, Any]:
    pod["status"]["conditions"].append(
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    )
    return pod


def pending(job: TrainingJob, index: int, attempt: int = 0, **kw: Any) -> dict[str, Any]:
    return make_pod(job, "worker", index, attempt, phase="Pending", node=None, **kw)


# -- the path ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheduler", "served_", "path"),
    [
        pytest.param(None, True, GangPath.POD_GROUP, id="podgroups-served"),
        pytest.param(None, False, GangPath.GATE, id="podgroups-not-served"),
        pytest.param("volcano", True, GangPath.SCHEDULER, id="gang-scheduler-named"),
        pytest.param("volcano", False, GangPath.SCHEDULER, id="gang-scheduler-without-podgroups"),
    ],
)
def test_gang_path(scheduler: str | None, served_: bool, path: GangPath) -> None:
    spec: dict[str, Any] = {"containers": [{"name": "t", "image": "x"}]}
    if scheduler:
        spec["schedulerName"] = scheduler
    assert gang_path(make_job(template={"spec": spec}), served_) is path


# -- kube-scheduler's gang scheduling ------------------------------------------------------------------


def test_a_new_gang_is_a_podgroup_created_before_its_ungated_pods() -> None:
    job = make_job(run_policy={"priorityClassName": "training-high"})
    plan = decide(job, [], served(make_cluster()), T0)
    (group,) = plan.create_groups
    assert group["apiVersion"] == "scheduling.k8s.io/v1alpha2" and group["kind"] == "PodGroup"
    assert group["metadata"]["name"] == "train-a0" and group["metadata"]["namespace"] == "ns"
    assert group["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"
    assert group["metadata"]["labels"]["loom.ml/trainingjob"] == "train"
    assert group["metadata"]["labels"]["loom.ml/attempt"] == "0"
    assert group["spec"] == {
        "schedulingPolicy": {"gang": {"minCount": 4}},
        "priorityClassName": "training-high",
    }
    assert len(plan.create) == 4 and plan.ungate == []
    for pod in plan.create:
        assert pod["spec"]["schedulingGroup"] == {"podGroupName": "train-a0"}
        assert "schedulingGates" not in pod["spec"]
        assert pod["spec"]["priorityClassName"] == "training-high"
    assert plan.status.podGroup == "train-a0"
    gang = cond(plan, "GangScheduled")
    assert gang.status == "False" and gang.reason == "WaitingForScheduler"
    assert not plan.waiting_for_capacity, "kube-scheduler requeues the gang itself"


def test_the_scheduler_verdict_is_the_status_and_nothing_is_released() -> None:
    job, _ = step(make_job(), [], served(make_cluster()))
    pods = [unschedulable(in_group(pending(job, i, gated=False), "train-a0")) for i in range(3)]
    pods.insert(0, in_group(make_pod(job, "master", 0, phase="Pending", node=None), "train-a0"))
    detailed = "0/6 nodes are available: 2 node(s) had untolerated taint(s), 4 Insufficient nvidia.com/gpu."
    unschedulable(pods[0], detailed)
    group = group_of(job, scheduled=False, reason="Unschedulable", message="pod group is unschedulable")
    plan = decide(job, pods, served(make_cluster(make_nodes(3), pods)), at(5), [group])
    assert plan.delete == [] and plan.create == [] and plan.create_groups == []
    gang = cond(plan, "GangScheduled")
    assert gang.status == "False" and gang.reason == "Unschedulable"
    assert gang.message.startswith(
        "kube-scheduler cannot place the gang of 4 pods (32 GPUs) at once, so it binds none"
    )
    assert "PodGroup train-a0: pod group is unschedulable" in gang.message
    assert f"pod train-master-0-a0: {detailed}" in gang.message  # the per-node count, not the vaguest line
    running = cond(plan, "Running")
    assert (running.status, running.reason, running.message) == ("False", "Unschedulable", gang.message)


def test_a_scheduled_podgroup_reports_every_pod_bound() -> None:
    job, _ = step(make_job(), [], served(make_cluster()))
    pods = [in_group(p, "train-a0") for p in make_gang(job)]
    plan = decide(
        job, pods, served(make_cluster(pods=pods)), at(2), [group_of(job, scheduled=True, reason="Scheduled")]
    )
    gang = cond(plan, "GangScheduled")
    assert gang.status == "True" and gang.reason == "Scheduled"
    assert "kube-scheduler bound all of PodGroup train-a0 at once" in gang.message
    assert is_true(plan, "Running")


def test_a_lost_podgroup_is_created_again() -> None:
    job, _ = step(make_job(), [], served(make_cluster()))
    pods = [in_group(pending(job, i, gated=False), "train-a0") for i in range(3)]
    pods.insert(0, in_group(make_pod(job, "master", 0, phase="Pending", node=None), "train-a0"))
    plan = decide(job, pods, served(make_cluster(pods=pods)), at(5), [])
    assert [g["metadata"]["name"] for g in plan.create_groups] == ["train-a0"] and plan.create == []


def test_a_restart_deletes_the_old_podgroup_and_a_finished_job_every_one() -> None:
    job, _ = step(make_job(policy="ExitCode"), [], served(make_cluster()))
    pods = [in_group(p, "train-a0") for p in make_gang(job)]
    job, _ = step(job, pods, served(make_cluster(pods=pods)), at(2))
    pods[2] = in_group(make_pod(job, "worker", 1, phase="Failed", exit_code=137, node="gpu-2"), "train-a0")
    groups = [group_of(job, scheduled=True, reason="Scheduled")]
    plan = decide(job, pods, served(make_cluster(pods=pods)), at(10), groups)
    assert [(d.name, d.uid) for d in plan.delete_groups] == [("train-a0", "uid-group-0")]
    assert [g["metadata"]["name"] for g in plan.create_groups] == ["train-a1"]
    assert all(p["spec"]["schedulingGroup"] == {"podGroupName": "train-a1"} for p in plan.create)
    assert plan.status.podGroup == "train-a1"
    job = with_status(job, plan.status)
    new = [in_group(p, "train-a1") for p in make_gang(job, 1)]
    new[0] = in_group(make_pod(job, "master", 0, 1, phase="Succeeded", exit_code=0), "train-a1")
    groups.append(group_of(job, 1, scheduled=True, reason="Scheduled"))
    plan = decide(job, new, served(make_cluster(pods=new)), at(20), groups)
    assert is_true(plan, "Succeeded")
    assert sorted(d.name for d in plan.delete_groups) == ["train-a0", "train-a1"]


def test_a_gang_keeps_the_path_its_pods_were_created_on() -> None:
    """The operator restarted and the API server's answer changed: pods in a PodGroup stay in it; gated
    pods are still admitted by Loom."""
    job, _ = step(make_job(), [], served(make_cluster()))
    pods = [in_group(pending(job, i, gated=False), "train-a0") for i in range(3)]
    pods.insert(0, in_group(make_pod(job, "master", 0, phase="Pending", node=None), "train-a0"))
    plan = decide(job, pods, make_cluster(pods=pods), at(1), [group_of(job)])
    assert plan.status.podGroup == "train-a0" and plan.ungate == [] and plan.delete == []
    job, _ = step(make_job(), [], make_cluster(make_nodes(0)))
    gated = make_gang(job, gated=True, phase="Pending", node=None)
    plan = decide(job, gated, served(make_cluster(pods=gated)), at(1))
    assert len(plan.ungate) == 4 and plan.create_groups == [] and plan.status.podGroup is None


# -- a gang the scheduler could not place ----------------------------------------------------------------


def admitted_gang(
    job: TrainingJob, bound: int, size: int | None = None, group: str | None = None
) -> list[dict[str, Any]]:
    """Gang 0 of `job`, ungated: `bound` pods bound and Running, the rest Pending and Unschedulable."""
    pods = make_gang(job, size=size)
    out = []
    for rank, pod in enumerate(pods):
        role, index = (
            pod["metadata"]["labels"]["loom.ml/role"],
            int(pod["metadata"]["labels"]["loom.ml/replica-index"]),
        )
        if rank >= bound:
            pod = unschedulable(make_pod(job, role, index, phase="Pending", node=None, size=size))
        out.append(in_group(pod, group) if group else pod)
    return out


@pytest.mark.parametrize("group", [pytest.param(None, id="gate"), pytest.param("train-a0", id="podgroup")])
def test_a_partly_bound_gang_is_released_at_once_whatever_the_timeout(group: str | None) -> None:
    """A pod Loom does not create took GPUs between admission and binding: 3 of 4 pods are bound, the
    4th is Unschedulable. The whole gang goes now (not after schedulingTimeoutSeconds), not counted."""
    job, _ = step(make_job(run_policy={"schedulingTimeoutSeconds": 600}), [])
    pods = admitted_gang(job, 3, group=group)
    cluster = make_cluster(pods=pods)
    plan = decide(job, pods, served(cluster) if group else cluster, at(2), [group_of(job)] if group else [])
    assert sorted(d.name for d in plan.delete) == sorted(names(pods))
    assert plan.status.attempt == 1 and plan.status.restartCount == 0 and plan.status.gangTimeouts == 1
    assert plan.status.nextAttemptTime == at(7) and plan.create == []
    restarting = cond(plan, "Restarting")
    assert restarting.reason == "GangUnschedulable"
    assert "the scheduler bound 3 of 4 pods and could not place train-worker-2-a0" in restarting.message
    assert (
        "(pod train-worker-2-a0: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu.)"
        in restarting.message
    )
    assert restarting.message.endswith("the whole gang is released); starting attempt 1; next gang in 5 s")
    gang = cond(plan, "GangScheduled")
    assert (
        gang.status == "False" and gang.reason == "GangUnschedulable" and "next gang in 5 s" in gang.message
    )
    assert plan.restart_reason == "GangUnschedulable"


def test_a_gang_loom_admitted_that_the_scheduler_cannot_place_is_released_even_with_none_bound() -> None:
    """Loom cannot put its gate back: a gang it admitted that the scheduler cannot place would be bound
    piece by piece as GPUs free. It is released and comes back gated."""
    job, _ = step(make_job(), [])
    pods = admitted_gang(job, 0)
    plan = decide(job, pods, make_cluster(pods=pods), at(2))
    assert cond(plan, "Restarting").reason == "GangUnschedulable" and len(plan.delete) == 4


def test_a_podgroup_waiting_whole_is_not_released() -> None:
    job, _ = step(make_job(), [], served(make_cluster()))
    pods = admitted_gang(job, 0, group="train-a0")
    plan = decide(
        job,
        pods,
        served(make_cluster(pods=pods)),
        at(2),
        [group_of(job, scheduled=False, reason="Unschedulable")],
    )
    assert plan.delete == [] and plan.status.attempt == 0
    assert cond(plan, "GangScheduled").reason == "Unschedulable"


def test_pods_unschedulable_behind_another_gate_are_not_admitted_ones() -> None:
    job, _ = step(make_job(), [])
    pods = admitted_gang(job, 3)
    pods[3]["spec"]["schedulingGates"] = [{"name": "kueue.x-k8s.io/admission"}]
    plan = decide(job, pods, make_cluster(pods=pods), at(2))
    assert plan.delete == [] and plan.status.attempt == 0


# -- elastic: shrink to what the cluster holds, grow when it frees -------------------------------------

ELASTIC = {"minReplicas": 2, "maxReplicas": 4}


def elastic_job() -> TrainingJob:
    return make_job(roles={"worker": 1}, elastic=ELASTIC)


@pytest.mark.parametrize("group", [pytest.param(None, id="gate"), pytest.param("train-a0", id="podgroup")])
def test_elastic_partly_bound_restarts_at_the_size_that_was_bound(group: str | None) -> None:
    job, _ = step(elastic_job(), [], make_cluster(make_nodes(4)))
    pods = admitted_gang(job, 3, size=4, group=group)
    cluster = make_cluster(make_nodes(4), pods)
    plan = decide(job, pods, served(cluster) if group else cluster, at(2), [group_of(job)] if group else [])
    assert plan.status.attempt == 1 and plan.status.restartCount == 0 and plan.status.resizes == 1
    assert plan.status.gangTimeouts == 0 and plan.status.nextAttemptTime is None
    assert cond(plan, "Restarting").reason == "ElasticScaleDown"
    assert "the scheduler bound 3 of 4 pods" in cond(plan, "Restarting").message
    assert len(plan.create) == 3 and plan.status.replicas == 3  # the new gang: the size that was bound
    assert plan.create[0]["spec"]["containers"][0]["env"][2] == {"name": "WORLD_SIZE", "value": "24"}


def test_elastic_partly_bound_below_min_is_released() -> None:
    job, _ = step(elastic_job(), [], make_cluster(make_nodes(4)))
    pods = admitted_gang(job, 1, size=4)
    plan = decide(job, pods, make_cluster(make_nodes(4), pods), at(2))
    assert cond(plan, "Restarting").reason == "GangUnschedulable" and plan.status.resizes == 0


def test_elastic_gang_waiting_gated_shrinks_to_what_fits() -> None:
    job, _ = step(elastic_job(), [], make_cluster(make_nodes(4)))  # sized 4 while 4 nodes were free
    pods = make_gang(job, size=4, gated=True, phase="Pending", node=None)
    others = [GpuPod("x", "a", "gpu-0", 8)]  # another job took a node before the gang was admitted
    plan = decide(job, pods, make_cluster(make_nodes(4), pods, others), at(1))
    assert cond(plan, "Restarting").reason == "ElasticScaleDown" and plan.status.resizes == 1
    assert plan.status.replicas == 3 and len(plan.create) == 3 and plan.status.restartCount == 0
    others.append(GpuPod("x", "b", "gpu-1", 8))
    job = with_status(job, plan.status)
    smaller = make_gang(job, 1, size=3, gated=True, phase="Pending", node=None)
    plan = decide(job, smaller, make_cluster(make_nodes(4), smaller, others), at(2))
    assert plan.status.replicas == 2 and plan.status.resizes == 2


def test_elastic_podgroup_the_scheduler_keeps_unschedulable_shrinks() -> None:
    job, _ = step(elastic_job(), [], served(make_cluster(make_nodes(4))))
    pods = [in_group(p, "train-a0") for p in make_gang(job, size=4, phase="Pending", node=None)]
    nodes = make_nodes(4)
    # Loom's count says 4 fit (the scheduler sees what Loom does not): shrink after ELASTIC_SHRINK_AFTER.
    group = [
        group_of(
            job, scheduled=False, reason="Unschedulable", message="pod group is unschedulable", since=at(1)
        )
    ]
    plan = decide(job, pods, served(make_cluster(nodes, pods)), at(3), group)
    assert plan.status.attempt == 0 and plan.requeue_after == pytest.approx(3)
    plan = decide(job, pods, served(make_cluster(nodes, pods)), at(6), group)
    assert cond(plan, "Restarting").reason == "ElasticScaleDown" and plan.status.replicas == 3
    assert [g.name for g in plan.delete_groups] == ["train-a0"]
    assert plan.create_groups[0]["spec"]["schedulingPolicy"] == {"gang": {"minCount": 3}}
    # Loom's count agrees it does not fit: shrink at once, to what fits.
    others = [GpuPod("x", "a", "gpu-0", 8), GpuPod("x", "b", "gpu-1", 8)]
    plan = decide(job, pods, served(make_cluster(nodes, pods, others)), at(2), group)
    assert plan.status.replicas == 2 and "2 fit the free GPUs" in cond(plan, "Restarting").message


def test_elastic_grows_later_after_a_shrink() -> None:
    job, _ = step(elastic_job(), [], make_cluster(make_nodes(4)))
    pods = admitted_gang(job, 3, size=4)
    job, plan = step(job, pods, make_cluster(make_nodes(4), pods), at(2))  # shrunk to 3
    gang = make_gang(job, 1, size=3)
    job, plan = step(job, gang, make_cluster(make_nodes(4), gang), at(3))
    assert is_true(plan, "Running")
    _, plan = step(job, gang, make_cluster(make_nodes(4), gang), at(20))  # 17 s: not yet, after a shrink
    assert plan.create == [] and plan.requeue_after == pytest.approx(13)
    _, plan = step(job, gang, make_cluster(make_nodes(4), gang), at(33))
    assert cond(plan, "Restarting").reason == "ElasticScaleUp" and plan.status.replicas == 4
    assert plan.status.resizes == 2 and plan.status.restartCount == 0


def test_largest_fit_at_1024_replicas_builds_one_gang_and_counts_nodes_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The size of an elastic gang is a count over the nodes, not a search that builds every candidate
    gang (which cost O(max^2) pods, seconds per decision at 1,024, on the shared event loop)."""
    calls = {"desired_pod": 0, "is_eligible": 0}
    for module, name in ((builder, "desired_pod"), (trainingjob_gang, "is_eligible")):
        real = getattr(module, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    import loom.builders.trainingjob_elastic as elastic

    monkeypatch.setattr(elastic, "is_eligible", trainingjob_gang.is_eligible)
    job = make_job(roles={"worker": 1}, elastic={"minReplicas": 1, "maxReplicas": 1024})
    nodes = make_nodes(1100)
    others = [GpuPod("x", f"o{i}", f"gpu-{i}", 8) for i in range(100)]  # 1000 whole nodes free
    plan = decide(job, [], Cluster(nodes=nodes, pods=others), T0)
    assert plan.status.replicas == 1000 and len(plan.create) == 1000 and len(plan.ungate) == 1000
    assert calls["desired_pod"] == 1000, "one gang built: the one created"
    assert calls["is_eligible"] <= 2 * 1100, "each node judged about once for the count, once to admit"
    calls.update(desired_pod=0, is_eligible=0)  # a running gang of 512 deciding whether to grow
    job = make_job(roles={"worker": 1}, elastic={"minReplicas": 1, "maxReplicas": 1024})
    job, _ = step(job, [], Cluster(nodes=make_nodes(512)), T0)
    gang = make_gang(job, size=512)
    job, _ = step(job, gang, make_cluster(make_nodes(512), gang), at(1))
    calls.update(desired_pod=0, is_eligible=0)
    plan = decide(job, gang, make_cluster(make_nodes(512), gang), at(30))
    assert plan.create == [] and calls["desired_pod"] <= 512 and calls["is_eligible"] <= 512


# -- nodes later gangs avoid ---------------------------------------------------------------------------


def test_two_lost_nodes_become_two_requirements_the_api_server_accepts() -> None:
    job, _ = step(make_job(policy="Never", roles={"worker": 2}), [], make_cluster(make_nodes(4)))
    pods = make_gang(job)
    job, _ = step(job, pods, make_cluster(make_nodes(4), pods), at(1))
    nodes = {k: v for k, v in make_nodes(4).items() if k != "gpu-1"}
    job, plan = step(job, pods, make_cluster(nodes, pods), at(5))
    assert plan.status.excludedNodes == ["gpu-1"] and cond(plan, "NodesExcluded").reason == "NodesLost"
    pods = [make_pod(job, "worker", 0, 1, node="gpu-2"), make_pod(job, "worker", 1, 1, node="gpu-3")]
    nodes = {k: v for k, v in nodes.items() if k != "gpu-3"}
    job, plan = step(job, pods, make_cluster(nodes, pods), at(20))
    assert plan.status.excludedNodes == ["gpu-1", "gpu-3"] and plan.status.restartCount == 2
    for pod in plan.create:
        terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        for requirement in terms["nodeSelectorTerms"][0]["matchFields"]:
            assert requirement["operator"] == "NotIn" and len(requirement["values"]) == 1
        assert [r["values"][0] for r in terms["nodeSelectorTerms"][0]["matchFields"]] == ["gpu-1", "gpu-3"]
    assert cond(plan, "NodesExcluded").message.endswith("gpu-1, gpu-3")


def test_excluded_nodes_are_capped_and_the_condition_says_which_are_no_longer_avoided() -> None:
    excluded = [f"old-{i:02d}" for i in range(MAX_EXCLUDED_NODES)]
    job = with_status(
        make_job(policy="Never", roles={"worker": 1}), {"excludedNodes": excluded, "startTime": T0}
    )
    job, _ = step(job, [], make_cluster(make_nodes(2)))
    pods = make_gang(job)
    job, _ = step(job, pods, make_cluster(make_nodes(2), pods), at(1))
    _, plan = step(job, pods, make_cluster({"gpu-1": Node("gpu-1", gpus=8)}, pods), at(5))  # gpu-0 lost
    assert len(plan.status.excludedNodes) == MAX_EXCLUDED_NODES
    assert plan.status.excludedNodes[-1] == "gpu-0" and "old-00" not in plan.status.excludedNodes
    excluded_condition = cond(plan, "NodesExcluded")
    assert excluded_condition.reason == "ExclusionLimitReached"
    assert excluded_condition.message.endswith("no longer avoided: old-00")


def test_status_of_a_waiting_gang_on_the_gate_path_names_its_size() -> None:
    plan: Plan = decide(make_job(), [], make_cluster(make_nodes(3)), T0)
    gang = cond(plan, "GangScheduled")
    assert gang.reason == "WaitingForCapacity"
    assert (
        gang.message == "the gang of 4 pods (32 GPUs) does not fit the free GPUs yet; no pod of it is bound"
    )
