"""The agent's loop: read NVML, ask the fault policy, export, and write the verdict to its own node.

One tick: wait up to `interval` for XID events (the wait is the tick's pause), read every GPU, find
the faults, decide the verdict, update the metrics, and write the node's GPUHealthy condition and
taint when they differ from the verdict (and re-check them every `resync` seconds, so a taint someone
removed by hand comes back while the fault lasts). Without NVML the agent says so once, exports no
GPU, leaves the node alone, and tries NVML again every `nvml_retry` seconds.

The node is the one named at start (the DaemonSet passes spec.nodeName as NODE_NAME); nothing here
addresses another. Writes go through `loom.kube`; a failed write is logged with what to check and
retried on the next tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from loom.gpu import node as node_writes
from loom.gpu import policy
from loom.gpu.exporter import AgentMetrics, Snapshot
from loom.gpu.nvml import Device, Nvml, NvmlUnavailable, Reading

log = logging.getLogger("loom.gpu.agent")


class NodeApi(Protocol):
    """The three calls the agent makes on its node."""

    def get(self, name: str) -> dict[str, Any] | None: ...

    def patch_status(self, name: str, body: dict[str, Any]) -> dict[str, Any] | None: ...

    def modify(
        self, name: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any] | None: ...

    def event(self, node: dict[str, Any], reason: str, message: str, type_: str) -> None:
        """Record an event on the node; never raises."""
        ...


class KubeNodes:
    """`NodeApi` through `loom.kube` (in-cluster config in a pod, else the kubeconfig)."""

    def get(self, name: str) -> dict[str, Any] | None:
        from loom import kube

        return kube.get("v1", "Node", name, None)

    def patch_status(self, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        from loom import kube

        return kube.patch_strategic("v1", "Node", name, None, body, subresource="status")

    def modify(
        self, name: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        from loom import kube

        return kube.modify("v1", "Node", name, None, change)

    def event(self, node: dict[str, Any], reason: str, message: str, type_: str) -> None:
        from loom import kube

        kube.event({"apiVersion": "v1", "kind": "Node", **node}, reason, message, type_=type_)


@dataclass
class Settings:
    node: str | None  # None: export only, never write a node
    interval: float = 5.0
    healthy_period: float = 300.0
    resync: float = 60.0
    nvml_retry: float = 60.0
    xid_actions: Mapping[int, policy.Action] = field(default_factory=dict)


_FIX_WRITE = (
    "check that NODE_NAME is this pod's spec.nodeName and that the loom-gpu-agent ServiceAccount has "
    "the loom-gpu-agent ClusterRole (nodes get/patch, nodes/status patch); the "
    "loom-gpu-agent-own-node ValidatingAdmissionPolicy refuses writes to any other node"
)


class Agent:
    def __init__(
        self,
        settings: Settings,
        open_nvml: Callable[[], Nvml],
        nodes: NodeApi | None,
        metrics: AgentMetrics,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._open_nvml, self.nodes, self.metrics = open_nvml, nodes, metrics
        self.clock, self._sleep = clock, sleep
        self.nvml: Nvml | None = None
        self.devices: list[Device] = []
        self.state = policy.HealthState()
        self.verdict = policy.Verdict()
        self._nvml_tried: float | None = None
        self._said_unavailable = False
        self._written: tuple[str, str, str] | None = None  # the condition as last written or read
        self._written_at = 0.0
        self._resumed = False
        self.last_tick: float | None = None
        self._last_xid: dict[int, int] = {}

    # -- NVML ---------------------------------------------------------------------------------------
    def _ensure_nvml(self, now: float) -> bool:
        if self.nvml is not None:
            return True
        if self._nvml_tried is not None and now - self._nvml_tried < self.settings.nvml_retry:
            return False
        self._nvml_tried = now
        try:
            self.nvml = self._open_nvml()
        except NvmlUnavailable as e:
            if not self._said_unavailable:
                log.warning("no GPU exported: %s (retrying every %g s, quietly)", e, self.settings.nvml_retry)
                self._said_unavailable = True
            return False
        self.devices = self.nvml.devices()
        names = ", ".join(f"{d.index}: {d.name} {d.uuid}" for d in self.devices) or "none"
        log.info("NVML up (driver %s): GPUs %s", self.nvml.driver_version, names)
        return True

    # -- one tick -----------------------------------------------------------------------------------
    def tick(self) -> policy.Verdict:
        """One check: returns the verdict (healthy when there is no NVML)."""
        if not self._ensure_nvml(self.clock()):
            self._sleep(self.settings.interval)
            self.metrics.gpus.update(Snapshot(nvml_up=False))
            self._done()
            return self.verdict
        assert self.nvml is not None
        events = self.nvml.wait_xid(self.settings.interval)
        readings: dict[int, Reading] = {d.index: self.nvml.read(d) for d in self.devices}
        now = self.clock()
        found = policy.faults(self.devices, readings, events, self.settings.xid_actions)
        self._resume(now)
        self.verdict, self.state = policy.decide(self.state, found, now, self.settings.healthy_period)
        self._count(found, events)
        self.metrics.gpus.update(
            Snapshot(
                nvml_up=True,
                devices=tuple(self.devices),
                readings=readings,
                last_xid=dict(self._last_xid),
                unhealthy=frozenset(f.uuid for f in self.verdict.faults),
                node_healthy=self.verdict.healthy,
            )
        )
        if self.devices:
            self._write(now)
        self._done()
        return self.verdict

    def _done(self) -> None:
        self.last_tick = self.clock()
        host = self.metrics.gpus.hostname
        self.metrics.last_tick.labels(Hostname=host).set(self.last_tick)

    def _count(self, found: list[policy.Fault], events: list[Any]) -> None:
        host = self.metrics.gpus.hostname
        by_uuid = {d.uuid: d for d in self.devices}
        for event in events:
            device = by_uuid.get(event.uuid)
            gpu = str(device.index) if device else ""
            if device:
                self._last_xid[device.index] = event.xid
            action = policy.xid_action(event.xid, self.settings.xid_actions)
            self.metrics.xid_errors.labels(gpu, event.uuid, host, str(event.xid), action.value).inc()
        for fault in self.verdict.new:
            self.metrics.faults.labels(host, fault.reason, fault.action.value).inc()
            level = logging.WARNING if fault.is_fatal else logging.INFO
            log.log(level, "%s (%s): %s", fault.reason, fault.action.value, fault.message)

    # -- the node -----------------------------------------------------------------------------------
    def _resume(self, now: float) -> None:
        """Before the first verdict: carry over an unhealthy mark the node already has."""
        if self._resumed or self.nodes is None or self.settings.node is None:
            return
        try:
            body = self.nodes.get(self.settings.node)
        except Exception as e:
            log.warning("could not read node %s (%s): %s", self.settings.node, _why(e), _FIX_WRITE)
            return
        self._resumed = True
        if body is None:
            log.warning(
                "node %s does not exist: set NODE_NAME to this pod's spec.nodeName", self.settings.node
            )
            return
        self.state = node_writes.resumed_state(body, now)

    def _write(self, now: float) -> None:
        nodes, name, settings, verdict = self.nodes, self.settings.node, self.settings, self.verdict
        if nodes is None or name is None:
            return
        want = node_writes.condition(verdict, len(self.devices), settings.healthy_period)
        key = (want["status"], want["reason"], want["message"])
        if key == self._written and now - self._written_at < settings.resync:
            return
        try:
            node = nodes.get(name)
            if node is None:
                log.warning("node %s does not exist: set NODE_NAME to this pod's spec.nodeName", name)
                return
            stamp = datetime.fromtimestamp(now, UTC)
            status = node_writes.status_patch(
                node, verdict, len(self.devices), settings.healthy_period, stamp
            )

            def condition() -> None:
                if status is not None:
                    nodes.patch_status(name, status)

            def taint() -> None:
                nodes.modify(name, lambda n: node_writes.taints_patch(n, verdict))

            # Unhealthy: the condition (which says why) first, then the taint; healthy: the taint goes
            # first, so the node is never tainted under a condition that says True.
            for what, step in (("taint", taint), ("condition", condition))[:: 1 if verdict.healthy else -1]:
                self._step(what, step)
        except Exception as e:
            log.warning("could not write node %s (%s): %s", name, _why(e), _FIX_WRITE)
            return
        if status is not None:
            log.info("node %s: GPUHealthy=%s %s: %s", name, *key)
            if self._written is None or self._written[:2] != key[:2]:
                kind = "Normal" if verdict.healthy else "Warning"
                nodes.event(node, "GPUHealthy" if verdict.healthy else "GPUUnhealthy", want["message"], kind)
        self._written, self._written_at = key, now

    def _step(self, what: str, step: Callable[[], None]) -> None:
        host = self.metrics.gpus.hostname
        try:
            step()
        except Exception:
            self.metrics.node_writes.labels(host, what, "error").inc()
            raise
        self.metrics.node_writes.labels(host, what, "ok").inc()

    # -- serving ------------------------------------------------------------------------------------
    def is_alive(self) -> bool:
        """For /healthz: a tick finished within three intervals (plus the NVML wait)."""
        if self.last_tick is None:
            return True
        return self.clock() - self.last_tick < 3 * self.settings.interval + 30

    def run(self, stopped: threading.Event) -> None:
        try:
            while not stopped.is_set():
                self.tick()
        finally:
            if self.nvml is not None:
                self.nvml.close()


def _why(e: BaseException) -> str:
    status = getattr(e, "status", None)
    reason = getattr(e, "reason", None)
    return f"{status} {reason}" if status else f"{type(e).__name__}: {e}"


def serve(agent: Agent, address: str, port: int) -> ThreadingHTTPServer:
    """/metrics (the agent's registry) and /healthz on a daemon thread; returns the server."""
    registry = agent.metrics.registry

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics":
                body, code, kind = generate_latest(registry), 200, CONTENT_TYPE_LATEST
            elif path == "/healthz":
                alive = agent.is_alive()
                body, code, kind = (b"ok\n" if alive else b"stalled\n"), 200 if alive else 503, "text/plain"
            else:
                body, code, kind = b"/metrics or /healthz\n", 404, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="loom-gpu-agent-http", daemon=True).start()
    return server
