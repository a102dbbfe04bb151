"""The TrainingJob controller carrying out plans, with the API server replaced by a recording client:
what it writes, in which order, and what it remembers when a write fails."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from test_trainingjob_factories import make_job, make_nodes, make_pod

from loom.builders.trainingjob_gang import gpu_pod_from
from loom.controllers import trainingjob
from loom.controllers.trainingjob_observe import Expectations


class Api:
    """Stands in for loom.kube: records every call; `fail` names pods whose ungate patch fails."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail: set[str] = set()
        self.version = 100

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
        if kind == "Pod" and name in self.fail:
            raise ApiException(status=500, reason="Internal Server Error")
        self.version += 1
        return {"metadata": {"name": name, "resourceVersion": str(self.version)}, **body}

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(("create", obj["kind"], obj["metadata"]["name"]))
        return obj

    def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        self.calls.append(("apply", obj["kind"], obj["metadata"]["name"]))
        return obj

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None, **_: Any) -> bool:
        self.calls.append(("delete", kind, name))
        return True

    def event(self, involved: dict[str, Any], reason: str, message: str, *, type_: str = "Normal") -> None:
        self.calls.append(("event", reason))


class World:
    """The controller's Kopf indexes, filled by the test."""

    def __init__(self) -> None:
        self.bodies: dict[Any, list[Any]] = {}
        self.pods: dict[Any, list[Any]] = {None: []}
        self.nodes: dict[Any, list[Any]] = {}

    def add_job(self, name: str, workers: int, *, gated: bool = True) -> None:
        job = make_job(name, roles={"worker": workers}, gpus=8)
        body = job.model_dump(mode="json", exclude_none=True)
        body["metadata"]["resourceVersion"] = "1"
        self.bodies[("ns", name)] = [body]
        now = datetime.now(UTC)
        pods = [make_pod(job, "worker", i, phase="Pending", gated=gated, created=now) for i in range(workers)]
        self.pods[("ns", name)] = pods
        self.pods[None] += [gpu_pod_from(p) for p in pods]

    def add_nodes(self, count: int) -> None:
        for name, node in make_nodes(count).items():
            self.nodes[name] = [node]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Api:
    fake = Api()
    for name in ("patch", "create", "apply", "delete", "event"):
        monkeypatch.setattr(trainingjob.kube, name, getattr(fake, name))
    return fake


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    w = World()
    indices = {"trainingjob_bodies": w.bodies, "trainingjob_pods": w.pods, "trainingjob_nodes": w.nodes}
    monkeypatch.setattr(trainingjob, "_indices", indices)
    monkeypatch.setattr(trainingjob, "_expectations", Expectations())
    for name in ("_written", "_phases", "_last_status_patch"):
        monkeypatch.setattr(trainingjob, name, {})
    monkeypatch.setattr(trainingjob, "_waiting", set())
    yield w


def reconcile(name: str) -> float | None:
    return asyncio.run(trainingjob.reconcile(("ns", name)))


def ungated(api: Api) -> list[str]:
    return [c[2] for c in api.calls if c[:2] == ("patch", "Pod")]


def test_a_gang_that_fits_is_ungated_whole_after_its_status(api: Api, world: World) -> None:
    world.add_nodes(2)
    world.add_job("a", 2)
    reconcile("a")
    assert api.calls[0] == ("patch", "TrainingJob", "a", "status")
    assert sorted(ungated(api)) == ["a-worker-0-a0", "a-worker-1-a0"]


def test_reservations_whose_ungate_succeeded_survive_a_failed_sibling(api: Api, world: World) -> None:
    """Of a gang's ungate patches one fails: the pods ungated for real keep their GPUs reserved, so a
    second job's gang is not admitted onto them before the watch shows them."""
    world.add_nodes(2)
    world.add_job("a", 2)
    api.fail = {"a-worker-1-a0"}
    with pytest.raises(ApiException):
        reconcile("a")
    assert ("ns", "a-worker-0-a0") in trainingjob._expectations.admitted(datetime.now(UTC))
    assert ("ns", "a-worker-1-a0") not in trainingjob._expectations.admitted(datetime.now(UTC))

    world.add_job("b", 2)  # 16 GPUs: only one node is free while a-worker-0 holds the other
    api.calls.clear()
    reconcile("b")
    assert ungated(api) == [], "b was admitted onto the GPUs a-worker-0-a0 was given"
    status = next(c for c in api.calls if c[:2] == ("patch", "TrainingJob"))
    assert status[2] == "b"
