"""The TrainingJob controller carrying out plans, with the API server replaced by a recording client:
what it writes, in which order, and what it remembers when a write fails."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from test_trainingjob_factories import make_job, make_nodes, make_pod

from loom.builders.trainingjob_gang import gpu_pod_from
from loom.controllers import trainingjob
from loom.controllers.clock import Clock
from loom.controllers.trainingjob_observe import Memory


class Api:
    """Stands in for loom.kube: records every call; `fail` names pods whose ungate patch fails."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail: set[str] = set()
        self.version = 100
        self.patch_bodies: list[dict[str, Any]] = []

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
            self.patch_bodies.append(body)
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
        self.clock = SteppedClock()

    def add_job(
        self,
        name: str,
        workers: int,
        *,
        gated: bool = True,
        attempt: int = 0,
        phase: str = "Pending",
        status: dict[str, Any] | None = None,
        spec: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A job and its gang `attempt` in the indexes; `status` and `spec` as stored (raw)."""
        job = make_job(name, roles={"worker": workers}, gpus=8)
        body = job.model_dump(mode="json", exclude_none=True)
        body["metadata"]["resourceVersion"] = "1"
        if status is not None:
            body["status"] = status
        body["spec"].update(spec or {})
        self.bodies[("ns", name)] = [body]
        now = self.clock.now()
        pods = [
            make_pod(job, "worker", i, attempt, phase=phase, gated=gated, created=now, node=f"gpu-{i}")
            for i in range(workers)
        ]
        self.pods[("ns", name)] = pods
        self.pods[None] += [gpu_pod_from(p) for p in pods]
        return body

    def add_nodes(self, count: int) -> None:
        for name, node in make_nodes(count).items():
            self.nodes[name] = [node]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Api:
    fake = Api()
    for name in ("patch", "create", "apply", "delete", "event"):
        monkeypatch.setattr(trainingjob.kube, name, getattr(fake, name))
    return fake


class SteppedClock(Clock):
    """Wall and monotonic time that move only when the test says."""

    def __init__(self) -> None:
        self.wall = datetime.now(UTC)
        self.seconds = 1000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.seconds

    def step(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.seconds += seconds


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The indexes in a fresh controller memory, and a stepped clock."""
    w = World()
    indices = {"trainingjob_bodies": w.bodies, "trainingjob_pods": w.pods, "trainingjob_nodes": w.nodes}
    monkeypatch.setattr(trainingjob, "memory", Memory(indices=indices))
    monkeypatch.setattr(trainingjob, "clock", w.clock)
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
    assert ("ns", "a-worker-0-a0") in trainingjob.memory.expectations.admitted(world.clock.now())
    assert ("ns", "a-worker-1-a0") not in trainingjob.memory.expectations.admitted(world.clock.now())

    world.add_job("b", 2)  # 16 GPUs: only one node is free while a-worker-0 holds the other
    api.calls.clear()
    reconcile("b")
    assert ungated(api) == [], "b was admitted onto the GPUs a-worker-0-a0 was given"
    status = next(c for c in api.calls if c[:2] == ("patch", "TrainingJob"))
    assert status[2] == "b"


def _running_status(**extra: Any) -> dict[str, Any]:
    since = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {"status": "True", "lastTransitionTime": since, "observedGeneration": 1}
    return {
        "phase": "Running",
        "attempt": 1,
        "restartCount": 1,
        "replicas": 2,
        "startTime": since,
        "conditions": [
            {"type": "Created", "reason": "JobCreated", **condition},
            {"type": "Running", "reason": "GangRunning", **condition},
        ],
        **extra,
    }


def writes(api: Api) -> list[tuple[str, ...]]:
    return [c for c in api.calls if c[0] in ("create", "delete") or c[:2] == ("patch", "Pod")]


def test_a_status_from_another_version_keeps_the_running_gang(api: Api, world: World) -> None:
    """A field this version does not know inside a condition, and a phase it does not know (a
    downgrade): the job is still at attempt 1 and its running gang is left alone."""
    status = _running_status(phase="Preempted", preemptions=0)
    status["conditions"][1]["severity"] = "Info"
    world.add_nodes(2)
    world.add_job("a", 2, gated=False, attempt=1, phase="Running", status=status)
    reconcile("a")
    assert writes(api) == [], "the running gang of attempt 1 was touched"
    patched = [c for c in api.calls if c[:2] == ("patch", "TrainingJob")]
    assert patched == [("patch", "TrainingJob", "a", "status")]  # the phase it can tell: Running
    assert trainingjob.memory.phases[("ns", "a")] == "Running"


def test_a_status_it_cannot_read_is_left_alone_and_reported(api: Api, world: World) -> None:
    status = _running_status(attempt="two")
    world.add_nodes(2)
    world.add_job("a", 2, gated=False, attempt=1, phase="Running", status=status)
    assert reconcile("a") is None
    assert writes(api) == []
    (body,) = api.patch_bodies
    assert list(body["status"]) == ["conditions", "observedGeneration"], (
        "fields it cannot read were overwritten"
    )
    stalled = body["status"]["conditions"][-1]
    assert (stalled["type"], stalled["status"], stalled["reason"]) == ("Stalled", "True", "UnreadableStatus")
    assert "attempt: Input should be a valid integer" in stalled["message"]
    assert body["status"]["conditions"][:2] == status["conditions"]
    assert ("event", "UnreadableStatus") in api.calls

    world.bodies[("ns", "a")][0]["status"]["conditions"] = body["status"]["conditions"]  # the watch shows it
    world.bodies[("ns", "a")][0]["metadata"]["resourceVersion"] = "1000"
    api.calls.clear()
    reconcile("a")
    assert api.calls == [], "said twice"


def test_an_invalid_spec_gets_a_condition_and_an_event_not_retries(api: Api, world: World) -> None:
    world.add_nodes(2)
    world.add_job("a", 2, spec={"masterPort": 0})
    assert reconcile("a") is None  # no error: nothing to retry until the spec changes
    assert writes(api) == [] and ("event", "InvalidSpec") in api.calls
    (body,) = api.patch_bodies
    stalled = body["status"]["conditions"][-1]
    assert stalled["reason"] == "InvalidSpec" and "masterPort" in stalled["message"]
    assert "kubectl apply --server-side -k crds" in stalled["message"]

    world.bodies[("ns", "a")][0]["spec"]["masterPort"] = 23456  # fixed
    world.bodies[("ns", "a")][0]["status"] = body["status"]
    world.bodies[("ns", "a")][0]["metadata"]["resourceVersion"] = "1000"  # the watch shows the edit
    api.calls.clear()
    reconcile("a")
    assert sorted(c[2] for c in writes(api)) == ["a-worker-0-a0", "a-worker-1-a0"]  # ungated: it runs
    last = api.patch_bodies[-1]
    assert "Stalled" not in [c["type"] for c in last["status"]["conditions"]]


def test_pods_becoming_ready_one_by_one_are_patched_once_a_second(api: Api, world: World) -> None:
    """Only the Ready counts changed: the status is patched at most once per second (the clock is
    stepped), and the reconcile asks to come back when the second is over."""
    world.add_nodes(2)
    status = _running_status(readyReplicas=0)
    world.add_job("a", 2, gated=False, attempt=1, phase="Running", status=status)
    reconcile("a")  # the counts differ from the stored status: patched
    assert len(api.patch_bodies) == 1
    world.bodies[("ns", "a")][0]["status"] = api.patch_bodies[-1]["status"]
    world.bodies[("ns", "a")][0]["metadata"]["resourceVersion"] = "1000"
    world.pods[("ns", "a")][0]["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    world.clock.step(0.3)
    assert reconcile("a") == pytest.approx(0.7)  # counts only: not now, in 0.7 s
    assert len(api.patch_bodies) == 1
    world.clock.step(0.7)
    reconcile("a")
    assert len(api.patch_bodies) == 2
    assert api.patch_bodies[-1]["status"]["readyReplicas"] == 1
