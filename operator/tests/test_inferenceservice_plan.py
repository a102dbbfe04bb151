"""The InferenceService reconcile decided as a pure plan: rollback, replacements, replicas per
revision, and the Deployment writes in the order the controller carries them out."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from test_inferenceservice_factories import T0, Pod, make_isvc

from loom.api.inferenceservice import InferenceServiceStatus
from loom.builders.inferenceservice import SidecarConfig, desired_deployment, revision_hash
from loom.builders.inferenceservice_plan import Apply, Delete, Scale, decide, deployment_writes
from loom.health.pods import view

SIDECAR = SidecarConfig()
ISVC = make_isvc(replicas=3, scaling={"autoscaler": "external"})
LATEST = revision_hash(ISVC, SIDECAR)


def deployment(revision: str, replicas: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"ranker-{revision}",
            "uid": f"uid-{revision}",
            "labels": {"loom.ml/inferenceservice": "ranker", "loom.ml/revision": revision},
            "annotations": {},
            "creationTimestamp": "2026-01-01T12:00:00Z",
        },
        "spec": {"replicas": replicas},
    }


def test_old_revisions_shrink_before_the_latest_grows_and_the_stable_one_is_kept() -> None:
    by_rev = {"old": deployment("old", 4), "stable": deployment("stable", 2)}
    replicas = {"old": 0, "stable": 0, LATEST: 3}
    writes = deployment_writes(ISVC, LATEST, "stable", (), replicas, by_rev, SIDECAR)
    assert writes[:2] == [Delete("ranker-old", "uid-old"), Scale("ranker-stable", 0)]
    assert isinstance(writes[2], Apply) and writes[2].deployment["spec"]["replicas"] == 3


def test_nothing_is_written_when_the_deployments_match() -> None:
    current = desired_deployment(ISVC, LATEST, 3, SIDECAR)
    assert deployment_writes(ISVC, LATEST, LATEST, (), {LATEST: 3}, {LATEST: current}, SIDECAR) == []


def test_a_failed_latest_revision_is_never_applied_again() -> None:
    by_rev = {"stable": deployment("stable", 3), LATEST: deployment(LATEST, 1)}
    writes = deployment_writes(ISVC, LATEST, "stable", (LATEST,), {"stable": 3, LATEST: 0}, by_rev, SIDECAR)
    assert writes == [Delete(f"ranker-{LATEST}", f"uid-{LATEST}")]


def test_a_canary_that_fails_to_load_is_rolled_back_in_one_plan() -> None:
    previous = InferenceServiceStatus.model_validate({"revisions": {"latestReady": "stable"}})
    pods = [Pod(f"s-{i}", revision="stable").started().ready().obj() for i in range(3)]
    pods.append(Pod("canary", revision=LATEST).kwok_exit(3).obj())
    views = [view(p, T0 + timedelta(seconds=10)) for p in pods]
    plan = decide(ISVC, previous, views, [deployment("stable", 3), deployment(LATEST, 1)], {}, SIDECAR)
    assert plan.rollback is not None and plan.rollback.reason == "SourceUnreachable"
    assert plan.failed == (LATEST,) and plan.target == "stable"
    assert not any(isinstance(w, Apply) for w in plan.writes)
    assert Delete(f"ranker-{LATEST}", f"uid-{LATEST}") in plan.writes


def test_a_first_deploy_creates_the_latest_revision() -> None:
    plan = decide(ISVC, InferenceServiceStatus(), [], [], {}, SIDECAR)
    assert (plan.latest, plan.stable, plan.target, plan.rollback) == (LATEST, None, LATEST, None)
    ((write,),) = [plan.writes]
    assert isinstance(write, Apply) and write.deployment["metadata"]["name"] == f"ranker-{LATEST}"
