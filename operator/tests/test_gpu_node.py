"""What the GPU agent writes to its node: the GPUHealthy condition and the taint, only on a change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from loom.gpu.node import condition, resumed_state, status_patch, taints_patch
from loom.gpu.nvml import Device, XidEvent
from loom.gpu.policy import HealthState, Verdict, decide, faults
from loom.health.pods import gpu_unhealthy

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
GPUS = [Device(0, "GPU-aaa", "NVIDIA H100 80GB HBM3", 0)]
TAINT = {"key": "loom.ml/gpu-unhealthy", "effect": "NoSchedule"}
OTHER = {"key": "loom.ml/e2e-pool", "value": "p1", "effect": "NoSchedule"}


def unhealthy(xid: int = 79) -> Verdict:
    verdict, _ = decide(HealthState(), faults(GPUS, {}, [XidEvent("GPU-aaa", xid)]), 0.0, 300.0)
    return verdict


def node(conditions: list[dict[str, Any]] | None = None, taints: list[dict[str, Any]] | None = None) -> Any:
    kubelet = {"type": "Ready", "status": "True", "reason": "KubeletReady"}
    return {
        "metadata": {"name": "gpu-1", "resourceVersion": "42"},
        "spec": {"taints": taints} if taints is not None else {},
        "status": {"conditions": [kubelet, *(conditions or [])]},
    }


def test_unhealthy_condition_names_reason_xid_uuid_and_the_healthy_period() -> None:
    c = condition(unhealthy(), 1, 300)
    assert c["status"] == "False" and c["reason"] == "XID79"
    assert c["message"].startswith("GPU 0 (GPU-aaa): XID 79 (GPU has fallen off the bus): drain and reboot")
    assert "taint loom.ml/gpu-unhealthy cleared 300 s after the last fault" in c["message"]
    assert condition(Verdict(), 8, 300)["message"].startswith("8 GPUs healthy")


def test_status_patch_only_on_change_and_transition_time_kept_while_status_holds() -> None:
    patch = status_patch(node(), unhealthy(), 1, 300, NOW)
    assert patch is not None
    (written,) = patch["status"]["conditions"]  # strategic merge by type: the kubelet's stay
    assert written["type"] == "GPUHealthy" and written["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    current = node([{**written, "lastTransitionTime": "2026-01-01T00:00:00Z"}])
    assert status_patch(current, unhealthy(), 1, 300, NOW) is None
    other = status_patch(current, unhealthy(48), 1, 300, NOW)
    assert (
        other is not None and other["status"]["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    )
    healed = status_patch(current, Verdict(), 1, 300, NOW)
    assert (
        healed is not None
        and healed["status"]["conditions"][0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    )


def test_taint_added_and_removed_keeping_other_taints_with_the_resource_version() -> None:
    assert taints_patch(node(taints=[OTHER]), unhealthy()) == {
        "metadata": {"resourceVersion": "42"},
        "spec": {"taints": [OTHER, TAINT]},
    }
    assert taints_patch(node(taints=[OTHER, TAINT]), unhealthy()) is None
    assert taints_patch(node(taints=[OTHER, TAINT]), Verdict()) == {
        "metadata": {"resourceVersion": "42"},
        "spec": {"taints": [OTHER]},
    }
    assert taints_patch(node(taints=[TAINT]), Verdict())["spec"]["taints"] is None  # type: ignore[index]
    assert taints_patch(node(), Verdict()) is None
    odd = {**TAINT, "effect": "NoExecute"}  # someone else's variant of Loom's taint: made Loom's own
    assert taints_patch(node(taints=[odd]), unhealthy())["spec"]["taints"] == [TAINT]  # type: ignore[index]


def test_an_agent_restarted_on_an_unhealthy_node_waits_a_healthy_period_again() -> None:
    written = {**condition(unhealthy(), 1, 300), "lastTransitionTime": "2026-01-01T00:00:00Z"}
    state = resumed_state(node([written], [TAINT]), 1000.0)
    verdict, state = decide(state, [], 1000.0, 300.0)
    assert not verdict.healthy and verdict.reason == "XID79"
    again = condition(verdict, 1, 300)["message"]
    assert again == written["message"]  # the carried message, not a doubled suffix: no needless write
    verdict, _ = decide(state, [], 1300.0, 300.0)
    assert verdict.healthy
    assert resumed_state(node(), 0.0) == HealthState()
    assert resumed_state(node([condition(Verdict(), 1, 300)]), 0.0) == HealthState()
    assert decide(resumed_state(node(taints=[TAINT]), 0.0), [], 1.0, 300.0)[0].reason == "GPUUnhealthy"


def test_every_mark_the_agent_writes_is_read_as_gpu_unhealthy_by_the_controllers() -> None:
    assert gpu_unhealthy(node()) is None
    patch = status_patch(node(), unhealthy(), 1, 300, NOW)
    assert patch is not None
    assert "GPUHealthy=False GPU 0 (GPU-aaa): XID 79" in str(
        gpu_unhealthy(node(patch["status"]["conditions"]))
    )
    assert gpu_unhealthy(node(taints=[TAINT])) == "node gpu-1 is tainted loom.ml/gpu-unhealthy"
