"""Lenient parsing of stored status: what another Loom version wrote is kept where it parses."""

from __future__ import annotations

from typing import Any

import pytest

from loom.api.common import parse_lenient
from loom.api.inferenceservice import InferenceServiceStatus
from loom.api.trainingjob import TrainingJobStatus

RUNNING = {
    "type": "Running",
    "status": "True",
    "reason": "GangRunning",
    "lastTransitionTime": "2026-01-01T00:00:00Z",
}


def test_a_well_formed_status_is_read_as_is() -> None:
    raw = {"attempt": 2, "conditions": [RUNNING], "phase": "Running"}
    parsed = parse_lenient(TrainingJobStatus, raw)
    assert parsed.value == TrainingJobStatus.model_validate(raw)
    assert parsed.ignored == parsed.dropped == ()


CASES = [
    pytest.param(
        {"attempt": 3, "conditions": [{**RUNNING, "severity": "Info"}]},
        {"attempt": 3, "conditions": 1},
        ("conditions[0].severity",),
        (),
        id="unknown-field-in-a-condition",
    ),
    pytest.param(
        {"attempt": 3, "phase": "Preempted", "newCounter": 4},
        {"attempt": 3, "phase": None},
        ("newCounter",),
        ("phase",),
        id="new-enum-value-and-new-field",
    ),
    pytest.param(
        {"attempt": "three", "restartCount": 2},
        {"attempt": 0, "restartCount": 2},
        (),
        ("attempt",),
        id="wrong-type",
    ),
    pytest.param(
        {"attempt": 1, "conditions": [RUNNING, {"type": "Created", "status": "Maybe"}, {"status": "True"}]},
        {"attempt": 1, "conditions": 1},
        (),
        ("conditions[1].status", "conditions[1]", "conditions[1]"),
        id="bad-conditions-go-one-by-one",
    ),
    pytest.param(
        {"replicaStatuses": {"worker": {"active": "x", "ready": 2}}},
        {"replicaStatuses": {"worker": {"active": 0, "ready": 2, "succeeded": 0, "failed": 0}}},
        (),
        ("replicaStatuses.worker.active",),
        id="inside-a-map",
    ),
]


@pytest.mark.parametrize(("raw", "kept", "ignored", "dropped"), CASES)
def test_what_parses_is_kept(
    raw: dict[str, Any], kept: dict[str, Any], ignored: tuple[str, ...], dropped: tuple[str, ...]
) -> None:
    parsed = parse_lenient(TrainingJobStatus, raw)
    dumped = parsed.value.model_dump(mode="json")
    for key, want in kept.items():
        got = dumped[key]
        assert (len(got) if isinstance(want, int) and isinstance(got, list) else got) == want, key
    assert parsed.ignored == ignored
    assert tuple(d.split(":")[0] for d in parsed.dropped) == dropped


def test_unreadable_ignores_what_is_recomputed_anyway() -> None:
    parsed = parse_lenient(TrainingJobStatus, {"phase": "Preempted", "attempt": "x"})
    assert [d.split(":")[0] for d in parsed.unreadable(frozenset({"phase"}))] == ["attempt"]
    assert "Input should be a valid integer" in parsed.dropped[-1]


def test_a_nested_status_keeps_the_rollout_record() -> None:
    raw = {
        "revisions": {"latestReady": "s1", "failed": ["f1"], "items": [{"name": "s1", "replicas": "two"}]},
        "modelStatus": {"state": "Quantizing", "progress": 50, "revision": "f1"},
    }
    parsed = parse_lenient(InferenceServiceStatus, raw)
    assert parsed.value.revisions.latestReady == "s1" and parsed.value.revisions.failed == ["f1"]
    assert parsed.value.modelStatus.revision == "f1" and parsed.value.modelStatus.state == "Pending"
    assert parsed.ignored == ("modelStatus.progress",)
    assert sorted(d.split(":")[0] for d in parsed.dropped) == [
        "modelStatus.state",
        "revisions.items[0].replicas",
    ]


def test_garbage_never_raises() -> None:
    for raw in ({"conditions": "all good"}, {"conditions": [1, 2]}, {"replicaStatuses": []}, None):
        parse_lenient(TrainingJobStatus, raw)  # type: ignore[arg-type]
