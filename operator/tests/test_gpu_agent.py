"""The GPU agent's loop over the fake NVML and an in-memory node, stepped through a fake clock; the
real nvidia-ml-py backend where no driver is (this machine): it says so, and the agent keeps serving;
the exporter's text checked by the real `promtool check metrics`."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loom.gpu.agent import Agent, Settings, serve
from loom.gpu.exporter import AgentMetrics
from loom.gpu.fake import FakeNvml
from loom.gpu.nvml import NvmlUnavailable
from loom.gpu.pynvml_backend import PynvmlNvml

GPU = {
    "uuid": "GPU-5d3c0000-aaaa",
    "name": "NVIDIA H100 80GB HBM3",
    "minor": 0,
    "memoryTotalMiB": 81559,
    "memoryUsedMiB": 40000,
    "utilization": 87,
    "temperature": 61,
    "powerWatts": 512.5,
    "smClockMHz": 1980,
    "eccUncorrectable": 0,
    "remappedRowsCorrectable": 1,
    "remappedRowsUncorrectable": 0,
    "remapPending": False,
    "remapFailed": False,
    "clockEventReasons": 0,
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Node:
    """An in-memory Node with the API server's patch semantics the agent relies on: strategic merge
    of status.conditions by type, merge patch of spec with a resourceVersion precondition."""

    def __init__(self, name: str = "gpu-1") -> None:
        self.body: dict[str, Any] = {
            "metadata": {"name": name, "resourceVersion": "1"},
            "spec": {"taints": [{"key": "other", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
        self.writes: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.fail: Exception | None = None

    def _bump(self) -> None:
        self.body["metadata"]["resourceVersion"] = str(int(self.body["metadata"]["resourceVersion"]) + 1)

    def get(self, name: str) -> dict[str, Any] | None:
        assert name == self.body["metadata"]["name"], "the agent addressed another node"
        if self.fail:
            raise self.fail
        return copy.deepcopy(self.body)

    def patch_status(self, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        assert name == self.body["metadata"]["name"]
        conditions = self.body["status"]["conditions"]
        for c in body["status"]["conditions"]:
            conditions[:] = [x for x in conditions if x["type"] != c["type"]] + [c]
        self.writes.append("condition")
        self._bump()
        return copy.deepcopy(self.body)

    def modify(
        self, name: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        patch = change(self.get(name) or {})
        if patch is None:
            return self.body
        assert patch["metadata"]["resourceVersion"] == self.body["metadata"]["resourceVersion"]
        self.body["spec"]["taints"] = patch["spec"]["taints"] or []
        self.writes.append("taint")
        self._bump()
        return copy.deepcopy(self.body)

    def event(self, node: dict[str, Any], reason: str, message: str, type_: str) -> None:
        self.events.append((reason, type_))

    def condition(self) -> dict[str, Any]:
        return next(c for c in self.body["status"]["conditions"] if c["type"] == "GPUHealthy")

    def tainted(self) -> bool:
        return any(t["key"] == "loom.ml/gpu-unhealthy" for t in self.body["spec"]["taints"])


def agent_with(
    script: dict[str, Any], node: Node | None = None, healthy: float = 60.0
) -> tuple[Agent, FakeNvml, Node, Clock]:
    clock, node = Clock(), node or Node()
    nvml = FakeNvml(script, clock=clock, sleep=clock.sleep)
    settings = Settings(node="gpu-1", interval=5.0, healthy_period=healthy, resync=30.0)
    agent = Agent(settings, lambda: nvml, node, AgentMetrics("gpu-1"), clock=clock, sleep=clock.sleep)
    return agent, nvml, node, clock


def samples(agent: Agent) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(agent.metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(agent: Agent, name: str, **labels: str) -> float | None:
    for (n, got), v in samples(agent).items():
        if n == name and set(labels.items()) <= got:
            return v
    return None


def test_xid_79_marks_the_node_and_recovery_waits_the_healthy_period() -> None:
    script: dict[str, Any] = {"gpus": [GPU], "xids": []}
    agent, nvml, node, clock = agent_with(script)
    agent.tick()
    assert node.condition()["status"] == "True" and not node.tainted()
    assert node.writes == ["condition"]  # the taint was already absent: no write
    agent.tick()
    assert node.writes == ["condition"]  # nothing changed: nothing written

    nvml.set_script({**script, "xids": [{"gpu": 0, "xid": 79}]})
    started = clock.now
    agent.tick()
    assert clock.now - started < 0.1  # the XID ended the tick's wait at once
    c = node.condition()
    assert (c["status"], c["reason"]) == ("False", "XID79")
    assert "GPU 0 (GPU-5d3c0000-aaaa): XID 79 (GPU has fallen off the bus)" in c["message"]
    assert node.tainted() and {"key": "other", "effect": "NoSchedule"} in node.body["spec"]["taints"]
    assert node.writes[1:] == ["condition", "taint"]  # why first, then the taint
    assert node.events[-1] == ("GPUUnhealthy", "Warning")
    assert value(agent, "loom_gpu_xid_errors_total", xid="79", action="RebootNode") == 1
    assert value(agent, "DCGM_FI_DEV_XID_ERRORS", gpu="0") == 79
    assert value(agent, "loom_gpu_node_healthy") == 0 and value(agent, "loom_gpu_healthy", gpu="0") == 0

    while clock.now - started < 55:
        agent.tick()
        assert node.tainted()
    while clock.now - started < 65:
        agent.tick()
    assert node.condition()["status"] == "True" and not node.tainted()
    assert node.writes[-2:] == ["taint", "condition"]  # the taint goes first
    assert node.events[-1] == ("GPUHealthy", "Normal")
    assert value(agent, "loom_gpu_node_healthy") == 1


def test_a_taint_removed_by_hand_comes_back_at_the_resync_while_the_fault_lasts() -> None:
    agent, _, node, _clock = agent_with({"gpus": [{**GPU, "lost": True}]}, healthy=600)
    agent.tick()
    assert node.condition()["reason"] == "GPULost" and node.tainted()
    node.body["spec"]["taints"] = []
    for _ in range(7):  # 35 s > resync
        agent.tick()
    assert node.tainted()


def test_a_restarted_agent_keeps_the_mark_for_a_healthy_period() -> None:
    agent, _nvml, node, _clock = agent_with({"gpus": [GPU], "xids": [{"gpu": 0, "xid": 48}]})
    agent.tick()
    assert node.condition()["reason"] == "XID48"
    again, _, _, clock2 = agent_with({"gpus": [GPU]}, node=node)
    writes = len(node.writes)
    again.tick()
    assert node.condition()["reason"] == "XID48" and node.tainted()
    assert len(node.writes) == writes  # what the node says is what it should say
    while not again.verdict.healthy:
        again.tick()
    assert clock2.now - 1_700_000_000.0 >= 60 and not node.tainted()


def test_restart_the_application_xids_are_counted_not_marked() -> None:
    agent, _, node, _ = agent_with({"gpus": [GPU], "xids": [{"gpu": 0, "xid": 13}, {"gpu": 0, "xid": 43}]})
    agent.tick()
    assert node.condition()["status"] == "True" and not node.tainted()
    assert value(agent, "loom_gpu_xid_errors_total", xid="13", action="RestartApplication") == 1
    assert value(agent, "loom_gpu_faults_total", reason="XID43", action="Ignore") == 1


def test_failed_node_writes_are_counted_and_retried() -> None:
    agent, _nvml, node, _ = agent_with({"gpus": [GPU]})
    node.fail = RuntimeError("403 Forbidden")
    agent.tick()
    assert "GPUHealthy" not in str(node.body)
    node.fail = None
    agent.tick()
    assert node.condition()["status"] == "True"


def test_dcgm_names_and_labels() -> None:
    agent, _, _, _ = agent_with({"gpus": [GPU]})
    agent.tick()
    labels = {
        "gpu": "0",
        "UUID": GPU["uuid"],
        "device": "nvidia0",
        "modelName": GPU["name"],
        "Hostname": "gpu-1",
    }
    got = {n: v for (n, ls), v in samples(agent).items() if n.startswith("DCGM_") and dict(ls) == labels}
    assert got == {
        "DCGM_FI_DEV_GPU_UTIL": 87,
        "DCGM_FI_DEV_FB_USED": 40000,
        "DCGM_FI_DEV_FB_FREE": 41559,
        "DCGM_FI_DEV_FB_TOTAL": 81559,
        "DCGM_FI_DEV_GPU_TEMP": 61,
        "DCGM_FI_DEV_POWER_USAGE": 512.5,
        "DCGM_FI_DEV_SM_CLOCK": 1980,
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 0,
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": 1,
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": 0,
        "DCGM_FI_DEV_ROW_REMAP_FAILURE": 0,
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": 0,
        "DCGM_FI_DEV_XID_ERRORS": 0,
    }


def test_unsupported_fields_and_lost_gpus_export_nothing_for_them() -> None:
    sparse = {"uuid": "GPU-b", "name": "Tesla T4", "utilization": 3}
    agent, _, _, _ = agent_with({"gpus": [sparse, {**GPU, "lost": True}]})
    agent.tick()
    dcgm = {(n, dict(ls)["gpu"]) for (n, ls), _ in samples(agent).items() if n.startswith("DCGM_")}
    assert dcgm == {
        ("DCGM_FI_DEV_GPU_UTIL", "0"),
        ("DCGM_FI_DEV_XID_ERRORS", "0"),
        ("DCGM_FI_DEV_XID_ERRORS", "1"),
    }


def promtool_check(text: str) -> list[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is not installed: install Debian's prometheus package (scripts/install-deps.sh)"
        )
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert (result.returncode == 0) == (not problems), result
    return problems


def test_promtool_accepts_the_agent_but_for_dcgms_own_modelname_label() -> None:
    agent, _, _, _ = agent_with({"gpus": [GPU, {**GPU, "uuid": "GPU-2", "minor": 1}], "xids": [{"xid": 79}]})
    agent.tick()
    text = generate_latest(agent.metrics.registry).decode()
    problems = promtool_check(text)
    dcgm = {line.split()[0] for line in text.splitlines() if line.startswith("DCGM_")}
    assert problems and all(
        p.endswith("label names should be written in 'snake_case' not 'camelCase'") for p in problems
    )
    assert {p.split()[0] for p in problems} <= {name.split("{")[0] for name in dcgm}
    loom_only = "\n".join(
        line for line in text.splitlines() if "DCGM_" not in line
    )  # Loom's own series: no finding at all
    assert promtool_check(loom_only + "\n") == []


def test_the_fake_script_file_is_reread_so_a_test_can_inject_into_a_running_agent(tmp_path: Path) -> None:
    path = tmp_path / "nvml.json"
    path.write_text(json.dumps({"gpus": [GPU]}))
    fake = FakeNvml.from_file(path)
    assert fake.wait_xid(0.0) == [] and len(fake.devices()) == 1
    path.write_text(json.dumps({"gpus": [GPU, GPU], "xids": [{"gpu": 1, "xid": 79}]}))
    events = fake.wait_xid(1.0)
    assert [(e.uuid, e.xid) for e in events] == [(GPU["uuid"], 79)] and len(fake.devices()) == 2
    assert fake.wait_xid(0.0) == []  # delivered once


def test_no_driver_says_so_once_exports_no_gpu_and_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(NvmlUnavailable, match="Is the NVIDIA driver installed"):
        PynvmlNvml()  # nvidia-ml-py itself, on a machine without the driver
    clock = Clock()
    settings = Settings(node="gpu-1", interval=1.0, nvml_retry=10.0)
    agent = Agent(settings, PynvmlNvml, Node(), AgentMetrics("gpu-1"), clock=clock, sleep=clock.sleep)
    server = serve(agent, "127.0.0.1", 0)
    try:
        for _ in range(25):
            agent.tick()
        said = [r for r in caplog.records if "no GPU exported" in r.getMessage()]
        assert len(said) == 1 and "NVML Shared Library Not Found" in said[0].getMessage()
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert "DCGM_" not in text and 'loom_gpu_nvml_up{Hostname="gpu-1"} 0.0' in text
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        server.shutdown()


def test_the_loop_stops_when_told() -> None:
    agent, _nvml, _, _ = agent_with({"gpus": [GPU]})
    stopped = threading.Event()
    stopped.set()
    agent.run(stopped)
    assert agent.last_tick is None
