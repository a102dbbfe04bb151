"""TrainingJob e2e: gang start, admission, restarts, completion, suspension, elasticity, node loss and
operator crashes, against the real control plane with KWOK pods.

Every test gets its own pool of fake GPU nodes, tainted so that no other suite's pods land there,
and pins its jobs to it: capacity assertions then hold whatever else runs on the shared cluster.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.pools import POOL_LABEL, Pool, gpu_pool
from e2e.support import (
    GROUP,
    VERSION,
    Operator,
    apply_yaml,
    evict_pod,
    get_cr,
    kubectl,
    pods,
    set_node_ready,
    set_pod_exit,
    wait_for,
)

PLURAL = "trainingjobs"


@pytest.fixture
def pool(kubeconfig: str) -> Iterator[Pool]:
    """Four fake nodes with 8 GPUs each, only for this test's jobs."""
    with gpu_pool(4, prefix="tj") as p:
        yield p


def job_manifest(
    name: str,
    pool: Pool,
    *,
    roles: dict[str, int] | None = None,
    gpus: int = 1,
    policy: str = "ExitCode",
    run_policy: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    roles = {"master": 1, "worker": 2} if roles is None else roles
    template = {
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "nodeSelector": {POOL_LABEL: pool.tag},
            "tolerations": [{"key": POOL_LABEL, "operator": "Exists"}],
            "containers": [
                {"name": "trainer", "image": "pytorch", "resources": {"limits": {"nvidia.com/gpu": gpus}}}
            ],
        }
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "replicaSpecs": {
                role: {"replicas": n, "restartPolicy": policy, "template": copy.deepcopy(template)}
                for role, n in roles.items()
            },
            "runPolicy": run_policy or {},
            **spec,
        },
    }


# -- observation helpers ------------------------------------------------------------------------------
def status(ns: str, name: str) -> dict[str, Any]:
    job = get_cr(PLURAL, ns, name)
    return (job or {}).get("status") or {}


def condition(ns: str, name: str, type_: str) -> dict[str, Any]:
    return next((c for c in status(ns, name).get("conditions", []) if c["type"] == type_), {})


def job_pods(ns: str, name: str, attempt: int | None = None) -> list[dict[str, Any]]:
    selector = f"loom.ml/trainingjob={name}" + (f",loom.ml/attempt={attempt}" if attempt is not None else "")
    return sorted(pods(ns, selector), key=lambda p: p["metadata"]["name"])


def running(ns: str, name: str, attempt: int, count: int) -> list[dict[str, Any]] | None:
    found = [p for p in job_pods(ns, name, attempt) if not p["metadata"].get("deletionTimestamp")]
    if len(found) == count and all(p["status"].get("phase") == "Running" for p in found):
        return found
    return None


def wait_running(ns: str, name: str, attempt: int, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        found = running(ns, name, attempt, count)
        return found if found and status(ns, name).get("phase") == "Running" else None

    return wait_for(
        ready, timeout=timeout, what=f"{name}: {count} pods of attempt {attempt} Running, phase Running"
    )


def wait_phase(ns: str, name: str, phase: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(
        lambda: status(ns, name) if status(ns, name).get("phase") == phase else None,
        timeout=timeout,
        what=f"{name} phase {phase}",
    )


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env", [])}


def reasons(ns: str, name: str) -> list[str]:
    out = kubectl("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}", "-o", "json")
    return [e["reason"] for e in json.loads(out)["items"]]


def fail_pod(ns: str, pod: str, code: int) -> None:
    set_pod_exit(ns, pod, code)


# -- the gang -------------------------------------------------------------------------------------------
def test_gang_children_env_service_and_status(operator: Operator, namespace: str, pool: Pool) -> None:
    apply_yaml(job_manifest("mnist", pool, gpus=2, labels={"kueue.x-k8s.io/queue-name": "team-a"}), namespace)
    gang = wait_running(namespace, "mnist", 0, 3)
    assert [p["metadata"]["name"] for p in gang] == [
        "mnist-master-0-a0",
        "mnist-worker-0-a0",
        "mnist-worker-1-a0",
    ]
    for rank, pod in enumerate(gang):
        labels = pod["metadata"]["labels"]
        assert labels["loom.ml/trainingjob"] == "mnist"
        assert labels["app.kubernetes.io/managed-by"] == "loom-operator"
        assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"
        assert not pod["spec"].get("schedulingGates")
        env = env_of(pod)
        assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == f"master-0.mnist.{namespace}.svc"
        assert env["WORLD_SIZE"] == "6" and env["RANK"] == str(2 * rank)
        assert env["PET_NNODES"] == "3" and env["PET_NODE_RANK"] == str(rank)
        assert env["PET_NPROC_PER_NODE"] == env["LOCAL_WORLD_SIZE"] == "2"
        assert pod["spec"]["subdomain"] == "mnist"
    assert {p["spec"]["hostname"] for p in gang} == {"master-0", "worker-0", "worker-1"}
    service = json.loads(kubectl("get", "service", "mnist", "-n", namespace, "-o", "json"))
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"loom.ml/trainingjob": "mnist", "loom.ml/attempt": "0"}
    st = status(namespace, "mnist")
    assert st["replicas"] == 3 and st["readyReplicas"] == 3 and st["observedGeneration"] == 1
    assert st["replicaStatuses"]["worker"]["active"] == 2 and st["startTime"]
    created, run = condition(namespace, "mnist", "Created"), condition(namespace, "mnist", "Running")
    assert created["status"] == "True" and run["status"] == "True" and run["reason"] == "GangRunning"
    assert run["lastTransitionTime"] and run["observedGeneration"] == 1
    row = kubectl("get", "ltj", "mnist", "-n", namespace, "--no-headers").split()
    assert row[:5] == ["mnist", "Running", "3", "3", "0"]
    wait_for(
        lambda: {"JobCreated", "GangCreated", "GangRunning"} <= set(reasons(namespace, "mnist")),
        10,
        what="events",
    )


def test_gang_waits_gated_until_the_whole_gang_fits(operator: Operator, namespace: str, pool: Pool) -> None:
    blocker = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "blocker"},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "nodeSelector": {"kubernetes.io/hostname": pool.nodes[0]},
            "tolerations": [{"key": "loom.ml/e2e-pool", "operator": "Exists"}],
            "containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 1}}}],
        },
    }
    apply_yaml(blocker, namespace)
    wait_for(lambda: pods(namespace, "")[0]["status"].get("phase") == "Running", 30, what="blocker Running")
    # 4 pods x 8 GPUs on 4 nodes of 8, one GPU taken: 31 GPUs free, but no room for the 4th pod.
    apply_yaml(job_manifest("big", pool, roles={"worker": 4}, gpus=8), namespace)
    wait_for(lambda: len(job_pods(namespace, "big")) == 4, 15, what="4 waiting pods")
    time.sleep(2)
    gang = job_pods(namespace, "big")
    assert all(not p["spec"].get("nodeName") for p in gang), "a partial gang was scheduled"
    waiting = condition(namespace, "big", "GangScheduled")
    if status(namespace, "big").get("podGroup"):  # kube-scheduler's gang scheduling: it binds none
        assert all(p["spec"]["schedulingGroup"] == {"podGroupName": "big-a0"} for p in gang)
        assert all(not p["spec"].get("schedulingGates") for p in gang)
        assert waiting["reason"] == "Unschedulable" and "Insufficient nvidia.com/gpu" in waiting["message"]
        group = json.loads(
            kubectl("get", "podgroups.scheduling.k8s.io", "big-a0", "-n", namespace, "-o", "json")
        )
        assert group["spec"]["schedulingPolicy"] == {"gang": {"minCount": 4}}
        assert group["metadata"]["ownerReferences"][0]["name"] == "big"
    else:  # Loom's gate: the gang stays gated
        assert all(p["spec"].get("schedulingGates") == [{"name": "loom.ml/gang"}] for p in gang)
        assert waiting["reason"] == "WaitingForCapacity"
    assert condition(namespace, "big", "Running").get("reason") == waiting["reason"]
    kubectl("delete", "pod", "blocker", "-n", namespace, "--grace-period=0", "--force")
    wait_running(namespace, "big", 0, 4)
    assert sorted(p["spec"]["nodeName"] for p in job_pods(namespace, "big")) == sorted(pool.nodes)


def test_gang_timeout_releases_the_gang_and_retries_with_backoff(
    operator: Operator, namespace: str, pool: Pool
) -> None:
    # 5 x 8 GPUs can never fit 4 nodes of 8: the gang is released after 2 s and retried after 5 s.
    manifest = job_manifest(
        "stuck", pool, roles={"worker": 5}, gpus=8, run_policy={"schedulingTimeoutSeconds": 2}
    )
    apply_yaml(manifest, namespace)
    wait_for(
        lambda: condition(namespace, "stuck", "Restarting").get("reason") == "GangTimeout",
        20,
        what="GangTimeout",
    )
    st = status(namespace, "stuck")
    assert (
        st["attempt"] == 1 and st["restartCount"] == 0 and st["gangTimeouts"] == 1 and st["nextAttemptTime"]
    )
    wait_for(lambda: not job_pods(namespace, "stuck", 0), 10, what="attempt 0 released")
    assert not job_pods(namespace, "stuck", 1), "the next gang came before the backoff"
    wait_for(lambda: len(job_pods(namespace, "stuck", 1)) == 5, 15, what="attempt 1 after the backoff")
    assert all(not p["spec"].get("nodeName") for p in job_pods(namespace, "stuck"))


# -- failures and restarts -------------------------------------------------------------------------------
def test_retryable_failure_restarts_the_gang_until_the_backoff_limit(
    operator: Operator, namespace: str, pool: Pool
) -> None:
    apply_yaml(job_manifest("retry", pool, run_policy={"backoffLimit": 1}), namespace)
    wait_running(namespace, "retry", 0, 3)
    started = time.monotonic()
    fail_pod(namespace, "retry-worker-1-a0", 137)
    gang = wait_running(namespace, "retry", 1, 3)
    restart_seconds = time.monotonic() - started
    assert restart_seconds < 10, f"gang restart took {restart_seconds:.1f} s"
    assert [p["metadata"]["name"] for p in gang] == [
        "retry-master-0-a1",
        "retry-worker-0-a1",
        "retry-worker-1-a1",
    ]
    wait_for(lambda: not job_pods(namespace, "retry", 0), 10, what="attempt 0 pods deleted")
    st = status(namespace, "retry")
    assert st["restartCount"] == 1 and st["attempt"] == 1
    restarting = condition(namespace, "retry", "Restarting")
    assert restarting["status"] == "False" and "exited with code 137" in restarting["message"]
    assert env_of(gang[0])["LOOM_ATTEMPT"] == "1"
    fail_pod(namespace, "retry-master-0-a1", 139)
    st = wait_phase(namespace, "retry", "Failed")
    failed = condition(namespace, "retry", "Failed")
    assert failed["reason"] == "BackoffLimitExceeded" and "retry-master-0-a1" in failed["message"]
    assert st["restartCount"] == 1 and condition(namespace, "retry", "Restarting")["status"] == "False"
    assert "Restarting" in reasons(namespace, "retry")
    time.sleep(1)
    assert status(namespace, "retry")["phase"] == "Failed"
    wait_for(
        lambda: all(p["status"]["phase"] != "Running" for p in job_pods(namespace, "retry")),
        10,
        what="cleanup",
    )


def test_permanent_exit_code_fails_at_once(operator: Operator, namespace: str, pool: Pool) -> None:
    apply_yaml(job_manifest("perm", pool), namespace)
    wait_running(namespace, "perm", 0, 3)
    fail_pod(namespace, "perm-worker-0-a0", 3)
    wait_phase(namespace, "perm", "Failed")
    failed = condition(namespace, "perm", "Failed")
    assert failed["reason"] == "ExitCode"
    assert "pod perm-worker-0-a0 container trainer exited with code 3" in failed["message"]
    assert status(namespace, "perm")["restartCount"] == 0 and status(namespace, "perm")["completionTime"]
    # cleanPodPolicy Running: the still running pods go, the failed one stays for its logs
    wait_for(
        lambda: [p["metadata"]["name"] for p in job_pods(namespace, "perm")] == ["perm-worker-0-a0"],
        15,
        what="cleanup",
    )


def test_eviction_restarts_even_under_never(operator: Operator, namespace: str, pool: Pool) -> None:
    apply_yaml(job_manifest("evict", pool, policy="Never"), namespace)
    wait_running(namespace, "evict", 0, 3)
    evict_pod(namespace, "evict-worker-0-a0")
    wait_running(namespace, "evict", 1, 3)
    assert condition(namespace, "evict", "Restarting")["message"].startswith(
        "Evicted: attempt 0 ended (pod evict-worker-0-a0"
    )
    assert status(namespace, "evict")["restartCount"] == 1


@pytest.mark.parametrize("how", ["deleted", "not-ready"])
def test_lost_node_restarts_the_gang_away_from_it(
    operator: Operator, namespace: str, pool: Pool, how: str
) -> None:
    apply_yaml(job_manifest("nodes", pool, roles={"worker": 2}, gpus=8), namespace)
    gang = wait_running(namespace, "nodes", 0, 2)
    lost = gang[1]["spec"]["nodeName"]
    if how == "deleted":
        kubectl("delete", "node", lost, "--wait=false")
    else:
        set_node_ready(lost, False)
    try:
        new = wait_running(namespace, "nodes", 1, 2)
        assert lost not in {p["spec"]["nodeName"] for p in new}
        terms = new[0]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert {"key": "metadata.name", "operator": "NotIn", "values": [lost]} in terms["nodeSelectorTerms"][
            0
        ]["matchFields"]
        st = status(namespace, "nodes")
        assert st["excludedNodes"] == [lost] and st["restartCount"] == 1
        assert condition(namespace, "nodes", "Restarting")["message"].startswith("NodeLost: attempt 0 ended")
        wait_for(lambda: not job_pods(namespace, "nodes", 0), 15, what="pods on the lost node force-deleted")
    finally:
        if how == "not-ready":
            set_node_ready(lost, True)


# -- completion ------------------------------------------------------------------------------------------
def test_master_success_completes_cleans_up_and_ttl_deletes(
    operator: Operator, namespace: str, pool: Pool
) -> None:
    apply_yaml(job_manifest("done", pool, run_policy={"ttlSecondsAfterFinished": 4}), namespace)
    wait_running(namespace, "done", 0, 3)
    fail_pod(namespace, "done-master-0-a0", 0)
    st = wait_phase(namespace, "done", "Succeeded")
    assert st["completionTime"] and condition(namespace, "done", "Running")["status"] == "False"
    assert condition(namespace, "done", "Succeeded")["reason"] == "JobSucceeded"
    # cleanPodPolicy Running: the workers still running are deleted, the master's pod stays
    left = wait_for(
        lambda: (
            [p for p in job_pods(namespace, "done") if not p["metadata"].get("deletionTimestamp")]
            if all(
                p["status"]["phase"] != "Running" or p["metadata"].get("deletionTimestamp")
                for p in job_pods(namespace, "done")
            )
            else None
        ),
        10,
        what="workers deleted",
    )
    assert [p["metadata"]["name"] for p in left] == ["done-master-0-a0"]
    wait_for(lambda: get_cr(PLURAL, namespace, "done") is None, 15, what="TTL deletion")


def test_active_deadline_fails_the_job(operator: Operator, namespace: str, pool: Pool) -> None:
    apply_yaml(job_manifest("late", pool, run_policy={"activeDeadlineSeconds": 3}), namespace)
    wait_running(namespace, "late", 0, 3)
    wait_phase(namespace, "late", "Failed", timeout=15)
    assert condition(namespace, "late", "Failed")["reason"] == "DeadlineExceeded"
    wait_for(lambda: not job_pods(namespace, "late"), 15, what="pods deleted")


def test_suspend_deletes_pods_and_resume_starts_a_fresh_gang(
    operator: Operator, namespace: str, pool: Pool
) -> None:
    apply_yaml(job_manifest("pause", pool, labels={"kueue.x-k8s.io/queue-name": "q"}), namespace)
    wait_running(namespace, "pause", 0, 3)
    patch = json.dumps({"spec": {"runPolicy": {"suspend": True}}})
    kubectl("patch", "ltj", "pause", "-n", namespace, "--type=merge", "-p", patch)
    wait_phase(namespace, "pause", "Suspended")
    wait_for(lambda: not job_pods(namespace, "pause"), 15, what="pods deleted")
    assert condition(namespace, "pause", "Suspended")["status"] == "True"
    assert status(namespace, "pause").get("startTime") is None
    kubectl("patch", "ltj", "pause", "-n", namespace, "--type=merge", "-p", patch.replace("true", "false"))
    gang = wait_for(
        lambda: running(namespace, "pause", 0, 3) or running(namespace, "pause", 1, 3), 30, what="fresh gang"
    )
    assert gang[0]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "q"
    assert condition(namespace, "pause", "Suspended")["reason"] == "JobResumed"
    wait_phase(namespace, "pause", "Running")


def test_editing_the_pod_spec_restarts_the_gang(operator: Operator, namespace: str, pool: Pool) -> None:
    apply_yaml(job_manifest("edit", pool), namespace)
    wait_running(namespace, "edit", 0, 3)
    patch = {"spec": {"replicaSpecs": {"worker": {"replicas": 3}}, "runPolicy": {"backoffLimit": 7}}}
    kubectl("patch", "ltj", "edit", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    gang = wait_running(namespace, "edit", 1, 4)
    assert env_of(gang[0])["WORLD_SIZE"] == "4"
    st = status(namespace, "edit")
    assert st["restartCount"] == 0 and st["observedGeneration"] == 2
    assert condition(namespace, "edit", "Restarting")["message"].startswith("SpecChanged: attempt 0 ended")


# -- elastic ---------------------------------------------------------------------------------------------
def test_elastic_starts_small_and_grows_as_gpus_free_up(
    operator: Operator, namespace: str, pool: Pool
) -> None:
    blockers = job_manifest("hog", pool, roles={"worker": 2}, gpus=8)
    apply_yaml(blockers, namespace)
    wait_running(namespace, "hog", 0, 2)
    elastic = job_manifest(
        "grow", pool, roles={"worker": 1}, gpus=8, elastic={"minReplicas": 1, "maxReplicas": 3}
    )
    apply_yaml(elastic, namespace)
    gang = wait_running(namespace, "grow", 0, 2)
    env = env_of(gang[0])
    assert env["PET_NNODES"] == "1:3" and env["PET_RDZV_BACKEND"] == "c10d"
    assert env["PET_RDZV_ENDPOINT"] == f"worker-0.grow.{namespace}.svc:29400" and env["PET_RDZV_ID"]
    kubectl("delete", "ltj", "hog", "-n", namespace)
    gang = wait_running(namespace, "grow", 1, 3, timeout=40)  # grows after 10 s of running
    assert env_of(gang[0])["WORLD_SIZE"] == "24"
    assert condition(namespace, "grow", "Restarting")["message"].startswith("ElasticScaleUp: attempt 0")
    assert status(namespace, "grow")["restartCount"] == 0 and status(namespace, "grow")["replicas"] == 3


# -- crash safety and metrics -------------------------------------------------------------------------------
def _invariants(ns: str, name: str, attempt: int, count: int) -> None:
    all_pods = job_pods(ns, name)
    names = [p["metadata"]["name"] for p in all_pods]
    assert len(names) == len(set(names))
    live = [p for p in all_pods if not p["metadata"].get("deletionTimestamp")]
    assert {p["metadata"]["labels"]["loom.ml/attempt"] for p in live} == {str(attempt)}
    assert len(live) == count


def test_operator_killed_mid_creation_and_mid_restart_converges(
    operator: Operator, namespace: str, pool: Pool
) -> None:
    size = 80  # big enough that creating the gang takes a while; CPU-only pods, always admitted
    apply_yaml(job_manifest("crash", pool, roles={"master": 1, "worker": size - 1}, gpus=0), namespace)
    wait_for(lambda: job_pods(namespace, "crash"), 20, interval=0.02, what="first pod")
    operator.kill()  # mid gang creation
    created = len(job_pods(namespace, "crash"))
    operator.start()
    wait_running(namespace, "crash", 0, size, timeout=90)
    _invariants(namespace, "crash", 0, size)
    assert status(namespace, "crash")["restartCount"] == 0
    fail_pod(namespace, "crash-worker-7-a0", 137)
    wait_for(
        lambda: status(namespace, "crash").get("attempt") == 1, 20, interval=0.02, what="restart decided"
    )
    operator.kill()  # mid restart: old pods being deleted, new ones being created
    mid = job_pods(namespace, "crash")
    operator.start()
    wait_running(namespace, "crash", 1, size, timeout=90)
    wait_for(lambda: not job_pods(namespace, "crash", 0), 30, what="old gang gone")
    _invariants(namespace, "crash", 1, size)
    st = status(namespace, "crash")
    assert st["restartCount"] == 1 and st["attempt"] == 1 and st["phase"] == "Running"
    new_at_kill = sum(p["metadata"]["labels"]["loom.ml/attempt"] == "1" for p in mid)
    print(f"at the kills: {created} of {size} pods created; {new_at_kill} of {size} of the new gang")


def test_metrics(operator: Operator, namespace: str, pool: Pool) -> None:
    apply_yaml(job_manifest("metered", pool), namespace)
    wait_running(namespace, "metered", 0, 3)
    fail_pod(namespace, "metered-worker-0-a0", 130)
    wait_running(namespace, "metered", 1, 3)

    def scraped() -> str | None:
        text = operator.metrics()
        count = re.search(r"^loom_trainingjob_restart_to_running_seconds_count (\S+)$", text, re.MULTILINE)
        return text if count and float(count.group(1)) >= 1 else None

    text = wait_for(scraped, 10, what="restart histogram observed")
    assert 'loom_resources{kind="TrainingJob",phase="Running"}' in text
    assert 'loom_trainingjob_restarts_total{reason="ExitCode"}' in text
    assert "loom_trainingjob_create_to_running_seconds_count" in text
    assert 'loom_api_requests_total{kind="Pod",operation="create"}' in text
