"""Model state of serving pods, unhealthy pods, rollout failures and one-at-a-time replacement."""

from __future__ import annotations

from datetime import timedelta

import pytest
from test_inferenceservice_factories import T0, Pod, node

from loom.api.inferenceservice import HealthSpec, ModelState
from loom.health.pods import (
    PodView,
    gpu_unhealthy,
    plan_replacements,
    pod_model,
    rollout_failure,
    summarize,
    view,
)

NOW = T0 + timedelta(seconds=100)


@pytest.mark.parametrize(
    ("pod", "state", "reason", "exit_code"),
    [
        pytest.param(Pod("p", node=None), ModelState.PENDING, "Unschedulable", None, id="unschedulable"),
        pytest.param(Pod("p"), ModelState.LOADING, "PodInitializing", None, id="sidecar-not-started-yet"),
        pytest.param(Pod("p").staging(), ModelState.LOADING, "Staging", None, id="staging"),
        pytest.param(Pod("p").started(), ModelState.LOADED, "", None, id="startup-probe-passed"),
        pytest.param(Pod("p").ready(), ModelState.LOADED, "", None, id="ready"),
        pytest.param(
            Pod("p").sidecar_crashed(2, "safetensors: header length past end"),
            ModelState.FAILED_TO_LOAD,
            "InvalidModel",
            2,
            id="kubelet-sidecar-exit-2",
        ),
        pytest.param(
            Pod("p").sidecar_crashed(3, "GET https://x: connection refused"),
            ModelState.FAILED_TO_LOAD,
            "SourceUnreachable",
            3,
            id="kubelet-sidecar-exit-3",
        ),
        pytest.param(
            Pod("p").sidecar_crashed(4, "need 9 GiB, 4 GiB free"),
            ModelState.FAILED_TO_LOAD,
            "NoSpace",
            4,
            id="kubelet-sidecar-exit-4",
        ),
        pytest.param(
            Pod("p").sidecar_crashed(8, "https://x/m.safetensors changed while it was being read"),
            ModelState.FAILED_TO_LOAD,
            "SourceChanged",
            8,
            id="kubelet-sidecar-exit-8",
        ),
        pytest.param(
            Pod("p").sidecar_crashed(137),
            ModelState.FAILED_TO_LOAD,
            "StartupProbeFailed",
            137,
            id="kubelet-startup-probe-kill",
        ),
        pytest.param(
            Pod("p").sidecar_crashed(137, reason="OOMKilled"),
            ModelState.FAILED_TO_LOAD,
            "OOMKilled",
            137,
            id="sidecar-oom",
        ),
        pytest.param(
            Pod("p").kwok_exit(3), ModelState.FAILED_TO_LOAD, "SourceUnreachable", 3, id="kwok-exit-3"
        ),
        pytest.param(Pod("p").kwok_exit(2), ModelState.FAILED_TO_LOAD, "InvalidModel", 2, id="kwok-exit-2"),
        pytest.param(
            Pod("p").ready().evicted('Usage of EmptyDir volume "loom-models" exceeds the limit "4Gi". '),
            ModelState.FAILED_TO_LOAD,
            "ModelExceedsSizeLimit",
            None,
            id="evicted-size-limit",
        ),
    ],
)
def test_pod_model_state(pod: Pod, state: ModelState, reason: str, exit_code: int | None) -> None:
    model = pod_model(pod.obj())
    assert (model.state, model.reason, model.exit_code) == (state, reason, exit_code)
    assert not model.gone


def test_failure_message_carries_the_sidecars_reason() -> None:
    model = pod_model(Pod("p").sidecar_crashed(3, "fetch https://m/x: 404 Not Found\n").obj())
    assert "404 Not Found" in model.message and "model.uri" in model.message


def test_evicted_for_node_pressure_is_not_a_model_failure() -> None:
    model = pod_model(Pod("p").ready().evicted("The node was low on resource: memory.").obj())
    assert model.gone and model.reason == "Evicted"


def test_kwok_failed_pod_with_a_server_exit_code_is_gone_not_failed_to_load() -> None:
    assert pod_model(Pod("p").kwok_exit(1).obj()).gone


def test_not_ready_after_having_been_ready_is_timed() -> None:
    v = view(Pod("p").ready(at=3).not_ready(at=40).obj(), NOW)
    assert v.not_ready_seconds == 60
    never = view(Pod("p").started(at=2).obj(), NOW)  # Ready=False since creation: never was Ready
    assert never.not_ready_seconds is None and not never.ready


def test_gpu_unhealthy_by_label_or_condition() -> None:
    assert gpu_unhealthy(node("n", {"loom.ml/gpu-health": "unhealthy"}))
    assert gpu_unhealthy(
        node("n", conditions=[{"type": "GPUHealthy", "status": "False", "message": "Xid 79"}])
    )
    assert gpu_unhealthy(node("n", {"loom.ml/gpu-health": "healthy"})) is None
    assert gpu_unhealthy(node("n", conditions=[{"type": "GPUHealthy", "status": "True"}])) is None


def test_revision_summary_counts_ready_loaded_and_failures() -> None:
    views = [
        view(Pod("a", "r1").ready().obj(), NOW),
        view(Pod("b", "r1").staging().obj(), NOW),
        view(Pod("c", "r1").sidecar_crashed(3).obj(), NOW),
        view(Pod("d", "r1").ready().terminating().obj(), NOW),
        view(Pod("e", "r2").ready().obj(), NOW),
    ]
    s = summarize(views, "r1")
    assert (s.pods, s.ready, s.loaded, s.loading, s.state) == (2, 1, 1, 1, ModelState.LOADED)
    assert s.failure is not None and s.failure.reason == "SourceUnreachable"
    assert summarize(views[2:3], "r1").state == ModelState.FAILED_TO_LOAD


SPEC = HealthSpec(notReadySeconds=30, crashLoopRestarts=3)


@pytest.mark.parametrize(
    ("pod", "reason"),
    [
        pytest.param(Pod("c", "new").sidecar_crashed(2), "InvalidModel", id="load-failure"),
        pytest.param(Pod("c", "new").ready(at=3).not_ready(at=50), "ReadinessFailed", id="not-ready"),
        pytest.param(Pod("c", "new").crash_looping(5), "CrashLoopBackOff", id="crash-loop"),
        pytest.param(Pod("c", "new").ready(), None, id="healthy"),
        pytest.param(Pod("c", "new").ready(at=3).not_ready(at=90), None, id="not-ready-briefly"),
        pytest.param(Pod("c", "new").staging(), None, id="still-loading"),
    ],
)
def test_rollout_failure(pod: Pod, reason: str | None) -> None:
    issue = rollout_failure([view(pod.obj(), NOW)], "new", None, SPEC)
    assert (issue.reason if issue else None) == reason


def test_rollout_failure_of_a_load_carries_the_sidecar_exit_code() -> None:
    issue = rollout_failure([view(Pod("c", "new").sidecar_crashed(3).obj(), NOW)], "new", None, SPEC)
    assert issue is not None and (issue.reason, issue.exit_code) == ("SourceUnreachable", 3)


def test_rollout_failure_on_progress_deadline() -> None:
    deployment = {
        "status": {
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": "too slow",
                }
            ]
        }
    }
    issue = rollout_failure([], "new", deployment, SPEC)
    assert issue is not None and issue.reason == "ProgressDeadlineExceeded"


def views_of(*pods: Pod) -> list[PodView]:
    return [view(p.obj(), NOW) for p in pods]


def test_not_ready_pod_is_replaced_first_and_alone() -> None:
    views = views_of(
        Pod("ok", created=1).ready(),
        Pod("bad-node", created=2).ready().on("gpu-node-3"),
        Pod("stuck", created=3).ready(at=3).not_ready(at=10),
    )
    plan = plan_replacements(
        views, {"rev1"}, {"gpu-node-3": "node gpu-node-3 unhealthy"}, SPEC, min_ready=1, expected=0
    )
    assert [v.name for v in plan.delete] == ["stuck"]
    assert {i.reason for i in plan.issues} == {"NotReady", "GPUUnhealthy"}


def test_nothing_is_replaced_until_the_last_replacement_pod_exists() -> None:
    views = views_of(
        Pod("old").ready().terminating(), Pod("a").ready(), Pod("stuck").ready(at=3).not_ready(at=10)
    )
    assert plan_replacements(views, {"rev1"}, {}, SPEC, min_ready=1, expected=3).delete == ()
    views += views_of(Pod("new").staging())
    assert [v.name for v in plan_replacements(views, {"rev1"}, {}, SPEC, min_ready=1, expected=3).delete] == [
        "stuck"
    ]


def test_ready_pod_on_bad_gpu_waits_for_min_ready_and_asks_for_a_surge() -> None:
    bad = {"gpu-node-3": "unhealthy"}
    alone = views_of(Pod("a").ready().on("gpu-node-3"))
    plan = plan_replacements(alone, {"rev1"}, bad, SPEC, min_ready=1, expected=0)
    assert plan.delete == () and plan.surge == 1
    surged = views_of(Pod("a").ready().on("gpu-node-3"), Pod("b", created=5).ready())
    plan = plan_replacements(surged, {"rev1"}, bad, SPEC, min_ready=1, expected=0)
    assert [v.name for v in plan.delete] == ["a"] and plan.surge == 1  # surge held until a is gone


def test_ready_pod_is_not_replaced_while_another_starts() -> None:
    views = views_of(Pod("a").ready().on("gpu-node-3"), Pod("b").ready(), Pod("c").staging())
    plan = plan_replacements(views, {"rev1"}, {"gpu-node-3": "unhealthy"}, SPEC, min_ready=1, expected=0)
    assert plan.delete == () and plan.surge == 0


def test_crash_loop_below_threshold_is_left_to_the_kubelet() -> None:
    views = views_of(Pod("a").crash_looping(2), Pod("b").ready())
    assert plan_replacements(views, {"rev1"}, {}, SPEC, min_ready=1, expected=0).issues == ()
    views = views_of(Pod("a").crash_looping(3), Pod("b").ready())
    assert [v.name for v in plan_replacements(views, {"rev1"}, {}, SPEC, min_ready=1, expected=0).delete] == [
        "a"
    ]


def test_gpu_replacement_can_be_switched_off() -> None:
    views = views_of(Pod("a").ready().on("n"), Pod("b").ready())
    spec = HealthSpec(replaceOnUnhealthyGPU=False)
    assert plan_replacements(views, {"rev1"}, {"n": "bad"}, spec, min_ready=1, expected=0).issues == ()
