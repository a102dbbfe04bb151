"""decide(): the TrainingJob state machine, stepped through time with observed pods as input."""

from __future__ import annotations

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

from loom.api.trainingjob import TrainingJob
from loom.builders.trainingjob_gang import GpuPod, Node
from loom.builders.trainingjob_plan import Cluster, Event, Plan, decide


def names(pods: list[dict[str, Any]]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


def cond(plan: Plan, type_: str) -> Any:
    return next((c for c in plan.status.conditions if c.type == type_), None)


def is_true(plan: Plan, type_: str) -> bool:
    c = cond(plan, type_)
    return c is not None and c.status == "True"


def step(
    job: TrainingJob, pods: list[dict[str, Any]], cluster: Cluster | None = None, now: Any = T0
) -> tuple[TrainingJob, Plan]:
    """Decide, and return the job as it is after the status patch."""
    plan = decide(job, pods, cluster or make_cluster(pods=pods), now)
    return with_status(job, plan.status), plan


def running_job(**kw: Any) -> tuple[TrainingJob, list[dict[str, Any]]]:
    """A job whose first gang has reached Running."""
    job = make_job(**kw)
    job, _ = step(job, [])
    pods = make_gang(job)
    job, plan = step(job, pods, now=at(2))
    assert is_true(plan, "Running")
    return job, pods


# -- creation and admission --------------------------------------------------------------------------


def test_new_job_creates_gated_gang_service_and_admits_when_it_fits() -> None:
    plan = decide(make_job(), [], make_cluster(), T0)
    assert names(plan.create) == [
        "train-master-0-a0",
        "train-worker-0-a0",
        "train-worker-1-a0",
        "train-worker-2-a0",
    ]
    assert all(p["spec"]["schedulingGates"] == [{"name": "loom.ml/gang"}] for p in plan.create)
    assert plan.service is not None and plan.service["spec"]["selector"]["loom.ml/attempt"] == "0"
    assert [n for n, _ in plan.ungate] == names(plan.create)
    assert is_true(plan, "Created")
    assert plan.status.phase == "Created"
    assert plan.status.startTime == T0
    assert plan.status.replicas == 4
    assert [e.reason for e in plan.events] == ["JobCreated", "GangCreated"]
    assert plan.status.observedGeneration == 1 and cond(plan, "Created").observedGeneration == 1


def test_gang_that_does_not_fit_stays_gated_and_waits() -> None:
    plan = decide(make_job(), [], make_cluster(make_nodes(3)), T0)  # 4 pods x 8 GPUs, 3 nodes
    assert len(plan.create) == 4 and plan.ungate == []
    assert plan.waiting_for_capacity
    assert cond(plan, "Running").reason == "WaitingForCapacity"


def test_bin_packing_matters_not_just_the_total() -> None:
    # 32 GPUs free in total, but as 8 x 4: no pod of 8 GPUs fits anywhere.
    plan = decide(make_job(), [], make_cluster(make_nodes(8, gpus=4)), T0)
    assert plan.ungate == [] and plan.waiting_for_capacity


def test_other_pods_and_admitted_pending_pods_take_capacity() -> None:
    others = [GpuPod("x", "a", "gpu-0", 8), GpuPod("x", "b", None, 8)]  # bound, and ungated pending
    plan = decide(make_job(), [], make_cluster(make_nodes(5), others=others), T0)
    assert plan.ungate == []
    others = [
        GpuPod("x", "a", "gpu-0", 8),
        GpuPod("x", "b", None, 8, gated=True),
        GpuPod("x", "c", "gpu-1", 8, terminal=True),
    ]
    plan = decide(make_job(), [], make_cluster(make_nodes(5), others=others), T0)
    assert len(plan.ungate) == 4


def test_crash_mid_creation_creates_only_the_missing_pods() -> None:
    job, _ = step(make_job(), [], make_cluster(make_nodes(0)))  # status recorded, nothing admitted
    pods = [
        make_pod(job, "master", 0, gated=True, phase="Pending"),
        make_pod(job, "worker", 1, gated=True, phase="Pending"),
    ]
    plan = decide(job, pods, make_cluster(pods=pods), at(1))
    assert names(plan.create) == ["train-worker-0-a0", "train-worker-2-a0"]
    assert sorted(n for n, _ in plan.ungate) == sorted(names(plan.create) + names(pods))


def test_ungating_keeps_foreign_gates() -> None:
    job = make_job()
    pods = make_gang(job, gated=True, phase="Pending")
    pods[0]["spec"]["schedulingGates"] = [{"name": "kueue.x-k8s.io/admission"}, {"name": "loom.ml/gang"}]
    plan = decide(job, pods, make_cluster(), T0)
    assert dict(plan.ungate)["train-master-0-a0"] == [{"name": "kueue.x-k8s.io/admission"}]


def test_partially_ungated_gang_admits_the_rest() -> None:
    job = make_job()
    pods = make_gang(job, phase="Pending")
    pods[3]["spec"]["schedulingGates"] = [{"name": "loom.ml/gang"}]
    others = [GpuPod("ns", p["metadata"]["name"], None, 8) for p in pods[:3]]  # admitted, unbound
    plan = decide(job, pods, make_cluster(others=others), T0)
    assert [n for n, _ in plan.ungate] == ["train-worker-2-a0"]


def test_gang_scheduler_gets_ungated_pods_and_no_admission() -> None:
    template = {"spec": {"schedulerName": "volcano", "containers": [{"name": "t", "image": "x"}]}}
    plan = decide(make_job(template=template), [], make_cluster(make_nodes(0)), T0)
    assert len(plan.create) == 4 and plan.ungate == [] and not plan.waiting_for_capacity


def test_gang_running_sets_condition_once() -> None:
    job, _ = step(make_job(), [])
    pods = make_gang(job)
    job, plan = step(job, pods, now=at(3))
    assert is_true(plan, "Running") and plan.status.phase == "Running"
    assert plan.running_after == 3.0
    assert [e.reason for e in plan.events] == ["GangRunning"]
    assert plan.status.readyReplicas == 4
    assert plan.status.replicaStatuses["worker"].active == 3
    _, again = step(job, pods, now=at(4))
    assert again.events == [] and again.create == [] and again.ungate == [] and again.delete == []
    assert again.status == job.status


def test_partly_running_gang_is_not_running() -> None:
    job, _ = step(make_job(), [])
    pods = make_gang(job)
    pods[2] = make_pod(job, "worker", 1, phase="Pending", node="gpu-2")
    _, plan = step(job, pods, now=at(3))
    assert not is_true(plan, "Running")


# -- failures and restarts ---------------------------------------------------------------------------


def test_retryable_failure_restarts_the_whole_gang() -> None:
    job, pods = running_job(policy="ExitCode")
    pods[2] = make_pod(job, "worker", 1, phase="Failed", exit_code=137, node="gpu-2")
    _, plan = step(job, pods, now=at(10))
    assert plan.status.attempt == 1 and plan.status.restartCount == 1
    assert sorted(d.name for d in plan.delete) == sorted(names(pods))
    assert names(plan.create) == [n.replace("-a0", "-a1") for n in names(pods)]
    assert plan.ungate == []  # the old gang still holds the GPUs
    assert is_true(plan, "Restarting") and not is_true(plan, "Running")
    assert cond(plan, "Restarting").reason == "ExitCode"
    assert "train-worker-1-a0 container trainer exited with code 137" in cond(plan, "Restarting").message
    assert plan.status.phase == "Restarting"
    assert plan.restart_reason == "ExitCode"
    assert [e.reason for e in plan.events] == ["Restarting", "GangCreated"]
    assert plan.service is not None and plan.service["spec"]["selector"]["loom.ml/attempt"] == "1"


def test_restart_admits_once_old_pods_are_gone_and_running_clears_restarting() -> None:
    job, pods = running_job()
    pods[1] = make_pod(job, "worker", 0, phase="Failed", exit_code=1, node="gpu-1")
    job, plan = step(job, pods, now=at(10))
    new = [make_pod(job, "master", 0, 1, gated=True, phase="Pending")]
    new += [make_pod(job, "worker", i, 1, gated=True, phase="Pending") for i in range(3)]
    job, plan = step(job, new, now=at(11))  # old pods gone: the gang fits
    assert len(plan.ungate) == 4 and plan.create == [] and plan.delete == []
    running = make_gang(job, 1, created=at(10.5))
    job, plan = step(job, running, now=at(12))
    assert is_true(plan, "Running") and not is_true(plan, "Restarting")
    assert plan.status.phase == "Running"
    assert plan.running_after == 1.5


def test_permanent_failure_fails_at_once_naming_pod_container_and_code() -> None:
    job, pods = running_job(policy="ExitCode")
    pods[3] = make_pod(job, "worker", 2, phase="Failed", exit_code=2, node="gpu-3")
    _, plan = step(job, pods, now=at(10))
    failed = cond(plan, "Failed")
    assert failed.status == "True" and failed.reason == "ExitCode"
    assert failed.message.startswith("pod train-worker-2-a0 container trainer exited with code 2")
    assert "restartPolicy ExitCode" in failed.message
    assert plan.status.phase == "Failed" and plan.status.completionTime == at(10)
    assert plan.create == [] and plan.status.attempt == 0
    assert sorted(d.name for d in plan.delete) == sorted(names(pods[:3]))  # cleanPodPolicy Running
    assert not is_true(plan, "Running") and not is_true(plan, "Restarting")


def test_permanent_wins_over_retryable_in_the_same_gang() -> None:
    job, pods = running_job(policy="ExitCode")
    pods[1] = make_pod(job, "worker", 0, phase="Failed", exit_code=137, node="gpu-1")
    pods[2] = make_pod(job, "worker", 1, phase="Failed", exit_code=1, node="gpu-2")
    _, plan = step(job, pods, now=at(10))
    assert is_true(plan, "Failed") and "train-worker-1-a0" in cond(plan, "Failed").message


def test_backoff_limit_fails_the_job_and_restarting_does_not_stick() -> None:
    job, pods = running_job(run_policy={"backoffLimit": 1})
    pods[1] = make_pod(job, "worker", 0, phase="Failed", exit_code=1, node="gpu-1")
    job, plan = step(job, pods, now=at(10))
    assert plan.status.restartCount == 1 and is_true(plan, "Restarting")
    pods = make_gang(job, 1)
    pods[1] = make_pod(job, "worker", 0, 1, phase="Failed", exit_code=1, node="gpu-1")
    job, plan = step(job, pods, now=at(20))
    assert is_true(plan, "Failed") and cond(plan, "Failed").reason == "BackoffLimitExceeded"
    assert "backoffLimit 1 reached" in cond(plan, "Failed").message
    assert not is_true(plan, "Restarting") and plan.status.phase == "Failed"
    assert plan.status.restartCount == 1
    # and it stays Failed: later observations change nothing
    _, later = step(job, [], now=at(30))
    assert later.status == job.status and later.create == [] and later.events == []


@pytest.mark.parametrize(
    "nodes",
    [
        pytest.param(make_nodes(6, gpus=8) | {"gpu-2": Node("gpu-2", ready=False, gpus=8)}, id="not-ready"),
        pytest.param({k: v for k, v in make_nodes(6).items() if k != "gpu-2"}, id="deleted"),
    ],
)
def test_lost_node_restarts_and_the_next_gang_avoids_it(nodes: dict[str, Node]) -> None:
    job, pods = running_job(policy="Never")
    _, plan = step(job, pods, make_cluster(nodes, pods), now=at(10))
    assert plan.status.restartCount == 1 and cond(plan, "Restarting").reason == "NodeLost"
    assert plan.status.excludedNodes == ["gpu-2"]
    lost = next(d for d in plan.delete if d.name == "train-worker-1-a0")
    assert lost.force and not any(d.force for d in plan.delete if d is not lost)
    for pod in plan.create:
        terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["gpu-2"]


def test_evicted_pod_restarts_even_under_never() -> None:
    job, pods = running_job(policy="Never")
    pods[1] = make_pod(job, "worker", 0, phase="Failed", pod_reason="Evicted", exit_code=137, node="gpu-1")
    _, plan = step(job, pods, now=at(10))
    assert cond(plan, "Restarting").reason == "Evicted" and plan.status.restartCount == 1


def test_pod_deleted_from_a_running_gang_restarts_it() -> None:
    job, pods = running_job(policy="ExitCode")
    _, plan = step(job, pods[:3], now=at(10))  # worker-2 vanished
    assert cond(plan, "Restarting").reason == "PodDeleted"
    pods[3] = make_pod(job, "worker", 2, deleting=True, node="gpu-3", exit_code=1)
    _, plan = step(job, pods, now=at(10))  # being deleted by someone else, exits 1 on SIGTERM
    assert cond(plan, "Restarting").reason == "PodDeleted"


def test_crash_after_the_restart_status_patch_does_not_restart_twice() -> None:
    job, pods = running_job()
    pods[1] = make_pod(job, "worker", 0, phase="Failed", exit_code=1, node="gpu-1")
    job, _ = step(job, pods, now=at(10))  # status patched, then the operator died
    plan = decide(job, pods, make_cluster(pods=pods), at(15))  # the old gang is still there
    assert sorted(d.name for d in plan.delete) == sorted(names(pods))
    assert names(plan.create) == [n.replace("-a0", "-a1") for n in names(pods)]
    assert plan.status.restartCount == 1 and plan.status.attempt == 1
    assert plan.events == [Event("Normal", "GangCreated", "creating 4 pods of attempt 1")]


def test_changing_the_pod_spec_restarts_the_gang_without_counting() -> None:
    job, pods = running_job(gpus=8)
    changed = job.model_copy(deep=True)
    changed.spec.replicaSpecs["worker"].replicas = 4
    _, plan = step(changed, pods, now=at(10))
    assert cond(plan, "Restarting").reason == "SpecChanged"
    assert plan.status.restartCount == 0 and plan.status.attempt == 1
    assert len(plan.create) == 5 and len(plan.delete) == 4
    relaxed = job.model_copy(deep=True)
    relaxed.spec.runPolicy.backoffLimit = 10
    _, plan = step(relaxed, pods, now=at(10))
    assert plan.create == [] and plan.delete == []


def test_a_job_being_deleted_gets_no_new_pods() -> None:
    job = make_job()
    job.metadata["deletionTimestamp"] = T0.isoformat()
    plan = decide(job, [], make_cluster(), T0)
    assert plan.create == [] and plan.events == [] and plan.status.conditions == []


# -- gang timeout -------------------------------------------------------------------------------------


def test_gang_not_running_in_time_is_released_and_retried_with_backoff() -> None:
    job = make_job(run_policy={"schedulingTimeoutSeconds": 60})
    job, _ = step(job, [], make_cluster(make_nodes(0)))
    pods = make_gang(job, phase="Pending", gated=True)
    job, plan = step(job, pods, make_cluster(make_nodes(0)), at(30))
    assert plan.delete == [] and plan.requeue_after == 30
    job, plan = step(job, pods, make_cluster(make_nodes(0)), at(60))
    assert sorted(d.name for d in plan.delete) == sorted(names(pods))
    assert plan.create == [] and plan.status.attempt == 1 and plan.status.restartCount == 0
    assert cond(plan, "Restarting").reason == "GangTimeout" and plan.status.gangTimeouts == 1
    assert plan.status.nextAttemptTime == at(65) and plan.requeue_after == 5
    _, plan = step(job, [], make_cluster(make_nodes(0)), at(63))
    assert plan.create == []
    job, plan = step(job, [], make_cluster(make_nodes(0)), at(65))
    assert len(plan.create) == 4 and plan.status.nextAttemptTime is None
    pods = make_gang(job, 1, phase="Pending", gated=True, created=at(65))
    job, plan = step(job, pods, make_cluster(make_nodes(0)), at(125))
    assert plan.status.gangTimeouts == 2 and plan.status.nextAttemptTime == at(135)  # backoff doubles


def test_running_resets_the_gang_timeout_backoff() -> None:
    job = make_job()
    job = with_status(job, {"attempt": 3, "gangTimeouts": 2, "startTime": T0})
    _, plan = step(job, make_gang(job, 3), now=at(1))
    assert is_true(plan, "Running") and plan.status.gangTimeouts == 0


# -- completion ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "deleted"),
    [
        pytest.param(
            "Running", ["train-worker-0-a0", "train-worker-1-a0", "train-worker-2-a0"], id="running"
        ),
        pytest.param(
            "All",
            ["train-master-0-a0", "train-worker-0-a0", "train-worker-1-a0", "train-worker-2-a0"],
            id="all",
        ),
        pytest.param("None", [], id="none"),
    ],
)
def test_master_success_completes_the_job_and_cleans_pods(policy: str, deleted: list[str]) -> None:
    job, pods = running_job(run_policy={"cleanPodPolicy": policy})
    pods[0] = make_pod(job, "master", 0, phase="Succeeded", exit_code=0, node="gpu-0")
    _, plan = step(job, pods, now=at(100))
    assert is_true(plan, "Succeeded") and plan.status.phase == "Succeeded"
    assert plan.status.completionTime == at(100)
    assert sorted(d.name for d in plan.delete) == deleted
    assert plan.status.replicaStatuses["master"].succeeded == 1


def test_without_master_every_replica_must_succeed() -> None:
    job, pods = running_job(roles={"worker": 2})
    pods[0] = make_pod(job, "worker", 0, phase="Succeeded", exit_code=0)
    _, plan = step(job, pods, now=at(10))
    assert not is_true(plan, "Succeeded")
    pods[1] = make_pod(job, "worker", 1, phase="Succeeded", exit_code=0)
    _, plan = step(job, pods, now=at(11))
    assert is_true(plan, "Succeeded")


def test_success_beats_workers_failing_after_the_master_exits() -> None:
    job, pods = running_job(policy="ExitCode")
    pods[0] = make_pod(job, "master", 0, phase="Succeeded", exit_code=0)
    pods[1] = make_pod(job, "worker", 0, phase="Failed", exit_code=1, node="gpu-1")
    _, plan = step(job, pods, now=at(10))
    assert is_true(plan, "Succeeded") and not is_true(plan, "Failed")


def test_ttl_after_finished_deletes_the_job() -> None:
    job, pods = running_job(run_policy={"ttlSecondsAfterFinished": 30, "cleanPodPolicy": "None"})
    pods[0] = make_pod(job, "master", 0, phase="Succeeded", exit_code=0)
    job, plan = step(job, pods, now=at(100))
    assert not plan.delete_job and plan.requeue_after == 30
    _, plan = step(job, pods, now=at(129))
    assert not plan.delete_job and plan.requeue_after == pytest.approx(1)
    _, plan = step(job, pods, now=at(130))
    assert plan.delete_job


def test_active_deadline_fails_the_job_and_stops_its_pods_whatever_the_clean_policy() -> None:
    job, pods = running_job(run_policy={"activeDeadlineSeconds": 50, "cleanPodPolicy": "None"})
    _, plan = step(job, pods, now=at(20))
    assert plan.requeue_after == 30
    _, plan = step(job, pods, now=at(50))
    assert cond(plan, "Failed").reason == "DeadlineExceeded"
    assert len(plan.delete) == 4


def test_invalid_name_fails_with_a_message() -> None:
    plan = decide(make_job("Bad.Name"), [], make_cluster(), T0)
    assert cond(plan, "Failed").reason == "InvalidSpec"
    assert "DNS-1035" in cond(plan, "Failed").message and plan.create == []


# -- suspend / resume ------------------------------------------------------------------------------


def test_suspend_deletes_pods_and_resume_starts_a_fresh_gang() -> None:
    job, pods = running_job(labels={"kueue.x-k8s.io/queue-name": "q"})
    suspended = job.model_copy(deep=True)
    suspended.spec.runPolicy.suspend = True
    job2, plan = step(suspended, pods, now=at(10))
    assert sorted(d.name for d in plan.delete) == sorted(names(pods))
    assert is_true(plan, "Suspended") and plan.status.phase == "Suspended"
    assert not is_true(plan, "Running") and plan.status.startTime is None
    assert plan.create == []
    _, again = step(job2, [], now=at(11))
    assert again.create == [] and again.events == []
    resumed = job2.model_copy(deep=True)
    resumed.spec.runPolicy.suspend = False
    terminating = [make_pod(job, "master", 0, deleting=True)]
    _, plan = step(resumed, terminating, now=at(20))
    assert cond(plan, "Suspended").status == "False" and cond(plan, "Suspended").reason == "JobResumed"
    assert plan.status.attempt == 1 and plan.status.startTime == at(20)
    assert names(plan.create)[0] == "train-master-0-a1"
    assert plan.create[0]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "q"
    assert "JobResumed" in [e.reason for e in plan.events]


def test_created_suspended_creates_nothing() -> None:
    plan = decide(make_job(run_policy={"suspend": True}), [], make_cluster(), T0)
    assert plan.create == [] and is_true(plan, "Suspended") and plan.status.phase == "Suspended"


# -- elastic -----------------------------------------------------------------------------------------

ELASTIC = {"minReplicas": 2, "maxReplicas": 4}


def test_elastic_starts_with_what_fits() -> None:
    plan = decide(make_job(roles={"worker": 1}, elastic=ELASTIC), [], make_cluster(make_nodes(3)), T0)
    assert len(plan.create) == 3 and plan.status.replicas == 3 and len(plan.ungate) == 3


def test_elastic_waits_for_min() -> None:
    plan = decide(make_job(roles={"worker": 1}, elastic=ELASTIC), [], make_cluster(make_nodes(1)), T0)
    assert len(plan.create) == 2 and plan.ungate == [] and plan.waiting_for_capacity


def test_elastic_grows_by_restarting_with_more_replicas_after_a_while() -> None:
    job = make_job(roles={"worker": 1}, elastic=ELASTIC)
    job, plan = step(job, [], make_cluster(make_nodes(2)))
    pods = make_gang(job, size=2)
    job, plan = step(job, pods, make_cluster(make_nodes(2), pods), at(1))
    assert is_true(plan, "Running") and plan.status.replicas == 2
    _, plan = step(job, pods, make_cluster(make_nodes(4), pods), at(5))  # capacity grew, too soon
    assert plan.create == [] and plan.requeue_after == 6
    _, plan = step(job, pods, make_cluster(make_nodes(2), pods), at(20))  # no capacity
    assert plan.create == [] and plan.waiting_for_capacity
    job, plan = step(job, pods, make_cluster(make_nodes(4), pods), at(20))
    assert cond(plan, "Restarting").reason == "ElasticScaleUp"
    assert plan.status.restartCount == 0 and plan.status.attempt == 1
    assert len(plan.create) == 4 and plan.status.replicas == 4
    assert plan.create[0]["spec"]["containers"][0]["env"][5] == {"name": "PET_NNODES", "value": "2:4"}


def test_decide_is_deterministic() -> None:
    job, pods = running_job()
    a = decide(job, pods, make_cluster(pods=pods), at(5))
    b = decide(job, list(reversed(pods)), make_cluster(pods=pods), at(5))
    assert a == b
