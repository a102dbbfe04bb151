"""InferenceService status and events, built in memory from one reconcile's observations."""

from __future__ import annotations

from datetime import timedelta

from test_inferenceservice_factories import T0, make_isvc

from loom.api.inferenceservice import InferenceServiceStatus, ModelState, ModelStatus
from loom.autoscaling.scaler import Decision, Mode
from loom.builders.inferenceservice_status import MetricProblem, Observed, build_status, events, model_status
from loom.health.pods import Issue, PodModel, Replacements, RevisionPods

ISVC = make_isvc(replicas=2)
LOADED2 = RevisionPods("new", pods=2, ready=2, loaded=2)


def observed(**kw: object) -> Observed:
    base: dict[str, object] = {
        "latest": "new",
        "target": "new",
        "stable": None,
        "failed": (),
        "summaries": {"new": LOADED2},
        "plan": {"new": 2},
        "desired": 2,
        "decision": Decision(2, Mode.STABLE, 10, 10, "Stable"),
    }
    base.update(kw)
    return Observed(**base)  # type: ignore[arg-type]


def conditions(s: InferenceServiceStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in s.conditions}


def test_first_deploy_serving() -> None:
    s = build_status(ISVC, InferenceServiceStatus(), observed(), T0)
    assert s.phase == "Ready" and (s.replicas, s.readyReplicas, s.desiredReplicas) == (2, 2, 2)
    assert s.revisions.latestReady == "new" and s.revisions.canary is None
    assert (
        s.url == "http://ranker.serving.svc.cluster.local" and s.selector == "loom.ml/inferenceservice=ranker"
    )
    assert conditions(s) == {
        "ModelLoaded": ("True", "Loaded"),
        "Ready": ("True", "PodsReady"),
        "RolloutComplete": ("True", "Complete"),
        "ScalingActive": ("True", "Loom"),
    }
    assert s.observedGeneration == 1
    assert ("Normal", "Promoted", "revision new serves every replica") in events(
        InferenceServiceStatus(), s, observed()
    )


def test_unchanged_observation_gives_an_identical_status() -> None:
    first = build_status(ISVC, InferenceServiceStatus(), observed(), T0)
    again = build_status(ISVC, first, observed(), T0 + timedelta(seconds=5))
    assert again.model_dump() == first.model_dump()  # transition times kept: nothing to patch
    assert events(first, again, observed()) == []


def test_canary_in_progress() -> None:
    o = observed(
        stable="old",
        summaries={"old": RevisionPods("old", 2, 2, 2), "new": RevisionPods("new", 1, 0, 0, 1)},
        plan={"old": 2, "new": 1},
    )
    s = build_status(ISVC, InferenceServiceStatus(), o, T0)
    assert s.revisions.canary == "new" and s.revisions.latestReady == "old"
    assert s.modelStatus.state == ModelState.LOADING
    assert conditions(s)["RolloutComplete"] == ("False", "Progressing")
    assert s.phase == "Ready"  # the old revision serves every replica meanwhile
    assert [r.name for r in s.revisions.items] == ["new", "old"]


def test_rollback_wins_over_a_replacement_pod_that_loaded_meanwhile() -> None:
    o = observed(
        stable="old",
        target="old",
        failed=("new",),
        rollback=Issue("p", "SourceUnreachable", "exit 3: 404", load_failure=True, exit_code=3),
        summaries={"old": RevisionPods("old", 2, 2, 2), "new": RevisionPods("new", 1, 1, 1)},
        plan={"old": 2, "new": 0},
    )
    model = build_status(ISVC, InferenceServiceStatus(), o, T0).modelStatus
    assert (model.state, model.reason, model.exitCode) == (ModelState.FAILED_TO_LOAD, "SourceUnreachable", 3)


def test_rollback_is_reported_and_remembered() -> None:
    failure = PodModel(ModelState.FAILED_TO_LOAD, "SourceUnreachable", "exit 3: 404", 3)
    o = observed(
        stable="old",
        target="old",
        failed=("new",),
        rollback=Issue("p", "SourceUnreachable", "exit 3: 404"),
        summaries={"old": RevisionPods("old", 2, 2, 2), "new": RevisionPods("new", failure=failure)},
        plan={"old": 2, "new": 0},
    )
    s = build_status(ISVC, InferenceServiceStatus(), o, T0)
    assert s.revisions.failed == ["new"] and s.revisions.canary is None and s.revisions.latestReady == "old"
    assert (s.modelStatus.state, s.modelStatus.reason, s.modelStatus.exitCode) == (
        ModelState.FAILED_TO_LOAD,
        "SourceUnreachable",
        3,
    )
    rollout = next(c for c in s.conditions if c.type == "RolloutComplete")
    assert rollout.reason == "RolledBack" and "SourceUnreachable" in rollout.message
    assert s.phase == "Degraded" and conditions(s)["Ready"] == ("True", "PodsReady")
    assert any(e[1] == "RolledBack" for e in events(InferenceServiceStatus(), s, o))
    # Next reconcile: the failed revision's pods are gone; the status keeps saying what happened.
    later = observed(
        stable="old",
        target="old",
        failed=("new",),
        summaries={"old": RevisionPods("old", 2, 2, 2)},
        plan={"old": 2},
    )
    s2 = build_status(ISVC, s, later, T0 + timedelta(seconds=1))
    assert s2.modelStatus == s.modelStatus
    assert next(c for c in s2.conditions if c.type == "RolloutComplete").message == rollout.message
    assert events(s, s2, later) == []


def test_load_failure_stays_reported_until_a_pod_loads() -> None:
    failed = ModelStatus(state=ModelState.FAILED_TO_LOAD, reason="InvalidModel", revision="new")
    assert model_status(failed, "new", RevisionPods("new", pods=1, loading=1), None) == failed
    assert model_status(failed, "new", RevisionPods("new", 1, 1, 1), None).state == ModelState.LOADED
    assert (
        model_status(failed, "newer", RevisionPods("newer", 1, loading=1), None).state == ModelState.LOADING
    )


def test_first_deploy_that_cannot_load_is_failed() -> None:
    failure = PodModel(ModelState.FAILED_TO_LOAD, "NoSpace", "exit 4", 4)
    o = observed(summaries={"new": RevisionPods("new", failure=failure)})
    s = build_status(ISVC, InferenceServiceStatus(), o, T0)
    assert s.phase == "Failed" and conditions(s)["ModelLoaded"] == ("False", "NoSpace")
    assert conditions(s)["Ready"] == ("False", "NoReadyPods")
    assert [e[1] for e in events(InferenceServiceStatus(), s, o)] == ["ModelFailedToLoad"]


def test_scaling_decision_and_health_in_status_and_events() -> None:
    decision = Decision(5, Mode.PANIC, 12.0, 48.0, "Panic")
    replaced = Issue("ranker-x", "GPUUnhealthy", "node n3 is labelled loom.ml/gpu-health=unhealthy")
    o = observed(
        decision=decision,
        scaled_from=2,
        desired=5,
        replaced=replaced,
        replacements=Replacements(issues=(replaced,)),
    )
    s = build_status(ISVC, InferenceServiceStatus(), o, T0)
    assert s.autoscaling.mode == "panic" and s.autoscaling.desiredReplicas == 5
    assert s.autoscaling.lastDecision is not None and s.autoscaling.lastDecision.fromReplicas == 2
    assert s.health.replacedPods == 1 and s.health.lastReplaced is not None
    assert s.health.unhealthyPods[0].reason == "GPUUnhealthy"
    reasons = [e[1] for e in events(InferenceServiceStatus(), s, o)]
    assert "ScaledUp" in reasons and "PodReplaced" in reasons and "PodUnhealthy" in reasons


def test_external_autoscaler_and_scale_to_zero() -> None:
    s = build_status(ISVC, InferenceServiceStatus(), observed(decision=None), T0)
    assert conditions(s)["ScalingActive"] == ("False", "External")
    zero = observed(desired=0, plan={"new": 0}, summaries={"new": RevisionPods("new")})
    s = build_status(ISVC, InferenceServiceStatus(), zero, T0)
    assert conditions(s)["Ready"] == ("True", "ScaledToZero") and s.phase == "Ready"


def test_an_unusable_metric_holds_the_scale_and_says_why() -> None:
    problem = MetricProblem("InvalidValue", "http://prom:9090 query 'q' gave NaN, not a number of requests")
    held = Decision(2, Mode.STABLE, 0, 0, "InvalidMetric")
    first = build_status(ISVC, InferenceServiceStatus(), observed(), T0)
    s = build_status(ISVC, first, observed(decision=held, metric_problem=problem), T0 + timedelta(seconds=1))
    scaling = next(c for c in s.conditions if c.type == "ScalingActive")
    assert (scaling.status, scaling.reason) == ("False", "InvalidValue")
    assert scaling.message == f"{problem.message}; holding 2 replicas"
    assert s.desiredReplicas == 2
    warned = events(first, s, observed(decision=held, metric_problem=problem))
    assert ("Warning", "MetricUnusable", scaling.message) in warned
    again = build_status(ISVC, s, observed(decision=held, metric_problem=problem), T0 + timedelta(seconds=2))
    assert events(s, again, observed(decision=held, metric_problem=problem)) == []  # said once
    none = build_status(ISVC, s, observed(decision=held, metric_problem=MetricProblem("NoMetrics", "")), T0)
    assert conditions(none)["ScalingActive"] == ("False", "NoMetrics")
