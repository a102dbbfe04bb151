"""The controller's non-Kopf parts: expectations over the index, the work queue, module purity."""

from __future__ import annotations

import ast
import asyncio
from datetime import timedelta
from pathlib import Path

from test_trainingjob_factories import T0, at, make_job, make_pod

from loom.builders.trainingjob import desired_pods
from loom.builders.trainingjob_gang import GpuPod, Node, free_gpus
from loom.controllers.activity import Activity
from loom.controllers.trainingjob_observe import Expectations, slim_pod
from loom.controllers.trainingjob_queue import WorkQueue

KEY = ("ns", "train")


def test_slim_pod_keeps_what_decisions_read() -> None:
    pod = desired_pods(make_job(), 0)[0]
    pod["status"] = {
        "phase": "Running",
        "podIP": "10.0.0.1",
        "hostIP": "x",
        "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None}],
    }
    slim = slim_pod(pod)
    assert slim["metadata"]["name"] == "train-master-0-a0"
    assert slim["spec"]["schedulingGates"] == [{"name": "loom.ml/gang"}]
    assert slim["spec"]["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": 8}}
    assert "env" not in slim["spec"]["containers"][0]
    assert slim["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert "podIP" not in slim["status"]


def test_expectations_fill_in_unobserved_writes_until_the_index_shows_them() -> None:
    job = make_job()
    exp = Expectations()
    created = desired_pods(job, 0)[1]
    exp.expect_created(KEY, created, T0)
    gated = make_pod(job, "master", 0, gated=True, phase="Pending")
    exp.expect_ungated("ns", "train-master-0-a0", T0)
    old = make_pod(job, "worker", 1, attempt=0, uid="u1")
    exp.expect_deleted("ns", old["metadata"]["name"], "u1", T0)

    merged = {p["metadata"]["name"]: p for p in exp.merge(KEY, [gated, old], at(1))}
    assert "train-worker-0-a0" in merged  # created, not observed yet
    assert merged["train-master-0-a0"]["spec"]["schedulingGates"] == []
    assert merged["train-worker-1-a0"]["metadata"]["deletionTimestamp"]
    assert exp.admitted(at(1)) == {("ns", "train-master-0-a0")}

    # the index catches up: the expectations end
    observed_created = make_pod(job, "worker", 0, gated=True, phase="Pending")
    ungated = make_pod(job, "master", 0, phase="Pending")
    merged = {p["metadata"]["name"]: p for p in exp.merge(KEY, [observed_created, ungated], at(2))}
    assert merged["train-worker-0-a0"] is not None and exp.created == {}
    assert exp.ungated == {} and exp.deleted == {("ns", "train-worker-1-a0"): ("u1", T0)}
    assert exp.admitted(T0 + timedelta(seconds=31)) == frozenset() and exp.deleted == {}


def test_expectations_expire() -> None:
    exp = Expectations()
    exp.expect_created(KEY, desired_pods(make_job(), 0)[0], T0)
    assert exp.merge(KEY, [], at(31)) == []


def test_work_queue_dedupes_serialises_and_requeues() -> None:
    async def scenario() -> list[str]:
        seen: list[str] = []
        release = asyncio.Event()

        async def handler(key: str) -> float | None:
            seen.append(key)
            if key == "a" and seen.count("a") == 1:
                await release.wait()
            if key == "b" and seen.count("b") == 1:
                return 0.05  # come back soon
            if key == "c" and seen.count("c") == 1:
                raise RuntimeError("transient")
            return None

        queue: WorkQueue[str] = WorkQueue(handler, workers=4, base_backoff=0.05)
        queue.start()
        queue.add("a")
        queue.add("a")  # deduplicated while queued
        await asyncio.sleep(0.01)
        queue.add("a")  # while being handled: once more afterwards
        queue.add("a")
        queue.add("b")
        queue.add("c")
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.sleep(0.3)
        await queue.stop()
        return seen

    seen = asyncio.run(scenario())
    assert seen.count("a") == 2
    assert seen.count("b") == 2
    assert seen.count("c") == 2  # retried after the error


def test_observation_helpers_do_no_io() -> None:
    """trainingjob_observe lives beside the handlers; import-linter guards the pure layers, this it."""
    root = Path(__file__).resolve().parents[1] / "loom" / "controllers"
    for module in ("trainingjob_observe",):
        tree = ast.parse((root / f"{module}.py").read_text())
        imported = {
            name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for name in (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            )
        }
        assert not {n for n in imported if n.split(".")[0] in ("kopf", "kubernetes") or n == "loom.kube"}, (
            module
        )


def test_pods_admitted_as_they_are_created_take_gpus_before_the_watch_shows_them() -> None:
    exp = Expectations()
    exp.reserve(GpuPod("ns", "a-worker-0-a0", None, 8, gated=True), T0)
    exp.reserve(GpuPod("ns", "a-worker-1-a0", None, 8, gated=True), T0)
    reserved = exp.reservations(set(), at(1))
    assert [(p.name, p.gpus, p.gated) for p in reserved] == [
        ("a-worker-0-a0", 8, False),
        ("a-worker-1-a0", 8, False),
    ]
    # Two 8-GPU nodes are no longer free for another job's gang.
    nodes = [Node("n1", gpus=8), Node("n2", gpus=8)]
    assert free_gpus(nodes, reserved) == {"n1": 0, "n2": 0}
    # Once the index shows a pod it speaks for itself; a write that never showed expires.
    assert [p.name for p in exp.reservations({("ns", "a-worker-0-a0")}, at(2))] == ["a-worker-1-a0"]
    assert exp.reservations(set(), T0 + timedelta(seconds=31)) == []
    exp.reserve(GpuPod("ns", "b-0", None, 4), T0)
    exp.cancel_ungated("ns", "b-0")
    assert exp.reservations(set(), at(1)) == []


def test_work_queue_holds_its_keys_while_the_operator_is_paused() -> None:
    """Kopf pauses the operator under peering; the queue's workers and timers run outside Kopf, so
    they ask the activity gate: nothing is handled while paused, everything queued is after."""

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        seen: list[str] = []
        activity = Activity(standalone=False)
        activity.hold()  # Kopf runs the operator (its peering daemon)

        async def handler(key: str) -> float | None:
            seen.append(key)
            return 0.05 if key == "timer" and seen.count("timer") == 1 else None

        queue: WorkQueue[str] = WorkQueue(handler, workers=2, activity=activity)
        queue.start()
        queue.add("timer")
        await asyncio.sleep(0.02)
        activity.release()  # Kopf paused it: the timer of "timer" fires meanwhile
        queue.add("event")
        await asyncio.sleep(0.2)
        during = list(seen)
        activity.hold()  # active again
        await asyncio.sleep(0.1)
        after = list(seen)
        activity.release()
        queue.add("late")
        await asyncio.sleep(0.05)
        await queue.stop()
        return during, after, list(seen)

    during, after, final = asyncio.run(scenario())
    assert during == ["timer"]
    assert sorted(after) == ["event", "timer", "timer"]
    assert "late" not in final


def test_activity_counts_kopf_daemons_and_is_always_active_standalone() -> None:
    assert Activity().active
    peered = Activity(standalone=False)
    assert not peered.active
    peered.hold()
    peered.hold()  # one daemon per peering object (a namespace each)
    peered.release()
    assert peered.active
    peered.release()
    peered.release()  # never below zero
    assert not peered.active
    peered.hold()
    assert peered.active
