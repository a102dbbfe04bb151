"""TrainingJob gangs are never left partly bound, on both paths: kube-scheduler's gang scheduling (a
PodGroup per gang, where the API server serves scheduling.k8s.io/v1alpha2) and Loom's own gate (where it
does not, as on 1.34). Every test runs on the suite's cluster and on a second local cluster started with
the other setting (e2e/cluster/up.sh, GANG_SCHEDULING), with its own operator; each samples its pods every
second (e2e/gangs.py) and fails if a gang stayed partly bound longer than the scheduler's decision time.

Pods "outside Loom's sight" are created in a namespace the operator does not watch: Loom cannot count
them, as it cannot count a pod that appears between its admission and the scheduler's binding.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.conftest import NAMESPACE_PREFIX
from e2e.gangs import GangSampler
from e2e.pools import POOL_LABEL, Pool, gpu_pool
from e2e.support import ROOT, Operator, apply_yaml, kubectl, wait_established, wait_for
from e2e.test_trainingjob import job_manifest

pytestmark = pytest.mark.timeout(600)
PARTIAL_LIMIT = 2.0  # seconds: the scheduler's own decision time, with one sampling interval of slack


@dataclass
class Side:
    """One of the two clusters: which path it takes, and the operator that acts on it."""

    name: str
    kubeconfig: str
    operator: Operator
    pod_groups: bool

    @property
    def path(self) -> str:
        return "PodGroup" if self.pod_groups else "Gate"


def _serves_pod_groups() -> bool:
    out = kubectl("api-resources", "--api-group=scheduling.k8s.io", "-o", "name")
    return "podgroups.scheduling.k8s.io" in out.split()


@pytest.fixture(scope="module", params=["suite-cluster", "other-cluster"])
def side(
    request: pytest.FixtureRequest,
    kubeconfig: str,
    operator: Operator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Side]:
    served = _serves_pod_groups()
    if request.param == "suite-cluster":
        yield Side(request.param, kubeconfig, operator, served)
        return
    # The other path: a second local cluster with the opposite setting (<name>-nogang without the API).
    env = {**os.environ, "GANG_SCHEDULING": "0" if served else "1"}
    env.pop("LOOM_CLUSTER", None)
    up = subprocess.run(
        [str(ROOT / "e2e" / "cluster" / "up.sh")], env=env, capture_output=True, text=True, timeout=1800
    )
    assert up.returncode == 0, f"the second cluster did not start:\n{up.stderr[-3000:]}"
    other = up.stdout.strip().splitlines()[-1]
    suite = os.environ["KUBECONFIG"]
    os.environ["KUBECONFIG"] = other  # kubectl, pools and namespaces of this module's tests go there
    try:
        assert _serves_pod_groups() is not served
        kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
        wait_established("trainingjobs.loom.ml")
        log = tmp_path_factory.mktemp("other-operator") / "operator.log"
        op = Operator(log, env={"KUBECONFIG": other}, args=["--namespace", f"{NAMESPACE_PREFIX}*"])
        op.start()
        try:
            yield Side(request.param, other, op, not served)
        finally:
            op.stop()
    finally:
        os.environ["KUBECONFIG"] = suite


@pytest.fixture
def unseen(side: Side) -> Iterator[str]:
    """A namespace outside the operator's sight (not matching its --namespace pattern)."""
    name = f"unseen-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    wait_for(
        lambda: kubectl("get", "serviceaccount", "default", "-n", name, check=False).startswith("NAME"),
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


# -- helpers (kubectl only: the module's cluster is the one KUBECONFIG names) ------------------------------
def status(ns: str, name: str) -> dict[str, Any]:
    out = kubectl("get", "trainingjobs.loom.ml", name, "-n", ns, "-o", "json", "--ignore-not-found")
    return (json.loads(out).get("status") or {}) if out.strip() else {}


def condition(ns: str, name: str, type_: str) -> dict[str, Any]:
    return next((c for c in status(ns, name).get("conditions", []) if c["type"] == type_), {})


def job_pods(ns: str, name: str) -> list[dict[str, Any]]:
    out = kubectl("get", "pods", "-n", ns, "-l", f"loom.ml/trainingjob={name}", "-o", "json")
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def running_gang(ns: str, name: str) -> list[dict[str, Any]] | None:
    """The current gang, when the job is Running and every pod of it is Running."""
    st = status(ns, name)
    if st.get("phase") != "Running":
        return None
    gang = [p for p in job_pods(ns, name) if p["metadata"]["labels"]["loom.ml/attempt"] == str(st["attempt"])]
    if len(gang) == st["replicas"] and all(p["status"].get("phase") == "Running" for p in gang):
        return gang
    return None


def wait_running(ns: str, name: str, timeout: float = 40) -> list[dict[str, Any]]:
    return wait_for(lambda: running_gang(ns, name), timeout=timeout, interval=0.1, what=f"{name} Running")


def none_bound(ns: str, name: str) -> bool:
    return not any(p["spec"].get("nodeName") for p in job_pods(ns, name))


def assert_waits_whole(side: Side, ns: str, name: str) -> dict[str, Any]:
    """The job waits with none of its pods bound, and says why in GangScheduled (and Running)."""
    assert none_bound(ns, name), f"{name} has pods bound while it waits"
    gang = condition(ns, name, "GangScheduled")
    expected = {"Unschedulable"} if side.pod_groups else {"WaitingForCapacity"}
    assert gang.get("status") == "False" and gang.get("reason") in expected, gang
    assert condition(ns, name, "Running").get("reason") == gang["reason"]
    if side.pod_groups:
        assert "binds none" in gang["message"] and f"PodGroup {name}-a" in gang["message"], gang
    return gang


def pinned_pod(name: str, node: str, gpus: int = 1, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A GPU pod that is not Loom's (an InferenceService replica, another team's job), on `node`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": "serving"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"key": POOL_LABEL, "operator": "Exists"}],
            "containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": gpus}}}],
        },
    }


def wait_pod_running(ns: str, name: str) -> None:
    wait_for(
        lambda: (
            json.loads(kubectl("get", "pod", name, "-n", ns, "-o", "json"))["status"].get("phase")
            == "Running"
        ),
        timeout=30,
        what=f"pod {name} Running",
    )


def elastic_job(name: str, pool: Pool, low: int, high: int) -> dict[str, Any]:
    return job_manifest(
        name, pool, roles={"worker": 1}, gpus=8, elastic={"minReplicas": low, "maxReplicas": high}
    )


def report(side: Side, gangs: GangSampler, what: str, **figures: float) -> None:
    extra = "".join(f", {k.replace('_', ' ')} {v:.1f} s" for k, v in figures.items())
    print(f"[{side.path} path] {what}: {gangs.check(PARTIAL_LIMIT)}{extra}")


# -- the scenarios --------------------------------------------------------------------------------------
def settled(ns: str, names: list[str]) -> dict[str, str] | None:
    """Each job either Running with its whole gang or waiting with no pod bound and a reason: the
    state of each (GangScheduled's reason), once all are one or the other."""
    out = {}
    for name in names:
        gang = condition(ns, name, "GangScheduled")
        if running_gang(ns, name):
            out[name] = "Running"
        elif gang.get("status") == "False" and gang.get("message") and none_bound(ns, name):
            out[name] = gang["reason"]
        else:
            return None
    return out


def test_demo_scenario_elastic_job_and_serving_pods_in_the_same_second(side: Side, namespace: str) -> None:
    """make demo's race: an elastic job sizing itself while serving pods take one GPU on three of the
    four nodes in the same second, and a rigid 2-node job beside them. Whoever wins each node, no gang is
    left partly bound; the rigid job runs once capacity allows."""
    with gpu_pool(4, prefix="gd") as pool, GangSampler(namespace) as gangs:
        docs = [elastic_job("ranking", pool, 1, 2), job_manifest("dlrm", pool, roles={"worker": 2}, gpus=8)]
        docs += [pinned_pod(f"serving-{i}", pool.nodes[i]) for i in range(3)]
        apply_yaml(docs, namespace)  # one request stream: all within the same second
        time.sleep(3)
        states = wait_for(lambda: settled(namespace, ["ranking", "dlrm"]), 60, what="both jobs settled")
        print(f"[{side.path} path] after the race: {states}")
        assert "Running" in states.values(), states
        freed = time.monotonic()
        kubectl("delete", "pod", "serving-0", "serving-1", "serving-2", "-n", namespace, "--wait=false")
        wait_running(namespace, "dlrm", timeout=30)
        to_running = time.monotonic() - freed
        wait_running(namespace, "ranking", timeout=40)
        if states["dlrm"] != "Running":
            assert to_running < 15, f"dlrm ran {to_running:.1f} s after capacity was freed"
    report(side, gangs, "demo scenario", capacity_freed_to_running=to_running)


def test_two_gangs_competing_for_the_same_nodes(side: Side, namespace: str) -> None:
    with gpu_pool(3, prefix="gc") as pool, GangSampler(namespace) as gangs:
        apply_yaml([job_manifest(n, pool, roles={"worker": 2}, gpus=8) for n in ("left", "right")], namespace)
        first = wait_for(
            lambda: next((n for n in ("left", "right") if running_gang(namespace, n)), None),
            30,
            what="one of the two Running",
        )
        other = "right" if first == "left" else "left"
        wait_for(
            lambda: condition(namespace, other, "GangScheduled").get("reason"), 20, what="the other's reason"
        )
        time.sleep(2)
        assert running_gang(namespace, first), "the first gang stopped running"
        assert_waits_whole(side, namespace, other)
        deleted = time.monotonic()
        kubectl("delete", "trainingjobs.loom.ml", first, "-n", namespace, "--wait=false")
        # Its pods go by the garbage collector (which may take up to its 30 s discovery resync to watch a
        # CRD just installed on a fresh cluster): capacity is freed when they are gone, not before.
        gone = ("get", "pods", "-n", namespace, "-l", f"loom.ml/trainingjob={first}", "-o", "name")
        wait_for(lambda: not kubectl(*gone).strip(), 60, interval=0.1, what=f"{first}'s pods gone")
        freed = time.monotonic()
        wait_running(namespace, other, timeout=30)
        to_running = time.monotonic() - freed
        assert to_running < 15, f"the waiting gang ran {to_running:.1f} s after capacity was freed"
    report(
        side,
        gangs,
        "two gangs",
        job_deleted_to_pods_gone=freed - deleted,
        capacity_freed_to_running=to_running,
    )


def test_foreign_gpu_pod_between_admission_and_binding(side: Side, namespace: str, unseen: str) -> None:
    """A GPU pod Loom cannot count takes a node's GPU: kube-scheduler binds none of the PodGroup and says
    why; where Loom admitted the gang itself, the scheduler binds one pod and cannot place the other, and
    Loom releases the whole gang at once."""
    with gpu_pool(2, prefix="gf") as pool, GangSampler(namespace) as gangs:
        apply_yaml(pinned_pod("intruder", pool.nodes[0], labels={"app": "other-team"}), unseen)
        wait_pod_running(unseen, "intruder")
        started = time.monotonic()
        apply_yaml(job_manifest("pair", pool, roles={"worker": 2}, gpus=8), namespace)
        if side.pod_groups:
            gang = wait_for(
                lambda: (
                    (c := condition(namespace, "pair", "GangScheduled")).get("reason") == "Unschedulable"
                    and c
                ),
                20,
                what="PodGroup Unschedulable",
            )
            assert "Insufficient nvidia.com/gpu" in gang["message"], gang["message"]
            time.sleep(3)
            assert_waits_whole(side, namespace, "pair")
            assert status(namespace, "pair")["podGroup"] == "pair-a0"
            reacted = time.monotonic() - started
        else:
            restarting = wait_for(
                lambda: (
                    (c := condition(namespace, "pair", "Restarting")).get("reason") == "GangUnschedulable"
                    and c
                ),
                20,
                what="the gang released",
            )
            reacted = time.monotonic() - started
            assert "the scheduler bound 1 of 2 pods and could not place pair-worker-" in restarting["message"]
            assert "the whole gang is released" in restarting["message"]
            st = status(namespace, "pair")
            assert st["restartCount"] == 0 and st["gangTimeouts"] >= 1 and not st.get("podGroup")
        kubectl("delete", "pod", "intruder", "-n", unseen, "--wait=false")
        wait_running(namespace, "pair", timeout=40)
    report(side, gangs, "foreign pod", scheduler_verdict_to_status=reacted)


def test_two_lost_nodes_in_a_row(side: Side, namespace: str) -> None:
    with gpu_pool(4, prefix="gl") as pool, GangSampler(namespace) as gangs:
        apply_yaml(job_manifest("nodes", pool, roles={"worker": 2}, gpus=8), namespace)
        lost: list[str] = []
        for attempt in range(3):
            gang = wait_for(
                lambda a=attempt: (
                    (g := running_gang(namespace, "nodes"))
                    and status(namespace, "nodes")["attempt"] == a
                    and g
                ),
                40,
                what=f"attempt {attempt} Running",
            )
            assert not {p["spec"]["nodeName"] for p in gang} & set(lost)
            if attempt == 2:
                break
            lost.append(gang[1]["spec"]["nodeName"])
            kubectl("delete", "node", lost[-1], "--wait=false")
        terms = gang[0]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        fields = terms["nodeSelectorTerms"][0]["matchFields"]
        assert fields == [{"key": "metadata.name", "operator": "NotIn", "values": [n]} for n in sorted(lost)]
        st = status(namespace, "nodes")
        assert st["excludedNodes"] == lost and st["restartCount"] == 2
        excluded = condition(namespace, "nodes", "NodesExcluded")
        assert excluded["reason"] == "NodesLost" and all(n in excluded["message"] for n in lost)
    report(side, gangs, "two lost nodes")


def test_elastic_shrinks_to_what_the_cluster_holds_and_grows_back(
    side: Side, namespace: str, unseen: str
) -> None:
    """An elastic job sized 3 by Loom's count, on 3 nodes of which one GPU is taken by a pod Loom cannot
    see: it restarts at 2 (counted in resizes, not restarts) and grows back to 3 once that GPU is free."""
    with gpu_pool(3, prefix="ge") as pool, GangSampler(namespace) as gangs:
        apply_yaml(pinned_pod("intruder", pool.nodes[0], labels={"app": "other-team"}), unseen)
        wait_pod_running(unseen, "intruder")
        apply_yaml(elastic_job("flex", pool, 1, 3), namespace)
        wait_for(lambda: status(namespace, "flex").get("attempt", 0) >= 1, 30, what="the first gang given up")
        gang = wait_running(namespace, "flex", timeout=40)
        assert len(gang) == 2
        st = status(namespace, "flex")
        assert st["replicas"] == 2 and st["restartCount"] == 0 and st["resizes"] >= 1
        assert condition(namespace, "flex", "Restarting")["message"].startswith("ElasticScaleDown: attempt 0")
        kubectl("delete", "pod", "intruder", "-n", unseen, "--wait=false")
        grown = wait_for(
            lambda: (g := running_gang(namespace, "flex")) and len(g) == 3 and g, 70, what="grown to 3"
        )
        assert grown and status(namespace, "flex")["restartCount"] == 0
        assert condition(namespace, "flex", "Restarting")["message"].startswith("ElasticScaleUp")
    report(side, gangs, "elastic shrink and grow")
