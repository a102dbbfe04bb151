"""TrainingJob benchmark: N jobs x M workers on K fake GPU nodes, against a real control plane.

Starts its own KWOK cluster (`loom-bench`, next to the e2e one, never resizing it) with K GPU nodes
unless --kubeconfig names one, installs the CRDs, runs `loom run` as a subprocess, and reports:
  - create-to-all-Running seconds per job (p50/p99) and the time from the last create to all Running
  - pods created per second (pod ADDED events seen by a watch)
  - API requests per job (the operator's loom_api_requests_total / N)
  - operator peak RSS (VmHWM)
  - gang-restart latency: one worker exits 137 -> every pod of the next attempt Running (p50/p99)
Prints figures; it is not a pass/fail test.

    .venv/bin/python e2e/bench/training_bench.py --jobs 200 --workers 8 --nodes 200
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from e2e.support import Operator  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402

LOOM_HOME = Path(os.environ.get("LOOM_HOME", Path.home() / ".cache" / "loom"))
KUBECTL = str(LOOM_HOME / "bin" / "kubectl")
NS = "bench"
GROUP, VERSION, PLURAL = "loom.ml", "v1alpha1", "trainingjobs"


def start_cluster(nodes: int) -> str:
    """A separate KWOK cluster for the bench: its own LOOM_HOME (sharing the built binaries)."""
    home = Path("/tmp/loom-bench-home")
    home.mkdir(exist_ok=True)
    if not (home / "bin").exists():
        (home / "bin").symlink_to(LOOM_HOME / "bin")
    env = {**os.environ, "LOOM_HOME": str(home), "LOOM_CLUSTER": "loom-bench"}
    env |= {"GPU_NODES": str(nodes), "CPU_NODES": "0", "GPUS_PER_NODE": "8"}
    out = subprocess.run(
        [str(ROOT / "e2e" / "cluster" / "up.sh")], env=env, capture_output=True, text=True, timeout=1800
    )
    if out.returncode != 0:
        raise SystemExit(f"bench cluster failed to start:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


def stop_cluster() -> None:
    env = {**os.environ, "LOOM_HOME": "/tmp/loom-bench-home", "LOOM_CLUSTER": "loom-bench"}
    subprocess.run([str(ROOT / "e2e" / "cluster" / "down.sh")], env=env, capture_output=True, timeout=300)


def kubectl(*args: str, input: str | None = None) -> str:
    out = subprocess.run([KUBECTL, *args], input=input, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr}")
    return out.stdout


def job(name: str, workers: int, grace: int) -> dict[str, Any]:
    template = {
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "containers": [
                {"name": "trainer", "image": "pytorch", "resources": {"limits": {"nvidia.com/gpu": 1}}}
            ],
        }
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "replicaSpecs": {
                "master": {"replicas": 1, "restartPolicy": "ExitCode", "template": template},
                "worker": {"replicas": workers - 1, "restartPolicy": "ExitCode", "template": template},
            },
            "runPolicy": {"backoffLimit": 100},
        },
    }


class PodWatch:
    """Every bench pod's phase, from one watch (raw JSON, no model deserialisation)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pods: dict[str, tuple[str, int, str, bool]] = {}  # name -> (job, attempt, phase, deleting)
        self.added: list[float] = []
        self.changed = threading.Condition(self.lock)
        self.closed = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def close(self) -> None:
        """Stop watching (before the cluster goes away)."""
        self.closed.set()

    def _run(self) -> None:
        v1 = client.CoreV1Api()
        while not self.closed.is_set():
            try:
                for event in watch.Watch().stream(
                    v1.list_namespaced_pod, NS, label_selector="loom.ml/trainingjob", deserialize=False
                ):
                    self._apply(json.loads(event) if isinstance(event, str) else event)
                    if self.closed.is_set():
                        return
            except Exception as e:  # the watch expires or the connection drops: resume
                if self.closed.is_set():
                    return
                print(f"watch restarted: {e}", file=sys.stderr)
                time.sleep(0.2)

    def _apply(self, event: dict[str, Any]) -> None:
        pod = event["object"]
        meta = pod["metadata"]
        labels = meta.get("labels", {})
        with self.lock:
            if event["type"] == "DELETED":
                self.pods.pop(meta["name"], None)
            else:
                if event["type"] == "ADDED" and meta["name"] not in self.pods:
                    self.added.append(time.monotonic())
                entry = (
                    labels["loom.ml/trainingjob"],
                    int(labels.get("loom.ml/attempt", 0)),
                    pod.get("status", {}).get("phase", ""),
                    bool(meta.get("deletionTimestamp")),
                )
                self.pods[meta["name"]] = entry
            self.changed.notify_all()

    def running(self) -> dict[tuple[str, int], int]:
        counts: dict[tuple[str, int], int] = {}
        with self.lock:
            for name, attempt, phase, deleting in self.pods.values():
                if phase == "Running" and not deleting:
                    counts[(name, attempt)] = counts.get((name, attempt), 0) + 1
        return counts

    def wait(self, predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.5))
        return True

    def attempt_running(self, job_name: str, attempt: int, count: int) -> bool:
        n = 0
        for name, a, phase, deleting in self.pods.values():  # caller holds the lock
            if name == job_name and a == attempt and phase == "Running" and not deleting:
                n += 1
        return n == count


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def metric_sum(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def requests_by_operation(before: str, after: str, jobs: int) -> str:
    pattern = re.compile(r'^loom_api_requests_total{kind="(\w+)",operation="(\w+)"} (\S+)$', re.MULTILINE)
    counts: dict[str, float] = {}
    for sign, text in ((-1, before), (1, after)):
        for kind, operation, value in pattern.findall(text):
            counts[f"{operation} {kind}"] = counts.get(f"{operation} {kind}", 0) + sign * float(value)
    return ", ".join(f"{k}: {v / jobs:.1f}" for k, v in sorted(counts.items()) if v)


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(found.group(1)) / 1024 if found else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def baseline(args: argparse.Namespace) -> int:
    """The floor: plain pods (labelled like Loom's, no gates) straight into the cluster."""
    pods = PodWatch()
    v1 = client.CoreV1Api()
    count = args.jobs * args.workers

    def create(i: int) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"plain-{i:05d}",
                "labels": {"loom.ml/trainingjob": f"plain-{i // args.workers}"},
            },
            "spec": {
                "terminationGracePeriodSeconds": args.grace,
                "containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
            },
        }
        v1.create_namespaced_pod(NS, body)

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))
    last_create = time.monotonic()
    ok = pods.wait(lambda: sum(pods.running().values()) == count, timeout=600)
    print(f"baseline: {count} plain pods created in {last_create - t0:.1f} s")
    print(f"baseline: last create -> all Running: {time.monotonic() - last_create:.1f} s ({ok})")
    kubectl("delete", "namespace", NS, "--wait=false")
    pods.close()
    if not args.kubeconfig and not args.keep_cluster:
        stop_cluster()
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=8, help="pods per job (1 master + workers-1)")
    parser.add_argument("--nodes", type=int, default=200, help="fake GPU nodes with 8 GPUs each")
    parser.add_argument("--restarts", type=int, default=20, help="gang restarts to time, one after another")
    parser.add_argument("--grace", type=int, default=0, help="terminationGracePeriodSeconds of the pods")
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting loom-bench")
    parser.add_argument("--keep-cluster", action="store_true")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="no operator: create the same number of plain pods directly, to measure the cluster alone",
    )
    args = parser.parse_args()

    kubeconfig = args.kubeconfig or start_cluster(args.nodes)
    os.environ["KUBECONFIG"] = kubeconfig
    config.load_kube_config(config_file=kubeconfig)
    kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "crd/trainingjobs.loom.ml", "--timeout=60s")
    kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=300s")
    kubectl("create", "namespace", NS)
    nodes = json.loads(kubectl("get", "nodes", "-o", "json"))["items"]
    gpus = sum(int(n["status"].get("allocatable", {}).get("nvidia.com/gpu", 0)) for n in nodes)
    in_use = sum(
        int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
        for p in json.loads(kubectl("get", "pods", "-A", "-o", "json"))["items"]
        if p["status"].get("phase") not in ("Succeeded", "Failed")
        for c in p["spec"]["containers"]
    )
    if in_use:
        print(f"warning: {in_use} GPUs are already taken by other pods", file=sys.stderr)

    if args.baseline:
        return baseline(args)
    operator = Operator(Path("/tmp/loom-bench-operator.log"), env={"KUBECONFIG": kubeconfig})
    operator.start()
    assert operator.process is not None
    pods = PodWatch()
    api = client.CustomObjectsApi()
    before = operator.metrics()
    names = [f"job-{i:04d}" for i in range(args.jobs)]
    created: dict[str, float] = {}

    def create(name: str) -> None:
        api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, job(name, args.workers, args.grace))
        created[name] = time.monotonic()

    print(f"cluster: {len(nodes)} nodes, {gpus} GPUs; {args.jobs} jobs x {args.workers} pods", flush=True)
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, names))
    last_create = time.monotonic()
    running_at: dict[str, float] = {}

    def all_running() -> bool:
        counts: dict[str, int] = {}
        for name, attempt, phase, deleting in pods.pods.values():
            if attempt == 0 and phase == "Running" and not deleting:
                counts[name] = counts.get(name, 0) + 1
        now = time.monotonic()
        for name, n in counts.items():
            if n == args.workers and name not in running_at:
                running_at[name] = now
        return len(running_at) == args.jobs

    ok = pods.wait(all_running, timeout=600)
    done = time.monotonic()
    after = operator.metrics()
    latencies = [running_at[n] - created[n] for n in running_at]
    requests = metric_sum(after, "loom_api_requests_total") - metric_sum(before, "loom_api_requests_total")
    added = pods.added
    rate = len(added) / (added[-1] - added[0]) if len(added) > 1 else float("nan")
    print(f"jobs created in {last_create - t0:.1f} s; all Running: {ok} ({len(running_at)}/{args.jobs})")
    print(f"last create -> all Running: {done - last_create:.1f} s")
    print(f"create -> all Running per job: p50 {pct(latencies, 0.5):.1f} s, p99 {pct(latencies, 0.99):.1f} s")
    print(f"pods created: {len(added)} at {rate:.0f} pods/s")
    breakdown = requests_by_operation(before, after, args.jobs)
    print(f"API requests per job (startup): {requests / args.jobs:.1f} ({breakdown})")
    print(f"operator peak RSS after startup: {peak_rss_mb(operator.process.pid):.0f} MB")
    print(f"operator CPU until all Running: {cpu_seconds(operator.process.pid):.1f} s", flush=True)
    reconciles = metric_sum(after, "loom_reconcile_seconds_count") - metric_sum(
        before, "loom_reconcile_seconds_count"
    )
    print(f"reconciles per job (startup): {reconciles / args.jobs:.1f}")

    restart_latencies: list[float] = []
    for i in range(min(args.restarts, len(running_at))):
        name = names[i]
        pod = f"{name}-worker-2-a0"
        t1 = time.monotonic()
        client.CoreV1Api().patch_namespaced_pod(
            pod, NS, {"metadata": {"annotations": {"kwok.loom.ml/exit-code": "137"}}}
        )
        if pods.wait(lambda n=name: pods.attempt_running(n, 1, args.workers), timeout=120):
            restart_latencies.append(time.monotonic() - t1)
        else:
            print(f"{name}: the restarted gang was not Running within 120 s", file=sys.stderr)
    if restart_latencies:
        print(
            f"gang restart (worker exits 137 -> next attempt all Running), n={len(restart_latencies)}: "
            f"p50 {pct(restart_latencies, 0.5):.2f} s, p99 {pct(restart_latencies, 0.99):.2f} s, "
            f"mean {statistics.mean(restart_latencies):.2f} s"
        )
    final = operator.metrics()
    total = metric_sum(final, "loom_api_requests_total") - metric_sum(before, "loom_api_requests_total")
    print(f"API requests per job (including restarts): {total / args.jobs:.1f}")
    print(f"operator peak RSS: {peak_rss_mb(operator.process.pid):.0f} MB")
    print(f"reconcile errors: {metric_sum(final, 'loom_reconcile_errors_total'):.0f}")
    figures = {
        "jobs": args.jobs,
        "pods_per_job": args.workers,
        "nodes": len(nodes),
        "last_create_to_all_running_s": round(done - last_create, 2),
        "create_to_running_p50_s": round(pct(latencies, 0.5), 2),
        "create_to_running_p99_s": round(pct(latencies, 0.99), 2),
        "pods_per_s": round(rate, 1),
        "api_requests_per_job": round(requests / args.jobs, 1),
        "restart_p50_s": round(pct(restart_latencies, 0.5), 2),
        "restart_p99_s": round(pct(restart_latencies, 0.99), 2),
        "operator_peak_rss_mb": round(peak_rss_mb(operator.process.pid)),
    }
    print(json.dumps(figures))
    operator.stop()
    pods.close()
    if not args.kubeconfig and not args.keep_cluster:
        stop_cluster()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
