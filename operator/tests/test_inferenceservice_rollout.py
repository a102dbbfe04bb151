"""Rollout planning: canary first, growth as pods become Ready, bounded surge, rollback."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_inferenceservice_factories import make_isvc

from loom.builders.inferenceservice import (
    ObservedRevisions,
    RevisionObservation,
    canary_step,
    desired_replicas,
    plan_rollout,
    rollout_target,
)


def rev(name: str, replicas: int, ready: int | None = None, created: str = "") -> RevisionObservation:
    return RevisionObservation(name, replicas, replicas if ready is None else ready, created)


@pytest.mark.parametrize(
    ("replicas", "percent", "step"),
    [(10, 10, 1), (10, 25, 2), (10, 20, 2), (4, 10, 1), (4, 50, 2), (1, 10, 1), (3, 100, 3), (0, 20, 0)],
)
def test_canary_step_is_rounded_and_at_least_one(replicas: int, percent: int, step: int) -> None:
    spec = make_isvc(canary={"trafficPercent": percent}).spec
    assert canary_step(spec, replicas) == step


def test_without_canary_spec_a_new_revision_starts_with_one_pod() -> None:
    assert canary_step(make_isvc().spec, 8) == 1


def test_desired_replicas_defaults_and_clamps() -> None:
    assert desired_replicas(make_isvc().spec) == 1
    assert desired_replicas(make_isvc(minReplicas=0).spec) == 1
    assert desired_replicas(make_isvc(replicas=0, minReplicas=0).spec) == 0
    assert desired_replicas(make_isvc(replicas=4, minReplicas=1, maxReplicas=8).spec) == 4


SPEC = make_isvc(replicas=10, maxReplicas=20, canary={"trafficPercent": 20}).spec  # step 2


@pytest.mark.parametrize(
    ("observed", "plan"),
    [
        pytest.param(ObservedRevisions("new", None), {"new": 10}, id="first-deploy-all-at-once"),
        pytest.param(ObservedRevisions("old", "old", revisions=[rev("old", 10)]), {"old": 10}, id="steady"),
        pytest.param(
            ObservedRevisions("new", "old", revisions=[rev("old", 10)]),
            {"old": 10, "new": 2},
            id="canary-starts",
        ),
        pytest.param(
            ObservedRevisions("new", "old", revisions=[rev("old", 10), rev("new", 2, 0)]),
            {"old": 10, "new": 2},
            id="canary-loading-holds",
        ),
        pytest.param(
            ObservedRevisions("new", "old", revisions=[rev("old", 10), rev("new", 2, 2)]),
            {"old": 8, "new": 4},
            id="canary-ready-promotes-old-shrinks",
        ),
        pytest.param(
            ObservedRevisions("new", "old", revisions=[rev("old", 10), rev("new", 2, 2)], hold=True),
            {"old": 8, "new": 2},
            id="canary-analysis-time-holds",
        ),
        pytest.param(
            ObservedRevisions("new", "old", revisions=[rev("old", 2), rev("new", 10, 10)]),
            {"old": 0, "new": 10},
            id="done",
        ),
        pytest.param(
            ObservedRevisions("new", "old", frozenset({"new"}), [rev("old", 6), rev("new", 6, 4)]),
            {"old": 10, "new": 0},
            id="rollback-restores-old-at-once",
        ),
        pytest.param(
            ObservedRevisions("new", None, frozenset({"new"}), [rev("new", 10, 0)]),
            {"new": 10},
            id="failed-without-anything-to-roll-back-to",
        ),
        pytest.param(
            ObservedRevisions("v3", "v1", revisions=[rev("v1", 6, 6, "a"), rev("v2", 6, 4, "b")]),
            {"v1": 6, "v2": 4, "v3": 2},
            id="superseded-canary-keeps-only-ready-capacity",
        ),
        pytest.param(
            ObservedRevisions("new", "old", revisions=[rev("old", 10, 9)]),
            {"old": 10, "new": 2},
            id="old-not-ready-pod-kept-not-killed",
        ),
    ],
)
def test_plan_rollout(observed: ObservedRevisions, plan: dict[str, int]) -> None:
    assert plan_rollout(SPEC, observed) == plan


def test_rollout_target_is_stable_after_rollback() -> None:
    assert rollout_target(ObservedRevisions("new", "old", frozenset({"new"}))) == "old"
    assert rollout_target(ObservedRevisions("new", "old")) == "new"


def simulate(
    spec: Any, old_ready: int, new_ready_per_step: int, fail_at: int | None = None
) -> list[dict[str, int]]:
    """Step a rollout: each step, up to `new_ready_per_step` planned new pods become Ready."""
    revisions = {"old": [old_ready, old_ready], "new": [0, 0]}  # replicas, ready
    history = []
    failed: frozenset[str] = frozenset()
    for step in range(100):
        if fail_at is not None and step == fail_at:
            failed = frozenset({"new"})
        observed = ObservedRevisions(
            "new", "old", failed, [rev(n, r, rd, n) for n, (r, rd) in revisions.items() if r or rd]
        )
        plan = plan_rollout(spec, observed)
        history.append(plan)
        for name, replicas in plan.items():
            have = revisions.setdefault(name, [0, 0])
            ready = min(replicas, have[1] + (new_ready_per_step if name == "new" else replicas))
            revisions[name] = [replicas, min(ready, replicas)]
        if (
            plan.get("old", 0) == 0
            and plan.get("new") == desired_replicas(spec)
            and revisions["new"][1] == plan["new"]
        ):
            break
        if failed and plan.get("new", 0) == 0 and revisions["old"][1] == desired_replicas(spec):
            break
    return history


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=40),
    percent=st.integers(min_value=0, max_value=100),
    speed=st.integers(min_value=1, max_value=5),
)
def test_rollout_never_exceeds_replicas_plus_one_step_and_finishes(n: int, percent: int, speed: int) -> None:
    spec = make_isvc(replicas=n, maxReplicas=40, canary={"trafficPercent": percent}).spec
    history = simulate(spec, n, speed)
    step = canary_step(spec, n)
    assert all(sum(p.values()) <= n + step for p in history)
    assert history[0]["new"] == step
    assert history[-1] == {"old": 0, "new": n}


def test_rollback_mid_promotion_returns_to_full_old_capacity() -> None:
    spec = make_isvc(replicas=8, canary={"trafficPercent": 25}).spec
    history = simulate(spec, 8, 1, fail_at=4)
    assert all(sum(p.values()) <= 8 + 2 for p in history[:4])
    assert history[-1] == {"old": 8, "new": 0}
