"""Status that GitOps tools read: for live TrainingJobs, InferenceServices and FeaturePipelines in each
phase, the real kstatus library (sigs.k8s.io/cli-utils/pkg/kstatus, what Flux and kubectl-style waiters
use; e2e/kstatus is a tiny Go program around it) says Current when healthy, InProgress while on the way
and Failed when failed; Loom's Argo CD health checks (manifests/argocd, run by a Lua 5.1 as Argo CD runs
them) say Healthy, Progressing, Degraded or Suspended of the same objects; `kubectl wait
--for=condition=Ready` returns for a running TrainingJob and a serving InferenceService.

LOOM_RECORD_ARGOCD=1 writes each object checked here into the health checks' testdata (their
health_test.yaml names what Argo CD must say of them; e2e/test_argocd_health.py replays them).
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from typing import Any

import pytest
import yaml

from e2e.argocd import CUSTOMIZATIONS, health
from e2e.pools import Pool
from e2e.support import ROOT, Operator, apply_yaml, get_cr, kubectl, set_pod_exit, wait_for
from e2e.test_featurepipeline import T0, children, finish, pipeline, summary
from e2e.test_inferenceservice import isvc, start_held_canary, wait_rolled_back, wait_serving
from e2e.test_trainingjob import job_manifest, wait_phase, wait_running

pytestmark = pytest.mark.timeout(300)

KINDS = {
    "trainingjobs": "TrainingJob",
    "inferenceservices": "InferenceService",
    "featurepipelines": "FeaturePipeline",
}


@pytest.fixture(scope="session")
def kstatus_binary() -> str:
    """e2e/kstatus built once per version of its sources (cached under ~/.cache/loom/bin)."""
    built = subprocess.run(
        [str(ROOT / "e2e" / "kstatus" / "build.sh")], capture_output=True, text=True, timeout=900
    )
    assert built.returncode == 0, f"e2e/kstatus/build.sh failed:\n{built.stderr[-4000:]}"
    return built.stdout.strip().splitlines()[-1]


def kstatus(binary: str, obj: dict[str, Any]) -> dict[str, str]:
    out = subprocess.run([binary], input=json.dumps(obj), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    result: dict[str, str] = json.loads(out.stdout.splitlines()[0])
    return result


def observed(plural: str, ns: str, name: str) -> dict[str, Any] | None:
    """The object once the operator has written a status for its current generation."""
    obj = get_cr(plural, ns, name)
    st = (obj or {}).get("status") or {}
    if obj and st.get("observedGeneration") == obj["metadata"]["generation"] and st.get("conditions"):
        return obj
    return None


def record(kind: str, case: str, obj: dict[str, Any]) -> None:
    """The object as Argo CD would read it, into the health check's testdata (LOOM_RECORD_ARGOCD=1)."""
    if not os.environ.get("LOOM_RECORD_ARGOCD"):
        return
    meta = obj["metadata"]
    kept = {k: meta[k] for k in ("name", "generation", "labels", "annotations", "finalizers") if k in meta}
    kept["namespace"] = "default"
    doc = {"apiVersion": obj["apiVersion"], "kind": kind, "metadata": kept, "spec": obj["spec"]}
    doc["status"] = obj["status"]
    path = CUSTOMIZATIONS / "loom.ml" / kind / "testdata" / f"{case}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=120))


def verdicts(
    binary: str, plural: str, ns: str, name: str, want: str, argo: str, case: str, reason: str = ""
) -> dict[str, Any]:
    """Wait until kstatus reads `want` of the object, observed by the operator (so that InProgress is not
    merely "not seen yet"), check Argo CD's health says `argo`; returns the object."""

    def reads() -> tuple[dict[str, Any], dict[str, str]] | None:
        obj = observed(plural, ns, name)
        if obj is None:
            return None
        got = kstatus(binary, obj)
        return (obj, got) if got["status"] == want else None

    kind = KINDS[plural]
    try:
        obj, got = wait_for(reads, 30, what=f"kstatus {want} of {kind} {name}")
    except TimeoutError as timeout:
        obj = get_cr(plural, ns, name) or {}
        said = f"kstatus of {kind} {name}: {kstatus(binary, obj)}; status: {obj.get('status')}"
        raise AssertionError(said) from timeout
    if reason:
        conditions = {c["type"]: c for c in obj["status"]["conditions"]}
        assert conditions[reason]["status"] == "True", conditions
    said = health(kind, obj)
    assert said["status"] == argo, f"Argo CD health of {kind} {name}: {said}, kstatus {got}"
    assert got["message"] and said["message"], (got, said)
    record(kind, case, obj)
    return obj


def kubectl_wait_ready(kind: str, ns: str, name: str) -> None:
    kubectl("wait", "--for=condition=Ready", f"{kind}/{name}", "-n", ns, "--timeout=30s")


def test_trainingjob(operator: Operator, namespace: str, pool: Pool, kstatus_binary: str) -> None:
    ks, ns, tj = kstatus_binary, namespace, "trainingjobs"
    apply_yaml(job_manifest("train", pool, roles={"master": 1, "worker": 1}), ns)
    wait_running(ns, "train", 0, 2)
    kubectl_wait_ready("trainingjob.loom.ml", ns, "train")
    verdicts(ks, tj, ns, "train", "Current", "Healthy", "running")
    set_pod_exit(ns, "train-master-0-a0", 0)
    wait_phase(ns, "train", "Succeeded")
    verdicts(ks, tj, ns, "train", "Current", "Healthy", "succeeded")

    apply_yaml(job_manifest("perm", pool, roles={"master": 1, "worker": 1}), ns)
    wait_running(ns, "perm", 0, 2)
    set_pod_exit(ns, "perm-worker-0-a0", 3)  # a permanent exit code
    wait_phase(ns, "perm", "Failed")
    verdicts(ks, tj, ns, "perm", "Failed", "Degraded", "failed", reason="Stalled")

    paused = job_manifest("paused", pool, roles={"master": 1}, run_policy={"suspend": True})
    apply_yaml(paused, ns)
    wait_phase(ns, "paused", "Suspended")
    verdicts(ks, tj, ns, "paused", "InProgress", "Suspended", "suspended")

    # 3 pods of 8 GPUs on 2 nodes of 8: never placed, the job waits (Reconciling) for as long as it takes.
    apply_yaml(job_manifest("big", pool, roles={"master": 1, "worker": 2}, gpus=8), ns)
    verdicts(ks, tj, ns, "big", "InProgress", "Progressing", "waiting", reason="Reconciling")


def test_inferenceservice(operator: Operator, namespace: str, pool: Pool, kstatus_binary: str) -> None:
    ks, ns, isv = kstatus_binary, namespace, "inferenceservices"
    # A held canary whose model fails to load: rolled back, the old revision serves on; Stalled.
    _, old, pod = start_held_canary(ns, pool)
    verdicts(ks, isv, ns, "ranker", "InProgress", "Progressing", "rolling-out", reason="Reconciling")
    set_pod_exit(ns, pod, 3)  # the sidecar: source unreachable
    wait_rolled_back(ns, old)
    verdicts(ks, isv, ns, "ranker", "Failed", "Degraded", "rolled-back", reason="Stalled")
    kubectl("delete", "inferenceservice", "ranker", "-n", ns, "--wait=true", "--timeout=60s")

    apply_yaml(isvc("served", pool, replicas=1, maxReplicas=40), ns)
    wait_serving(ns, "served", 1)
    kubectl_wait_ready("inferenceservice.loom.ml", ns, "served")
    verdicts(ks, isv, ns, "served", "Current", "Healthy", "serving")
    # More replicas than the pool has GPUs: scaling up, for as long as it takes.
    kubectl("scale", "inferenceservice/served", "-n", ns, "--replicas=40")
    verdicts(ks, isv, ns, "served", "InProgress", "Progressing", "scaling", reason="Reconciling")


def test_featurepipeline(operator: Operator, namespace: str, kstatus_binary: str) -> None:
    ks, ns, fp = kstatus_binary, namespace, "featurepipelines"
    apply_yaml(pipeline("clicks", days=2, parallelism=2), ns)
    jobs = wait_for(lambda: len(c := children(ns, "clicks")) == 2 and c, 30, what="two window Jobs")
    verdicts(ks, fp, ns, "clicks", "InProgress", "Progressing", "backfilling", reason="Reconciling")
    for day, job in enumerate(jobs):
        finish(ns, job["metadata"]["name"], 0, summary(10, T0 + timedelta(days=day + 1)))
    verdicts(ks, fp, ns, "clicks", "Current", "Healthy", "succeeded")

    apply_yaml(pipeline("bad", days=1), ns)
    job = wait_for(lambda: children(ns, "bad"), 30, what="the window Job")[0]
    error = json.dumps({"error": "column dwell_ms is not in source /data/clicks/*.parquet", "exit_code": 65})
    finish(ns, job["metadata"]["name"], 65, error)
    verdicts(ks, fp, ns, "bad", "Failed", "Degraded", "failed", reason="Stalled")

    apply_yaml(pipeline("paused", days=3, suspend=True), ns)
    verdicts(ks, fp, ns, "paused", "InProgress", "Suspended", "suspended")
    assert not children(ns, "paused")


def test_a_spec_not_yet_observed_is_in_progress(
    operator: Operator, namespace: str, kstatus_binary: str
) -> None:
    """A spec change the operator has not observed yet (metadata.generation ahead of
    status.observedGeneration): in progress, whatever the conditions of the last generation say."""
    apply_yaml(pipeline("behind", days=1), namespace)
    obj = wait_for(lambda: observed("featurepipelines", namespace, "behind"), 30, what="observed")
    stale = {**obj, "metadata": {**obj["metadata"], "generation": obj["metadata"]["generation"] + 1}}
    got = kstatus(kstatus_binary, stale)
    assert got["status"] == "InProgress" and "generation" in got["message"], got
    said = health("FeaturePipeline", stale)
    assert said["status"] == "Progressing" and "generation" in said["message"], said
    record("FeaturePipeline", "generation-not-observed", stale)
