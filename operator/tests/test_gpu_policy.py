"""The GPU fault policy: the XID table, faults from readings, and the verdict stepped through time."""

from __future__ import annotations

import pytest

from loom.gpu.nvml import Device, Reading, XidEvent
from loom.gpu.policy import (
    DEFAULT_XID_ACTION,
    FATAL,
    XID_ACTIONS,
    Action,
    Fault,
    HealthState,
    decide,
    faults,
    parse_xid_actions,
    xid_action,
)

GPUS = [Device(0, "GPU-aaa", "NVIDIA H100 80GB HBM3", 0), Device(1, "GPU-bbb", "NVIDIA H100 80GB HBM3", 1)]
FINE = Reading(utilization_percent=50, ecc_uncorrectable_volatile=0, remap_pending=False, remap_failed=False)


@pytest.mark.parametrize(
    ("xid", "action"),
    [
        pytest.param(79, Action.REBOOT_NODE, id="79-fallen-off-the-bus-reboots"),
        *[pytest.param(x, Action.RESET_GPU, id=f"{x}-resets") for x in (46, 62, 64, 95, 119, 120)],
        *[
            pytest.param(x, Action.RESTART_APPLICATION, id=f"{x}-restarts-the-app")
            for x in (13, 31, 68, 69, 94)
        ],
        *[pytest.param(x, Action.IGNORE, id=f"{x}-ignored") for x in (43, 63, 92)],
        pytest.param(45, Action.IGNORE, id="45-follows-another-error"),
        pytest.param(48, Action.RESET_GPU, id="48-double-bit-ecc-resets"),
        pytest.param(74, Action.RESET_GPU, id="74-nvlink-resets"),
        pytest.param(999, DEFAULT_XID_ACTION, id="unknown-is-the-default"),
    ],
)
def test_xid_catalog(xid: int, action: Action) -> None:
    assert xid_action(xid) is action


def test_fatal_actions_are_the_ones_that_need_the_node_or_gpu_back() -> None:
    assert {Action.REBOOT_NODE, Action.RESET_GPU, Action.REPLACE_GPU} == FATAL
    assert DEFAULT_XID_ACTION in FATAL  # as NVIDIA's device plugin: an XID it does not know is unhealthy
    assert sorted(x for x, a in XID_ACTIONS.items() if a not in FATAL) == [13, 31, 43, 45, 63, 68, 69, 92, 94]


def test_overrides_win_and_bad_ones_say_what_is_wanted() -> None:
    overrides = parse_xid_actions(["13=RebootNode", "79=Ignore"])
    assert xid_action(13, overrides) is Action.REBOOT_NODE and xid_action(79, overrides) is Action.IGNORE
    assert xid_action(46, overrides) is Action.RESET_GPU
    for bad in ("13", "x=Ignore", "13=Reboot"):
        with pytest.raises(ValueError, match="want XID=ACTION with ACTION one of RebootNode, ResetGPU"):
            parse_xid_actions([bad])


@pytest.mark.parametrize(
    ("reading", "reason", "action"),
    [
        pytest.param(Reading(lost=True), "GPULost", Action.REBOOT_NODE, id="lost"),
        pytest.param(Reading(remap_failed=True), "RowRemapFailure", Action.REPLACE_GPU, id="remap-failed"),
        pytest.param(Reading(ecc_uncorrectable_volatile=2), "UncorrectableECC", Action.RESET_GPU, id="ecc"),
        pytest.param(Reading(remap_pending=True), "RowRemapPending", Action.RESET_GPU, id="remap-pending"),
    ],
)
def test_standing_faults_from_readings(reading: Reading, reason: str, action: Action) -> None:
    found = faults(GPUS, {0: FINE, 1: reading}, [])
    assert [(f.reason, f.action, f.gpu, f.uuid) for f in found] == [(reason, action, 1, "GPU-bbb")]
    assert found[0].message.startswith("GPU 1 (GPU-bbb): ")


def test_healthy_readings_and_unsupported_fields_are_no_fault() -> None:
    assert faults(GPUS, {0: FINE, 1: Reading()}, []) == []


def test_xid_fault_names_gpu_uuid_xid_and_remedy() -> None:
    (fault,) = faults(GPUS, {0: FINE, 1: FINE}, [XidEvent("GPU-aaa", 79)])
    assert fault.reason == "XID79" and fault.xid == 79 and fault.is_fatal
    assert fault.message == "GPU 0 (GPU-aaa): XID 79 (GPU has fallen off the bus): drain and reboot the node"
    (unknown,) = faults(GPUS, {}, [XidEvent("GPU-zzz", 150)])
    assert unknown.gpu == -1 and unknown.message.startswith("GPU-zzz: XID 150 (see NVIDIA's XID catalog)")


def xid(uuid: str, number: int) -> Fault:
    return faults(GPUS, {}, [XidEvent(uuid, number)])[0]


def test_verdict_through_time_recovers_only_after_the_healthy_period() -> None:
    state, period = HealthState(), 300.0
    verdict, state = decide(state, [], 0.0, period)
    assert verdict.healthy and verdict.reason == "GPUsHealthy"
    verdict, state = decide(state, [xid("GPU-aaa", 79)], 10.0, period)
    assert not verdict.healthy and verdict.reason == "XID79" and verdict.recovers_at == 310.0
    assert [f.reason for f in verdict.new] == ["XID79"]
    verdict, state = decide(state, [], 309.0, period)
    assert not verdict.healthy and verdict.new == ()
    verdict, state = decide(state, [], 310.0, period)
    assert verdict.healthy and verdict.recovers_at is None


def test_a_standing_fault_keeps_the_node_unhealthy_and_is_new_once() -> None:
    state, period = HealthState(), 60.0
    lost = faults(GPUS, {0: Reading(lost=True)}, [])
    verdict, state = decide(state, lost, 0.0, period)
    assert [f.reason for f in verdict.new] == ["GPULost"]
    for t in (30.0, 90.0, 200.0):
        verdict, state = decide(state, lost, t, period)
        assert not verdict.healthy and verdict.new == ()
    verdict, state = decide(state, [], 259.0, period)
    assert not verdict.healthy
    verdict, _ = decide(state, [], 260.0, period)
    assert verdict.healthy


def test_non_fatal_faults_are_reported_but_never_make_the_node_unhealthy() -> None:
    verdict, state = decide(HealthState(), [xid("GPU-aaa", 13), xid("GPU-aaa", 43)], 0.0, 60.0)
    assert verdict.healthy and [f.reason for f in verdict.new] == ["XID13", "XID43"]
    assert state.fatal == {}


def test_the_root_cause_first_and_every_xid_event_is_new() -> None:
    state = HealthState()
    _, state = decide(state, [xid("GPU-aaa", 48)], 0.0, 100.0)
    verdict, state = decide(state, [xid("GPU-bbb", 79), xid("GPU-aaa", 48)], 5.0, 100.0)
    assert [f.reason for f in verdict.faults] == ["XID48", "XID79"]  # the first seen leads
    assert [f.reason for f in verdict.new] == ["XID79", "XID48"]
    verdict, _ = decide(state, [xid("GPU-bbb", 79)], 50.0, 100.0)
    assert verdict.faults[0].reason == "XID48" and verdict.recovers_at == 150.0


def test_an_xid_explains_the_lost_gpu_it_causes_and_the_reason_holds() -> None:
    lost = faults(GPUS, {0: Reading(lost=True)}, [])
    verdict, state = decide(HealthState(), [*lost, xid("GPU-aaa", 79)], 0.0, 60.0)
    assert [f.reason for f in verdict.faults] == ["XID79", "GPULost"]
    for t in (1.0, 2.0, 90.0):
        verdict, state = decide(state, lost, t, 60.0)
    assert verdict.reason == "GPULost"  # XID 79 was last seen over a healthy period ago
    verdict, state = decide(HealthState(), [*lost, xid("GPU-aaa", 79)], 0.0, 60.0)
    verdict, state = decide(state, lost, 30.0, 60.0)
    assert verdict.reason == "XID79"  # tick after tick: the condition is not rewritten
