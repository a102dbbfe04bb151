"""The InferenceService reconcile with the API server replaced by a recording client: what it
writes for a stored status written by another Loom version, one it cannot read, and a bad spec."""

from __future__ import annotations

from typing import Any

import pytest
from test_inferenceservice_factories import Pod, make_isvc

from loom.builders.inferenceservice import revision_hash
from loom.controllers import inferenceservice as controller
from loom.controllers.clock import Clock


class Api:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.status_patches: list[dict[str, Any]] = []

    def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        body: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any] | None:
        self.calls.append(("patch", kind, name, subresource or ""))
        if subresource == "status":
            self.status_patches.append(body)
        return {"metadata": {"name": name}, **body}

    def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        self.calls.append(("apply", obj["kind"], obj["metadata"]["name"]))
        return obj

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None, **_: Any) -> bool:
        self.calls.append(("delete", kind, name))
        return True

    def event(self, involved: dict[str, Any], reason: str, message: str, *, type_: str = "Normal") -> None:
        self.calls.append(("event", reason))


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Api:
    fake = Api()
    for name in ("patch", "apply", "delete", "event"):
        monkeypatch.setattr(controller.kube, name, getattr(fake, name))
    return fake


STABLE = "s1stable"


def body(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    isvc = make_isvc(replicas=2, scaling={"autoscaler": "external"})
    out = isvc.model_dump(mode="json", exclude_none=True)
    out["spec"].update(spec)
    out["status"] = status
    return out


def latest() -> str:
    return revision_hash(make_isvc(replicas=2, scaling={"autoscaler": "external"}), controller.SIDECAR)


def serving_stable() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The stable revision's Deployment (2 replicas) and its 2 Ready pods, as the indexes hold them."""
    pods = [Pod(f"ranker-{STABLE}-{i}", revision=STABLE).started().ready().obj() for i in range(2)]
    deployment = {
        "metadata": {
            "name": f"ranker-{STABLE}",
            "uid": "uid-dep",
            "labels": {"loom.ml/inferenceservice": "ranker", "loom.ml/revision": STABLE},
            "annotations": {},
            "creationTimestamp": "2026-01-01T12:00:00Z",
        },
        "spec": {"replicas": 2},
        "status": {},
    }
    return pods, [deployment]


def rolled_back_status(**model: Any) -> dict[str, Any]:
    """The latest revision failed to load and was rolled back; the stable one serves."""
    return {
        "phase": "Ready",
        "revisions": {"latestCreated": latest(), "latestReady": STABLE, "failed": [latest()]},
        "modelStatus": {
            "state": "FailedToLoad",
            "reason": "SourceUnreachable",
            "exitCode": 3,
            "revision": latest(),
            **model,
        },
        "conditions": [
            {
                "type": "RolloutComplete",
                "status": "False",
                "reason": "RolledBack",
                "message": "rolled back",
                "lastTransitionTime": "2026-01-01T12:00:00Z",
            }
        ],
    }


def rollouts(api: Api) -> list[tuple[str, ...]]:
    return [c for c in api.calls if c[1] == "Deployment" or c[0] == "delete"]


def test_a_status_from_a_newer_version_keeps_the_failed_revisions(api: Api) -> None:
    """A field a newer Loom added (modelStatus.progress) must not make this one forget that the
    latest revision was rolled back and roll it out again."""
    pods, deployments = serving_stable()
    controller.reconcile(body(rolled_back_status(progress=50)), {}, pods, deployments, {})
    assert rollouts(api) == [], "a rolled-back revision was rolled out again"
    (patch,) = api.status_patches or [{"status": rolled_back_status()}]
    assert patch["status"]["revisions"]["failed"] == [latest()]


def test_a_status_it_cannot_read_is_not_acted_on(api: Api) -> None:
    pods, deployments = serving_stable()
    status = rolled_back_status()
    status["revisions"]["failed"] = latest()  # not a list: which revisions failed is unknown
    controller.reconcile(body(status), {}, pods, deployments, {})
    assert [c for c in api.calls if c[0] != "event"] == [("patch", "InferenceService", "ranker", "status")]
    (patch,) = api.status_patches
    assert list(patch["status"]) == ["conditions", "observedGeneration"]
    stalled = patch["status"]["conditions"][-1]
    assert (stalled["type"], stalled["reason"]) == ("Stalled", "UnreadableStatus")
    assert "revisions.failed" in stalled["message"]
    assert ("event", "UnreadableStatus") in api.calls
    api.calls.clear()
    controller.reconcile(
        body({**status, "conditions": patch["status"]["conditions"]}), {}, pods, deployments, {}
    )
    assert api.calls == []  # said once; nothing else, tick after tick


def test_an_invalid_spec_gets_a_condition_and_an_event(api: Api) -> None:
    pods, deployments = serving_stable()
    controller.reconcile(body(rolled_back_status(), minReplicas=-1), {}, pods, deployments, {})
    assert rollouts(api) == [] and ("event", "InvalidSpec") in api.calls
    stalled = api.status_patches[0]["status"]["conditions"][-1]
    assert stalled["reason"] == "InvalidSpec" and "spec.minReplicas" in stalled["message"]


class SteppedClock(Clock):
    def __init__(self) -> None:
        self.seconds = 1000.0

    def monotonic(self) -> float:
        return self.seconds


def test_the_service_is_applied_when_it_changes_and_once_a_minute(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = SteppedClock()
    monkeypatch.setattr(controller, "clock", clock)
    pods, deployments = serving_stable()
    memo: dict[str, Any] = {}

    def services() -> int:
        controller.reconcile(body(rolled_back_status()), memo, pods, deployments, {})
        return sum(1 for c in api.calls if c[:2] == ("apply", "Service"))

    assert services() == 1
    clock.seconds += 30
    assert services() == 1  # unchanged, and not watched: re-applied only after a minute
    clock.seconds += 31
    assert services() == 2
