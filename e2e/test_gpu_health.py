"""GPU health end to end: `loom gpu-agent` on the host for KWOK GPU nodes (its fake NVML chosen with
LOOM_GPU_AGENT_FAKE), the operator, and a real Prometheus scraping both.

XID 79 on one node: the agent marks it (GPUHealthy=False, taint loom.ml/gpu-unhealthy:NoSchedule),
the TrainingJob gang there restarts on healthy nodes with the node excluded, the serving replica there
is replaced without going below minReplicas Ready, nothing new lands there; after the fault is gone
and the healthy period has passed, the marks are cleared. The times are measured and printed. Then
the series by PromQL, the alert rules evaluated by that Prometheus, every dashboard query, and
`promtool check metrics` on both exporters. With LOOM_RENDER_DASHBOARD=<png> the dashboard is rendered
from this run's Prometheus (docs/dashboard/render.py; needs matplotlib).

A second test runs the agent with a ServiceAccount token bound to a pod on its node, under the
DaemonSet's RBAC and ValidatingAdmissionPolicy (manifests/base/gpu-agent.yaml): its own node only.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes import config as config_loader

from e2e.pools import Pool, gpu_pool
from e2e.prometheus import Prometheus, free_port
from e2e.support import ROOT, Operator, apply_yaml, kubectl, kubectl_result, wait_for
from e2e.test_inferenceservice import isvc, live_pods, ready_pods
from e2e.test_trainingjob import job_manifest, job_pods, status, wait_running

pytestmark = pytest.mark.timeout(420)
HEALTHY_PERIOD = 15.0
GPUS = 8
TAINT = "loom.ml/gpu-unhealthy"


def gpu(index: int, busy: bool) -> dict[str, Any]:
    return {
        "uuid": f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, str(index)).hex[:8]}-{index}",
        "name": "NVIDIA H100 80GB HBM3",
        "minor": index,
        "memoryTotalMiB": 81559,
        "memoryUsedMiB": random.uniform(52000, 70000) if busy else 512,
        "utilization": random.uniform(82, 99) if busy else 0,
        "temperature": random.uniform(62, 71) if busy else 34,
        "powerWatts": random.uniform(560, 690) if busy else 72,
        "smClockMHz": 1980 if busy else 345,
        "eccUncorrectable": 0,
        "remappedRowsCorrectable": 0,
        "remappedRowsUncorrectable": 0,
        "remapPending": False,
        "remapFailed": False,
        "clockEventReasons": 0,
    }


class FakeGpus:
    """The fake NVML scripts of the pool's nodes: busy GPUs follow the GPUs its Running pods request;
    `fault` makes one GPU fall off the bus (XID 79, then lost), `heal` brings it back."""

    def __init__(self, workdir: Path, nodes: list[str]) -> None:
        self.paths = {n: workdir / f"nvml-{n}.json" for n in nodes}
        self.lost: dict[str, set[int]] = {n: set() for n in nodes}
        self.xids: dict[str, list[dict[str, int]]] = {n: [] for n in nodes}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        for n in nodes:
            self.write(n, 0)

    def write(self, node: str, busy: int) -> None:
        with self._lock:
            gpus = [{**gpu(i, i < busy), "lost": i in self.lost[node]} for i in range(GPUS)]
            tmp = self.paths[node].with_suffix(".tmp")
            tmp.write_text(json.dumps({"gpus": gpus, "xids": self.xids[node]}))
            tmp.replace(self.paths[node])

    def _busy(self) -> dict[str, int]:
        pods = json.loads(kubectl("get", "pods", "-A", "-o", "json"))["items"]
        busy = dict.fromkeys(self.paths, 0)
        for p in pods:
            node = (p.get("spec") or {}).get("nodeName")
            if node in busy and (p.get("status") or {}).get("phase") == "Running":
                for c in p["spec"].get("containers", []):
                    busy[node] += int(
                        ((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0)
                    )
        return busy

    def _follow(self) -> None:
        while not self._stop.wait(2.0):
            try:
                for node, count in self._busy().items():
                    self.write(node, min(GPUS, count))
            except Exception as e:  # a tick lost is a tick lost
                print(f"fake GPUs: {e}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def fault(self, node: str, index: int, xid: int) -> None:
        with self._lock:
            self.lost[node].add(index)
            self.xids[node].append({"gpu": index, "xid": xid})
        self.write(node, self._busy()[node])

    def heal(self, node: str) -> None:
        with self._lock:
            self.lost[node].clear()
        self.write(node, self._busy()[node])


class AgentProcess:
    """`loom gpu-agent` for one node, on the host, reading a fake NVML script."""

    def __init__(self, node: str, script: Path, log: Path, kubeconfig: str, port: int | None = None) -> None:
        self.node, self.script, self.log_path, self.kubeconfig = node, script, log, kubeconfig
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> AgentProcess:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "LOOM_GPU_AGENT_FAKE": str(self.script)}
        args = ["--node", self.node, "--interval", "0.5", "--healthy-period", str(HEALTHY_PERIOD)]
        args += ["--resync", "5", "--address", "127.0.0.1", "--port", str(self.port), *extra]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loom.cli", "gpu-agent", *args],
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        wait_for(self._up, 30, what=f"gpu-agent of {self.node} serving /healthz")
        return self

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"gpu-agent exited {self.process.returncode}:\n{self.logs()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text: str = r.read().decode()
            return text

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def node_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(kubectl("get", "node", name, "-o", "json"))
    return body


def gpu_condition(name: str) -> dict[str, Any]:
    return next((c for c in node_body(name)["status"].get("conditions", []) if c["type"] == "GPUHealthy"), {})


def tainted(name: str) -> bool:
    return any(t["key"] == TAINT for t in node_body(name)["spec"].get("taints") or [])


def marked(name: str) -> bool:
    return gpu_condition(name).get("status") == "False" and tainted(name)


def cleared(name: str) -> bool:
    return gpu_condition(name).get("status") == "True" and not tainted(name)


@pytest.fixture
def pool3(kubeconfig: str) -> Iterator[Pool]:
    with gpu_pool(3, prefix="gpuh") as p:
        yield p


def rules_file(workdir: Path) -> Path:
    rule = yaml.safe_load((ROOT / "manifests" / "monitoring" / "prometheusrule-loom.yaml").read_text())
    path = workdir / "loom-alerts.rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


def promtool_findings(text: str) -> list[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed: scripts/install-deps.sh (Debian's prometheus package)"
    result = subprocess.run([binary, "check", "metrics"], input=text, capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def serving(namespace: str, pool: Pool) -> dict[str, Any]:
    """Three 1-GPU replicas, minReplicas 3 (a Ready one goes only after a surge replica is Ready),
    spread over the pool's nodes."""
    body = isvc("ranker", pool, replicas=3, minReplicas=3)
    spec = body["spec"]["predictor"]["template"]["spec"]
    spec["affinity"] = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"loom.ml/inferenceservice": "ranker"}},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }
    return body


def test_xid_79_moves_the_gang_and_the_replica_off_the_node_and_prometheus_sees_it(
    operator: Operator, namespace: str, pool3: Pool, kubeconfig: str, tmp_path: Path
) -> None:
    gpus = FakeGpus(tmp_path, pool3.nodes)
    agents = {n: AgentProcess(n, gpus.paths[n], tmp_path / f"agent-{n}.log", kubeconfig) for n in pool3.nodes}
    prometheus = Prometheus(
        tmp_path,
        {
            "loom-operator": [f"127.0.0.1:{operator.metrics_port}"],
            "loom-gpu-agent": [f"127.0.0.1:{a.port}" for a in agents.values()],
        },
        rule_files=[rules_file(tmp_path)],
    )
    marks: list[tuple[float, str]] = []
    try:
        for a in agents.values():
            a.start()
        gpus.start()
        started = time.time()
        prometheus.start(ready="count(loom_gpu_node_healthy) == 3")
        for n in pool3.nodes:
            wait_for(lambda n=n: cleared(n), 20, what=f"{n}: GPUHealthy=True from its agent")

        apply_yaml(job_manifest("trainer", pool3, roles={"worker": 2}, gpus=4), namespace)
        apply_yaml(serving(namespace, pool3), namespace)
        gang = wait_running(namespace, "trainer", 0, 2, timeout=60)
        wait_for(lambda: len(ready_pods(namespace, "ranker")) == 3, 60, what="3 serving replicas Ready")
        bad = gang[0]["spec"]["nodeName"]
        victims = [p.metadata.name for p in live_pods(namespace, "ranker") if p.spec.node_name == bad]
        placed = [(p.metadata.name, p.spec.node_name) for p in live_pods(namespace, "ranker")]
        assert victims, f"no serving replica on {bad}: {placed}"
        time.sleep(8)  # a stretch of steady state for the dashboard

        fewest = [3]
        stop_watch = threading.Event()

        def watch_ready() -> None:
            while not stop_watch.wait(0.1):
                fewest[0] = min(fewest[0], len(ready_pods(namespace, "ranker")))

        watcher = threading.Thread(target=watch_ready, daemon=True)
        watcher.start()
        t0 = time.time()
        gpus.fault(bad, 3, 79)
        marks.append((t0, "XID 79"))
        wait_for(lambda: marked(bad), 20, interval=0.05, what=f"{bad} marked GPU-unhealthy")
        t_marked = time.time()
        condition = gpu_condition(bad)
        assert (
            condition["reason"] == "XID79" and "XID 79 (GPU has fallen off the bus)" in condition["message"]
        )
        assert "GPU 3 (GPU-" in condition["message"]

        moved = wait_running(namespace, "trainer", 1, 2, timeout=60)
        t_gang = time.time()
        assert bad not in {p["spec"]["nodeName"] for p in moved}
        st = status(namespace, "trainer")
        assert st["excludedNodes"] == [bad] and st["restartCount"] == 1

        def replaced() -> bool:
            ready = ready_pods(namespace, "ranker")
            return len(ready) == 3 and all(p.spec.node_name != bad for p in ready)

        wait_for(replaced, 90, what="the serving replica on the bad node replaced")
        t_replica = time.time()
        stop_watch.set()
        watcher.join(5)
        assert fewest[0] >= 3, f"serving dropped to {fewest[0]} Ready replicas (minReplicas 3)"
        since = {
            p["metadata"]["name"]
            for p in json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json"))["items"]
            if p["spec"].get("nodeName") == bad
        }
        assert since <= set(victims) | {p["metadata"]["name"] for p in job_pods(namespace, "trainer", 0)}, (
            f"new pods landed on {bad}: {since}"
        )
        time.sleep(5)

        t_heal = time.time()
        gpus.heal(bad)
        marks.append((t_heal, "GPU back"))
        wait_for(lambda: cleared(bad), HEALTHY_PERIOD + 20, interval=0.1, what=f"{bad} cleared")
        t_cleared = time.time()
        marks.append((t_cleared, "cleared"))
        time.sleep(6)
        end = time.time()
        timings = {
            "fault -> node condition + taint": t_marked - t0,
            "fault -> gang Running on healthy nodes": t_gang - t0,
            "fault -> serving replica replaced (3 Ready elsewhere)": t_replica - t0,
            f"fault gone -> marks cleared (healthy period {HEALTHY_PERIOD:g} s)": t_cleared - t_heal,
        }
        print("\nGPU health timings:\n" + "\n".join(f"  {k}: {v:.2f} s" for k, v in timings.items()))
        (tmp_path / "timings.json").write_text(json.dumps(timings))
        assert t_marked - t0 < 5 and t_gang - t0 < 30 and t_replica - t0 < 60

        # -- the series, by PromQL -------------------------------------------------------------------
        host = f'Hostname="{bad}"'
        wait_for(lambda: prometheus.value(f"loom_gpu_node_healthy{{{host}}}") == 1, 10, what="healthy again")
        q = prometheus.value
        assert q(f"min_over_time(loom_gpu_node_healthy{{{host}}}[10m])") == 0
        assert q(f'loom_gpu_xid_errors_total{{{host},xid="79",action="RebootNode"}}') == 1
        assert q(f"count(DCGM_FI_DEV_GPU_UTIL{{{host}}})") == 8
        assert q(f"min_over_time(count(DCGM_FI_DEV_GPU_UTIL{{{host}}})[10m:1s])") == 7  # the lost GPU
        assert q(f'max_over_time(DCGM_FI_DEV_XID_ERRORS{{{host},gpu="3"}}[10m])') == 79
        assert q('count(count by (Hostname) (DCGM_FI_DEV_GPU_UTIL{modelName="NVIDIA H100 80GB HBM3"}))') == 3
        assert (q("max(max_over_time(DCGM_FI_DEV_GPU_UTIL[10m]))") or 0) > 80
        assert (q('sum(loom_trainingjob_restarts_total{reason="NodeLost"})') or 0) >= 1
        assert (q('sum(loom_inferenceservice_pod_replacements_total{reason="GPUUnhealthy"})') or 0) >= 1
        assert (q('max(loom_resources{kind="InferenceService",phase="Ready"})') or 0) >= 1
        assert (q("sum(loom_inferenceservice_model_load_seconds_count)") or 0) >= 4
        assert (q('sum(loom_api_responses_total{verb="PATCH",code="200"})') or 0) >= 1
        assert q('count(loom_workqueue_depth{kind="TrainingJob"})') == 1
        assert q(f'max_over_time(ALERTS{{alertname="LoomGPUUnhealthy",{host}}}[10m])') == 1  # pending: for 1m
        for n in pool3.nodes:
            assert q(f'up{{job="loom-gpu-agent",instance="127.0.0.1:{agents[n].port}"}}') == 1
        # every dashboard query has data over this run, but freshness (no FeaturePipeline here)
        board = json.loads((ROOT / "manifests" / "monitoring" / "grafana-dashboard-loom.json").read_text())
        empty = []
        for panel in (p for p in board["panels"] if p.get("type") != "row"):
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "15s")
                if not prometheus.query_range(expr, started, end, 2):
                    empty.append(panel["title"])
        assert set(empty) <= {"Feature freshness"}, f"dashboard panels without data: {empty}"

        # -- promtool on both exporters --------------------------------------------------------------
        assert promtool_findings(operator.metrics()) == []
        findings = promtool_findings(agents[bad].metrics())
        assert findings and all("label names should be written in 'snake_case'" in f for f in findings)
        assert all(f.startswith("DCGM_FI_DEV_") for f in findings)  # DCGM's own modelName label, kept

        png = os.environ.get("LOOM_RENDER_DASHBOARD")
        if png:
            spec = importlib.util.spec_from_file_location("render", ROOT / "docs" / "dashboard" / "render.py")
            assert spec and spec.loader
            render = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(render)
            print("rendered", render.render(prometheus.base, started, end, Path(png), marks=marks))
    finally:
        gpus.stop()
        prometheus.stop()
        for a in agents.values():
            a.stop()
        if os.environ.get("LOOM_E2E_SHOW_LOGS"):
            for a in agents.values():
                print(f"--- agent {a.node}\n{a.logs()[-4000:]}")


# -- RBAC and the admission policy: the agent writes its own node only -----------------------------------
def _policy_objects(namespace: str, tag: str) -> list[dict[str, Any]]:
    """The DaemonSet manifest's ServiceAccount, RBAC and admission policy, renamed for this test."""
    docs = list(yaml.safe_load_all((ROOT / "manifests" / "base" / "gpu-agent.yaml").read_text()))
    out = []
    for doc in copy.deepcopy(docs):
        kind = doc["kind"]
        if kind == "DaemonSet":
            continue
        if kind == "ServiceAccount":
            doc["metadata"]["namespace"] = namespace
        else:
            doc["metadata"]["name"] += f"-{tag}"
        if kind == "ClusterRoleBinding":
            doc["roleRef"]["name"] += f"-{tag}"
            doc["subjects"][0]["namespace"] = namespace
        if kind == "ValidatingAdmissionPolicy":
            condition = doc["spec"]["matchConditions"][0]
            assert "system:serviceaccount:loom-system:loom-gpu-agent" in condition["expression"]
            condition["expression"] = condition["expression"].replace("loom-system", namespace)
        if kind == "ValidatingAdmissionPolicyBinding":
            doc["spec"]["policyName"] += f"-{tag}"
        out.append(doc)
    return out


def _token_kubeconfig(namespace: str, pod: str, path: Path) -> Path:
    uid = kubectl("get", "pod", pod, "-n", namespace, "-o", "jsonpath={.metadata.uid}")
    token = kubectl(
        "create", "token", "loom-gpu-agent", "-n", namespace,
        "--bound-object-kind", "Pod", "--bound-object-name", pod, "--bound-object-uid", uid,
    ).strip()  # fmt: skip
    admin = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "agent", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "agent"}}],
                "current-context": "c",
            }
        )
    )
    return path


def test_the_agent_may_write_only_its_own_node(
    operator: Operator, namespace: str, kubeconfig: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    objects = _policy_objects(namespace, tag)
    with gpu_pool(2, prefix="gpur") as pool:
        own, other = pool.nodes
        apply_yaml(objects)
        try:
            agent_pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "gpu-agent", "namespace": namespace},
                "spec": {
                    "serviceAccountName": "loom-gpu-agent",
                    "nodeName": own,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "agent", "image": "ghcr.io/loom-ml/loom-operator:0.1.0"}],
                },
            }
            apply_yaml(agent_pod)
            config = _token_kubeconfig(namespace, "gpu-agent", tmp_path / "agent.kubeconfig")

            def as_agent(*args: str) -> subprocess.CompletedProcess[str]:
                return kubectl_result("--kubeconfig", str(config), *args)

            agent_api = client.CoreV1Api(api_client=config_loader.new_client_from_config(str(config)))

            def status_denied(node: str, body: dict[str, Any]) -> str:
                """PATCH nodes/status with the agent's token (kubectl would GET nodes/status first)."""
                try:
                    agent_api.patch_node_status(node, body)
                except client.ApiException as e:
                    assert e.status == 403, e
                    return str(e.body)
                raise AssertionError(f"patching the status of {node} was allowed")

            def denied(*args: str) -> str:
                result = as_agent(*args)
                assert result.returncode != 0, f"kubectl {' '.join(args)} was allowed"
                return result.stderr

            # The policy takes effect once the API server has loaded it: until a write elsewhere is refused.
            probe = {"metadata": {"labels": {"probe": "x"}}}
            wait_for(
                lambda: (
                    "may write only the node it runs on"
                    in as_agent("patch", "node", other, "--type=merge", "-p", json.dumps(probe)).stderr
                ),
                30,
                what="the admission policy active",
            )
            script = tmp_path / "nvml.json"
            script.write_text(json.dumps({"gpus": [gpu(i, False) for i in range(GPUS)]}))
            agent = AgentProcess(own, script, tmp_path / "agent.log", str(config)).start()
            try:
                wait_for(lambda: cleared(own), 20, what="GPUHealthy=True written with the agent's own token")
                script.write_text(
                    json.dumps(
                        {"gpus": [gpu(i, False) for i in range(GPUS)], "xids": [{"gpu": 0, "xid": 46}]}
                    )
                )
                wait_for(lambda: marked(own), 20, what="the agent's own node marked with its own token")
            finally:
                agent.stop()
            assert "could not write" not in agent.logs()

            condition = {"type": "GPUHealthy", "status": "False", "reason": "XID79", "message": "forged"}
            forged = {"status": {"conditions": [condition]}}
            assert "may write only the node it runs on (" + own in status_denied(other, forged)
            assert "may change only the loom.ml/gpu-unhealthy taint" in denied(
                "patch", "node", own, "--type=merge", "-p", json.dumps({"metadata": {"labels": {"x": "y"}}})
            )
            assert "may change only the loom.ml/gpu-unhealthy taint" in denied(
                "patch", "node", own, "--type=merge", "-p", json.dumps({"spec": {"unschedulable": True}})
            )
            ready = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "x"}]}}
            assert "may change only the GPUHealthy condition" in status_denied(own, ready)
            assert "forbidden" in denied("get", "nodes").lower()  # no list
            assert "forbidden" in denied("delete", "node", other, "--wait=false").lower()

            # A wrong NODE_NAME is refused, and the agent says what to check.
            wrong = AgentProcess(other, script, tmp_path / "wrong.log", str(config)).start()
            try:
                wait_for(lambda: "could not write node" in wrong.logs(), 20, what="the refusal logged")
            finally:
                wrong.stop()
            assert "set NODE_NAME" in wrong.logs() or "NODE_NAME" in wrong.logs()
            assert not tainted(other) and gpu_condition(other) == {}
        finally:
            kubectl("delete", "pod", "gpu-agent", "-n", namespace, "--grace-period=0", "--force", check=False)
            for doc in objects:
                if doc["kind"] != "ServiceAccount":
                    kubectl(
                        "delete",
                        doc["kind"].lower(),
                        doc["metadata"]["name"],
                        "--ignore-not-found",
                        check=False,
                    )
