"""TrainingJob controller: Kopf indexes and triggers, and a work queue that carries out plans.

Observed through Kopf indexes (in memory, filled before any handler runs): TrainingJobs, their
pods (slim copies) and PodGroups, every pod that holds GPUs, and nodes. Events only enqueue keys; a
worker reads the latest observations, calls the pure `decide`, and applies the plan through `loom.kube`
in a thread pool: status first, then deletions, the PodGroup, pods, then events. Level-triggered
throughout: a worker never relies on which event woke it.

Whether the API server serves scheduling.k8s.io/v1alpha2 PodGroups (kube-scheduler's gang scheduling)
is asked once, at startup, as Kopf resolves its watches then: an API server that starts serving them
later is used after the operator restarts. Without them the PodGroup index stays empty (Kopf warns that
it cannot serve the resource) and every gang is admitted by Loom's gate.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import kopf
from pydantic import ValidationError

from loom import kube, metrics
from loom.api.common import API_VERSION, GROUP, VERSION, parse_lenient
from loom.api.trainingjob import TrainingJob, TrainingJobStatus
from loom.builders.common import (
    INVALID_SPEC,
    UNREADABLE_STATUS,
    invalid_spec_message,
    stalled_conditions,
    unreadable_status_message,
)
from loom.builders.trainingjob import LABEL_JOB, pod_gpus
from loom.builders.trainingjob_gang import Node, gpu_pod_from, node_from
from loom.builders.trainingjob_plan import RESYNC, Cluster, Plan, decide
from loom.builders.trainingjob_podgroup import (
    POD_GROUP_API_VERSION,
    POD_GROUP_KIND,
    POD_GROUP_PLURAL,
)
from loom.controllers.clock import Clock
from loom.controllers.trainingjob_observe import Memory, slim_pod, slim_pod_group
from loom.controllers.trainingjob_queue import WorkQueue

KIND = "TrainingJob"
Key = tuple[str, str]
T = TypeVar("T")
log = logging.getLogger(__name__)

_executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="loom-trainingjob")
memory = Memory()
clock = Clock()
COUNTS_COALESCE_SECONDS = 1.0
POD_EVENT_BATCH_SECONDS = 0.1


def _pod_matters(labels: kopf.Labels, spec: Any, status: Any, type: str | None, **_: Any) -> bool:
    """A pod of a TrainingJob, or any pod whose GPUs were just freed."""
    if LABEL_JOB in labels:
        return True
    return pod_gpus(spec) > 0 and (type == "DELETED" or status.get("phase") in ("Succeeded", "Failed"))


def _node_changed(name: str, body: kopf.Body, type: str | None, **_: Any) -> bool:
    """Only changes that matter (readiness, cordon, GPUs), not the heartbeats every few seconds."""
    node = node_from(body)
    return type == "DELETED" or memory.nodes_seen.get(name) != (node.ready, node.unschedulable, node.gpus)


# -- observation (async: Kopf runs sync handlers in threads, one hop per event) -------------------------
@kopf.index(GROUP, VERSION, "trainingjobs")
async def trainingjob_bodies(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[Key, dict[str, Any]]:
    return {(str(namespace), name): json.loads(json.dumps(dict(body)))}


@kopf.index("pods")
async def trainingjob_pods(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Key | None, Any]:
    """Two kinds of entries in one index (one call per pod event): a TrainingJob's pods (slim) under
    (namespace, job), and every pod that holds or wants GPUs, for gang admission, under None."""
    out: dict[Key | None, Any] = {}
    if LABEL_JOB in labels:
        out[(str(namespace), labels[LABEL_JOB])] = slim_pod(body)
    gpu_pod = gpu_pod_from(body)
    if gpu_pod.gpus > 0:
        out[None] = gpu_pod
    return out


@kopf.index("nodes")
async def trainingjob_nodes(name: str, body: kopf.Body, **_: Any) -> dict[str, Node]:
    return {name: node_from(body)}


@kopf.index("scheduling.k8s.io", "v1alpha2", POD_GROUP_PLURAL, labels={LABEL_JOB: kopf.PRESENT})
async def trainingjob_podgroups(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Key, dict[str, Any]]:
    return {(str(namespace), labels[LABEL_JOB]): slim_pod_group(body)}


# -- triggers ------------------------------------------------------------------------------------
@kopf.on.startup()
async def trainingjob_start(**kwargs: Any) -> None:
    for name in ("trainingjob_bodies", "trainingjob_pods", "trainingjob_nodes", "trainingjob_podgroups"):
        memory.indices[name] = kwargs[name]
    memory.pod_groups_served = await _in_thread(kube.serves, POD_GROUP_API_VERSION, POD_GROUP_PLURAL)
    path = "kube-scheduler's gang scheduling (PodGroups)" if memory.pod_groups_served else "Loom's gate"
    log.info("TrainingJob gangs are placed all-or-nothing by %s", path)
    await _in_thread(_warm_up)
    queue.start()


@kopf.on.event(GROUP, VERSION, "trainingjobs")
async def trainingjob_event(namespace: str | None, name: str, **_: Any) -> None:
    queue.add((str(namespace), name))


@kopf.on.event("pods", when=_pod_matters)
async def trainingjob_pod_event(
    namespace: str | None,
    labels: kopf.Labels,
    spec: kopf.Spec,
    status: kopf.Status,
    type: str | None,
    **_: Any,
) -> None:
    if LABEL_JOB in labels:  # a gang's pods change together: one reconcile for the burst
        queue.add((str(namespace), labels[LABEL_JOB]), delay=POD_EVENT_BATCH_SECONDS)
    if pod_gpus(spec) > 0 and (type == "DELETED" or status.get("phase") in ("Succeeded", "Failed")):
        _wake_waiting()  # GPUs were freed: gangs waiting for them may fit now


@kopf.on.event("scheduling.k8s.io", "v1alpha2", POD_GROUP_PLURAL, labels={LABEL_JOB: kopf.PRESENT})
async def trainingjob_podgroup_event(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    """The scheduler's verdict on a gang (PodGroupScheduled) is part of the job's status."""
    queue.add((str(namespace), labels[LABEL_JOB]), delay=POD_EVENT_BATCH_SECONDS)


@kopf.on.event("nodes", when=_node_changed)
async def trainingjob_node_event(name: str, body: kopf.Body, type: str | None, **_: Any) -> None:
    node = node_from(body)
    if type == "DELETED":
        memory.nodes_seen.pop(name, None)
    else:
        memory.nodes_seen[name] = (node.ready, node.unschedulable, node.gpus)
    for key in list(memory.phases):  # pods on the node may be lost; capacity changed
        queue.add(key)


# -- the reconcile -------------------------------------------------------------------------------
async def reconcile(key: Key) -> float | None:
    started = time.monotonic()
    body = _latest(key)
    if body is None:
        _forget(key)
        return None
    now = clock.now()
    job = _model(body)
    if not isinstance(job, TrainingJob):  # nothing is decided on a spec or status it cannot read
        memory.waiting.discard(key)
        await _hold(key, body, job, now)
        return None
    pods = memory.expectations.merge(key, _store(memory.indices["trainingjob_pods"], key), now)
    nodes = {n.name: n for n in _store(memory.indices["trainingjob_nodes"], None, all_keys=True)}
    indexed = list(memory.indices["trainingjob_pods"].get(None) or ())
    seen = {(p.namespace, p.name) for p in indexed}
    gpu_pods = [*indexed, *memory.expectations.reservations(seen, now)]
    cluster = Cluster(
        nodes=nodes,
        pods=gpu_pods,
        admitted=memory.expectations.admitted(now),
        pod_groups_served=memory.pod_groups_served,
    )
    groups = _store(memory.indices.get("trainingjob_podgroups") or {}, key)
    plan = decide(job, pods, cluster, now, groups)
    created = {p["metadata"]["name"]: p for p in plan.create}
    for name, _ in plan.ungate:  # reserve the GPUs now, before any other job decides
        memory.expectations.expect_ungated(key[0], name, now)
        if name in created:
            memory.expectations.reserve(gpu_pod_from(created[name]), now)
    (memory.waiting.add if plan.waiting_for_capacity else memory.waiting.discard)(key)
    if _only_counts_changed(job.status, plan.status):
        waited = clock.monotonic() - memory.last_status_patch.get(key, 0.0)
        if waited < COUNTS_COALESCE_SECONDS:  # pods become Ready one by one: patch once for many
            plan.status = job.status or plan.status
            plan.requeue_after = min(plan.requeue_after or RESYNC, COUNTS_COALESCE_SECONDS - waited)
    not_ungated = {name for name, _ in plan.ungate}  # what _carry_out has not ungated for sure
    try:
        await _carry_out(key, body, job, plan, now, not_ungated)
    finally:  # only pods whose ungate patch succeeded keep their GPUs reserved
        for name in not_ungated:
            memory.expectations.cancel_ungated(key[0], name)
    _observe_phase(key, str(plan.status.phase))
    metrics.RECONCILE_SECONDS.labels(kind=KIND).observe(time.monotonic() - started)
    return plan.requeue_after


async def _carry_out(
    key: Key, body: dict[str, Any], job: TrainingJob, plan: Plan, now: datetime, not_ungated: set[str]
) -> None:
    """Carry `plan` out in its order; each pod whose ungate patch succeeded leaves `not_ungated`.
    A failed write ends the carry-out with its error after the writes already under way finished."""
    namespace, name = key
    status = plan.status.model_dump(mode="json")
    if job.status is None or status != job.status.model_dump(mode="json"):
        patched = await _in_thread(
            kube.patch, API_VERSION, KIND, name, namespace, {"status": status}, subresource="status"
        )
        if patched is None:
            return  # the job is gone
        observed = _store(memory.indices["trainingjob_bodies"], key)
        base = observed[0]["metadata"].get("resourceVersion", "") if observed else ""
        memory.written[key] = (base, patched)
        memory.last_status_patch[key] = clock.monotonic()
    await _gather(
        _in_thread(
            kube.delete,
            "v1",
            "Pod",
            d.name,
            namespace,
            uid=d.uid,
            grace_period_seconds=0 if d.force else None,
        )
        for d in plan.delete
    )
    for d in plan.delete:
        memory.expectations.expect_deleted(namespace, d.name, d.uid, now)
    await _gather(
        _in_thread(kube.delete, POD_GROUP_API_VERSION, POD_GROUP_KIND, g.name, namespace, uid=g.uid)
        for g in plan.delete_groups
    )
    if plan.service is not None:
        await _in_thread(kube.apply, plan.service)
    for group in plan.create_groups:  # before its pods: the scheduler queues them as the group is complete
        await _in_thread(kube.create, group)
    created = await _gather(_in_thread(kube.create, pod) for pod in plan.create)
    for pod, result in zip(plan.create, created, strict=True):
        memory.expectations.expect_created(key, result or pod, now)
    results = await asyncio.gather(
        *(
            _in_thread(kube.patch, "v1", "Pod", pod, namespace, {"spec": {"schedulingGates": left or None}})
            for pod, left in plan.ungate
        ),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    not_ungated.intersection_update(
        pod
        for (pod, _), r in zip(plan.ungate, results, strict=True)
        if r is None or isinstance(r, BaseException)
    )
    if failed:
        raise failed[0]
    if plan.delete_job:
        await _in_thread(kube.delete, API_VERSION, KIND, name, namespace, uid=job.metadata.get("uid"))
    await _gather(_in_thread(kube.event, body, e.reason, e.message, type_=e.type) for e in plan.events)
    if plan.restart_reason:
        metrics.TRAININGJOB_RESTARTS.labels(reason=plan.restart_reason).inc()
    if plan.running_after is not None:
        first = plan.status.attempt == 0 and plan.status.restartCount == 0
        histogram = metrics.TRAININGJOB_CREATE_TO_RUNNING if first else metrics.TRAININGJOB_RESTART_TO_RUNNING
        histogram.observe(plan.running_after)


# -- helpers -------------------------------------------------------------------------------------
def _on_error(key: Key, error: BaseException) -> None:
    metrics.RECONCILE_ERRORS.labels(kind=KIND).inc()


queue: WorkQueue[Key] = WorkQueue(reconcile, workers=16, on_error=_on_error)


def _store(index: Any, key: Any, *, all_keys: bool = False) -> list[Any]:
    if all_keys:
        return [value for store in index.values() for value in store]
    store = index.get(key)
    return list(store) if store is not None else []


def _latest(key: Key) -> dict[str, Any] | None:
    """The job as last observed, or as Loom last wrote it if the watch has not caught up yet."""
    found = _store(memory.indices["trainingjob_bodies"], key)
    if not found:
        return None
    body: dict[str, Any] = found[0]
    written = memory.written.get(key)
    if written is not None:
        if _is_older(body["metadata"].get("resourceVersion", ""), written):
            return written[1]
        del memory.written[key]
    return body


def _is_older(observed: str, written: tuple[str, dict[str, Any]]) -> bool:
    """Is the observed version older than Loom's own last write? etcd's versions are integers; for
    other storages only the version the write was based on is known to be older."""
    base, body = written
    try:
        return int(observed) < int(body["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return observed == base


def _model(body: dict[str, Any]) -> TrainingJob | Stall:
    """The job as a model, its status read leniently (unknown fields ignored, what parses kept), or
    why it cannot be acted on: a spec that does not validate, a status whose state cannot be read."""
    status = parse_lenient(TrainingJobStatus, body.get("status"))
    try:
        job = TrainingJob.model_validate({**body, "status": None})
    except ValidationError as e:
        return Stall(INVALID_SPEC, invalid_spec_message(e))
    if status.unreadable(TrainingJobStatus.RECOMPUTED):
        return Stall(UNREADABLE_STATUS, unreadable_status_message(status, TrainingJobStatus.RECOMPUTED))
    if status.ignored or status.dropped:
        log.debug(
            "status of %s: ignored %s, recomputing %s",
            body["metadata"]["name"],
            status.ignored,
            status.dropped,
        )
    job.status = status.value
    return job


@dataclass(frozen=True)
class Stall:
    reason: str
    message: str


async def _hold(key: Key, body: dict[str, Any], stall: Stall, now: datetime) -> None:
    """Only say why, in the Stalled condition (and an event when that changes): no pod, service or
    other status field is touched, so nothing this version cannot read is lost or acted upon."""
    namespace, name = key
    generation = (body.get("metadata") or {}).get("generation")
    conditions = stalled_conditions(
        (body.get("status") or {}).get("conditions"), stall.reason, stall.message, generation, now
    )
    if conditions is None:
        return
    patched = await _in_thread(
        kube.patch,
        API_VERSION,
        KIND,
        name,
        namespace,
        # observedGeneration too: kstatus reads Stalled only once the generation is observed
        {"status": {"conditions": conditions, "observedGeneration": generation}},
        subresource="status",
    )
    if patched is None:
        return
    base = body["metadata"].get("resourceVersion", "")
    memory.written[key] = (base, patched)
    await _in_thread(kube.event, body, stall.reason, stall.message, type_="Warning")


def _only_counts_changed(old: TrainingJobStatus | None, new: TrainingJobStatus) -> bool:
    """True when only the replica counts differ: no condition, attempt or time changed."""
    if old is None:
        return False
    counts = {"replicaStatuses", "readyReplicas"}
    return old.model_dump(exclude=counts) == new.model_dump(exclude=counts) and old != new


def _forget(key: Key) -> None:
    queue.forget(key)
    memory.forget(key)
    _observe_phase(key, None)


def _observe_phase(key: Key, phase: str | None) -> None:
    old = memory.phases.pop(key, None)
    if old is not None:
        metrics.RESOURCES_BY_PHASE.labels(kind=KIND, phase=old).dec()
    if phase is not None:
        memory.phases[key] = phase
        metrics.RESOURCES_BY_PHASE.labels(kind=KIND, phase=phase).inc()


def _wake_waiting() -> None:
    for key in list(memory.waiting):
        queue.add(key)


async def _in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_executor, functools.partial(fn, *args, **kwargs))


async def _gather(calls: Any) -> list[Any]:
    return list(await asyncio.gather(*calls))


def _warm_up() -> None:
    """Discover the API resources once, before many threads would do it at the same time."""
    kinds = [("v1", "Pod"), ("v1", "Service"), ("v1", "Event"), (API_VERSION, KIND)]
    if memory.pod_groups_served:
        kinds.append((POD_GROUP_API_VERSION, POD_GROUP_KIND))
    for api_version, kind in kinds:
        kube.dynamic().resources.get(api_version=api_version, kind=kind)
