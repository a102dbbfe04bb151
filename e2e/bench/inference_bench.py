"""InferenceService benchmark on the local cluster (real control plane, KWOK pods).

1. Autoscaler reaction: from a 10x load step (in-flight requests seen by the pods' /metrics) to the
   scale subresource updated (spec.replicas written), with Knative's default windows (60 s stable,
   6 s panic). References: Knative KPA's 6 s panic window, HPA's 15 s sync period.
2. Rollout: from `kubectl apply` of a new revision to its canary pod Ready with the model Loaded
   (sidecar started), as seen on the pod and as reported in the InferenceService's status.

Usage: python e2e/bench/inference_bench.py [--trials N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from e2e.support import LOOM_HOME, Operator, apply_yaml, core, get_cr, kubectl  # noqa: E402
from e2e.test_inferenceservice import isvc, status, with_image  # noqa: E402
from e2e.test_inferenceservice_autoscaling import LoadServer  # noqa: E402


def cluster() -> str:
    named = os.environ.get("LOOM_E2E_KUBECONFIG")
    if named:
        return named
    out = subprocess.run([str(ROOT / "e2e/cluster/up.sh")], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def poll(fn: Any, timeout: float = 60.0, interval: float = 0.02) -> float:
    """Monotonic time at which fn() first returned truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError(f"{fn} not true within {timeout}s")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50": round(statistics.median(ordered), 3),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3),
        "max": round(ordered[-1], 3),
        "min": round(ordered[0], 3),
    }


def replicas(ns: str, name: str) -> int:
    obj = get_cr("inferenceservices", ns, name) or {}
    return int(obj.get("spec", {}).get("replicas") or 0)


def bench_load_step(ns: str, load: LoadServer, trials: int) -> dict[str, Any]:
    to_scale, to_ready = [], []
    scaling = {"autoscaler": "loom", "metric": "concurrency", "target": 10}  # Knative's windows: 60 s / 6 s
    for i in range(trials):
        name = f"step-{i}"
        load.demand[(ns, name)] = 8.0
        apply_yaml(isvc(name, replicas=1, minReplicas=1, maxReplicas=20, scaling=scaling), ns)
        poll(lambda n=name: status(ns, n).get("readyReplicas") == 1, timeout=30)
        poll(
            lambda n=name: any(
                c["type"] == "ScalingActive" and c["status"] == "True"
                for c in status(ns, n).get("conditions", [])
            ),
            timeout=30,
        )
        time.sleep(6.5)  # a full panic window of steady samples
        assert replicas(ns, name) == 1
        load.demand[(ns, name)] = 80.0
        start = time.monotonic()
        scaled = poll(lambda n=name: replicas(ns, n) > 1, timeout=30)
        ready = poll(lambda n=name: status(ns, n).get("readyReplicas", 0) >= 8, timeout=30)
        to_scale.append(scaled - start)
        to_ready.append(ready - start)
        print(f"  load step {i}: scaled after {scaled - start:.2f}s, 8 Ready after {ready - start:.2f}s")
        kubectl("delete", "lis", name, "-n", ns, "--wait=false")
    return {"to_scale_subresource_s": summary(to_scale), "to_8_pods_ready_s": summary(to_ready)}


def canary_pod_loaded_and_ready(ns: str, revision: str) -> bool:
    pods = core().list_namespaced_pod(ns, label_selector=f"loom.ml/revision={revision}").items
    return any(
        any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        and any(c.name == "loom-sidecar" and c.started for c in p.status.init_container_statuses or [])
        for p in pods
    )


def status_reports_canary(ns: str, revision: str) -> bool:
    items = status(ns, "canary").get("revisions", {}).get("items", [])
    return any(
        r["name"] == revision and r["readyReplicas"] >= 1 and r["modelState"] == "Loaded" for r in items
    )


def bench_canary(ns: str, trials: int) -> dict[str, Any]:
    doc = isvc("canary", replicas=2, canary={"trafficPercent": 50, "promoteAfterSeconds": 3600})
    apply_yaml(doc, ns)
    poll(lambda: status(ns, "canary").get("phase") == "Ready", timeout=30)
    pod_ready, status_ready = [], []
    for i in range(trials):
        old = status(ns, "canary").get("revisions", {}).get("latestCreated")
        text = yaml.safe_dump(with_image(doc, f"ghcr.io/loom-ml/ranker-server:bench-{i}"))
        start = time.monotonic()
        kubectl("apply", "--server-side", "--field-manager=e2e", "-n", ns, "-f", "-", input=text)
        poll(lambda o=old: status(ns, "canary").get("revisions", {}).get("latestCreated") not in (None, o))
        revision = status(ns, "canary")["revisions"]["latestCreated"]
        seen = poll(lambda r=revision: canary_pod_loaded_and_ready(ns, r), timeout=30)
        shown = poll(lambda r=revision: status_reports_canary(ns, r), timeout=30)
        pod_ready.append(seen - start)
        status_ready.append(shown - start)
        print(
            f"  canary {i}: pod Ready+Loaded after {seen - start:.2f}s, in status after {shown - start:.2f}s"
        )
    return {
        "apply_to_canary_pod_ready_loaded_s": summary(pod_ready),
        "apply_to_status_reports_it_s": summary(status_ready),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--out", default=str(LOOM_HOME / "bench" / "inference_bench.json"))
    args = parser.parse_args()
    os.environ["KUBECONFIG"] = cluster()
    kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds/loom.ml_inferenceservices.yaml")
    )
    kubectl("wait", "--for=condition=Established", "crd/inferenceservices.loom.ml", "--timeout=60s")
    load = LoadServer()
    log = Path(tempfile.mkdtemp()) / "operator.log"
    ns = f"bench-isvc-{uuid.uuid4().hex[:6]}"
    env = {"KUBECONFIG": os.environ["KUBECONFIG"], "LOOM_METRICS_URL_TEMPLATE": load.template}
    operator = Operator(log, env=env, args=["--namespace", ns])  # never touches other sessions' objects
    kubectl("create", "namespace", ns)
    operator.start()
    try:
        print(f"autoscaler: 10x load step -> scale subresource ({args.trials} trials)")
        step = bench_load_step(ns, load, args.trials)
        print(f"rollout: kubectl apply -> canary Ready with model Loaded ({args.trials} trials)")
        canary = bench_canary(ns, args.trials)
    finally:
        kubectl("delete", "namespace", ns, "--wait=false")
        time.sleep(3)  # let the operator release its finalizers
        operator.stop()
        load.stop()
    results = {
        "cluster": "local: kube-apiserver/controller-manager/scheduler v1.36 + KWOK pods",
        "autoscaler_load_step": step,
        "canary_rollout": canary,
        "references_s": {"knative_kpa_panic_window": 6, "hpa_sync_period": 15},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
