"""Helpers for e2e tests: kubectl, polling, API clients, the operator process, KWOK test stages."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config

ROOT = Path(__file__).resolve().parent.parent
LOOM_HOME = Path(os.environ.get("LOOM_HOME", Path.home() / ".cache" / "loom"))
KUBECTL = str(LOOM_HOME / "bin" / "kubectl")
GROUP, VERSION = "loom.ml", "v1alpha1"
T = TypeVar("T")


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    """Run kubectl against the test cluster; raises with stderr on failure when `check`."""
    result = subprocess.run(
        [KUBECTL, *args], input=input, capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout if check else result.stdout + result.stderr


def kubectl_result(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, *args], input=input, capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )


def wait_for(fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.2, what: str = "") -> T:
    """Poll fn() until it returns something truthy; return it, or raise TimeoutError naming `what`,
    with what the test's namespaces held at that moment (see `seen`)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout}s waiting for {what or fn}; last value: {last!r}\n{seen()}"
            )
        time.sleep(interval)


def wait_established(*crds: str, timeout: float = 60.0) -> None:
    """Wait until each CRD (by name) is Established. Not `kubectl wait --for=condition=Established`: on a
    CRD created a moment ago, before the API server wrote any condition, kubectl fails at once
    ("accessor error: <nil> ... expected []interface{}") instead of waiting."""
    path = '{.status.conditions[?(@.type=="Established")].status}'
    for crd in crds:
        wait_for(
            lambda c=crd: kubectl("get", "crd", c, "-o", f"jsonpath={path}", check=False).strip() == "True",
            timeout=timeout,
            what=f"CRD {crd} Established",
        )


# What a timed-out wait reports: the namespaces of the running test and the operator process.
_watched: list[str] = []
_operators: list[Operator] = []


def watch_namespace(namespace: str) -> None:
    _watched.append(namespace)


def unwatch_namespace(namespace: str) -> None:
    if namespace in _watched:
        _watched.remove(namespace)


def _pod_line(pod: dict[str, Any]) -> str:
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    phase = "Terminating" if meta.get("deletionTimestamp") else status.get("phase", "?")
    parts = [f"  pod {meta['name']}: {phase} on {spec.get('nodeName') or '(unscheduled)'}"]
    for c in status.get("conditions") or []:
        if c.get("status") != "True" and (c.get("reason") or c.get("message")):
            parts.append(
                f"{c['type']}={c['status']} {c.get('reason', '')}: {c.get('message', '')}".rstrip(": ")
            )
    if spec.get("schedulingGates"):
        parts.append(f"gates {[g['name'] for g in spec['schedulingGates']]}")
    return "; ".join(parts)


def seen(log_lines: int = 25) -> str:
    """Pod phases and scheduling conditions, Loom objects' phases, warning events of the watched
    namespaces, and the operator's log tail: what a timed-out wait saw. Never raises."""
    out: list[str] = []
    for ns in list(_watched):
        try:
            pods = json.loads(kubectl("get", "pods", "-n", ns, "-o", "json"))["items"]
            kinds = "trainingjobs.loom.ml,inferenceservices.loom.ml,featurepipelines.loom.ml"
            objects = json.loads(kubectl("get", kinds, "-n", ns, "-o", "json"))["items"]
            events = json.loads(kubectl("get", "events", "-n", ns, "-o", "json"))["items"]
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
            out.append(f"namespace {ns}: could not be read: {e}")
            continue
        out.append(f"namespace {ns}: {len(pods)} pods")
        out += [_pod_line(p) for p in pods[:40]]
        for o in objects:
            st = o.get("status") or {}
            conds = ", ".join(
                f"{c['type']}={c['status']}({c.get('reason', '')})" for c in st.get("conditions") or []
            )
            out.append(f"  {o['kind']} {o['metadata']['name']}: phase {st.get('phase')}; {conds}")
        warnings = [e for e in events if e.get("type") == "Warning"][-10:]
        out += [
            f"  event {e['involvedObject']['name']}: {e['reason']}: {e.get('message', '')}" for e in warnings
        ]
    for op in _operators[-1:]:
        tail = op.logs().splitlines()[-log_lines:]
        out.append("operator log tail:")
        out += [f"  {line}" for line in tail]
    return "\n".join(out)


_loaded = False


def _load() -> None:
    global _loaded
    if not _loaded:
        config.load_kube_config(config_file=os.environ["KUBECONFIG"])
        _loaded = True


def core() -> client.CoreV1Api:
    _load()
    return client.CoreV1Api()


def apps() -> client.AppsV1Api:
    _load()
    return client.AppsV1Api()


def custom() -> client.CustomObjectsApi:
    _load()
    return client.CustomObjectsApi()


def apply_yaml(doc: str | dict[str, Any] | list[dict[str, Any]], namespace: str | None = None) -> str:
    """kubectl apply (server-side) of a YAML text or object(s)."""
    text = doc if isinstance(doc, str) else yaml.safe_dump_all(doc if isinstance(doc, list) else [doc])
    args = ["apply", "--server-side", "--field-manager=e2e", "-f", "-"]
    if namespace:
        args += ["-n", namespace]
    return kubectl(*args, input=text)


def get_cr(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = custom().get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise
    return obj


def pods(namespace: str, selector: str = "") -> list[dict[str, Any]]:
    out = kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def set_pod_exit(namespace: str, pod: str, code: int, *, oom: bool = False) -> None:
    """Make a Running KWOK pod's containers exit with `code` (the kwok.loom.ml/exit-code stage)."""
    annotations = [f"kwok.loom.ml/exit-code={code}"] + (["kwok.loom.ml/oom=true"] if oom else [])
    kubectl("annotate", "pod", "-n", namespace, pod, "--overwrite", *annotations)


def set_pod_result(namespace: str, pod: str, code: int, message: str | None = None) -> None:
    """Make a Running KWOK pod's containers exit with `code` and, like a kubelet reading
    /dev/termination-log, report `message` as their termination message."""
    annotations = [f"kwok.loom.ml/exit-code={code}"]
    if message is not None:
        annotations.append(f"kwok.loom.ml/termination-message={message}")
    kubectl("annotate", "pod", "-n", namespace, pod, "--overwrite", *annotations)


def patch_status(resource: str, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Write an object's status subresource, as its own controller would (e.g. the Spark Operator)."""
    body = json.dumps({"status": status})
    kubectl("patch", resource, name, "-n", namespace, "--subresource=status", "--type=merge", "-p", body)


def events_of(namespace: str, name: str, kind: str) -> list[dict[str, Any]]:
    out = kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name},involvedObject.kind={kind}",
        "-o",
        "json",
    )
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def evict_pod(namespace: str, pod: str) -> None:
    """Make a Running KWOK pod fail as evicted by its kubelet."""
    kubectl("annotate", "pod", "-n", namespace, pod, "--overwrite", "kwok.loom.ml/evict=true")


def set_node_ready(node: str, ready: bool) -> None:
    """Turn a KWOK node NotReady (label kwok.loom.ml/not-ready) or Ready again."""
    if ready:
        kubectl("label", "node", node, "kwok.loom.ml/not-ready-")
    else:
        kubectl("label", "node", node, "--overwrite", "kwok.loom.ml/not-ready=true")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Operator:
    """`loom run` as a subprocess against the test cluster: start, kill -9, restart, logs, metrics."""

    def __init__(
        self, log_path: Path, env: dict[str, str] | None = None, args: list[str] | None = None
    ) -> None:
        self.log_path = log_path
        self.extra_env = env or {}
        self.extra_args = args or []
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.liveness_port = 0

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "operator already running"
        self.metrics_port, self.liveness_port = free_port(), free_port()
        env = {**os.environ, **self.extra_env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loom.cli",
                "run",
                "--metrics-port",
                str(self.metrics_port),
                "--liveness-port",
                str(self.liveness_port),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        if self in _operators:
            _operators.remove(self)
        _operators.append(self)
        wait_for(self._healthy, timeout=60, what="operator /healthz")

    def _healthy(self) -> bool:
        import urllib.request

        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"operator exited with {self.process.returncode}:\n{self.logs()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to clean up, as in a crash or an OOM kill."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text: str = r.read().decode()
            return text
