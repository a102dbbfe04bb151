"""FeaturePipeline controller: Kopf indexes and triggers, and a work queue that carries out plans.

Observed through Kopf indexes (in memory): pipelines, their children (Jobs, SparkApplications,
RayJobs, the streaming Deployment) and their pods, all by the label `loom.ml/featurepipeline`, and
which engine CRDs the cluster serves. Any change of those, and the next schedule tick, enqueue the
pipeline; a worker reads the latest observations, calls the pure `decide`, and applies the plan
through `loom.kube`: children first, then the status (once, when it changed), then deletions of old
scheduled runs and events. A missing Spark or Ray CRD is a status condition, never a crash loop: the
index of CRDs wakes the pipeline when it is installed.

Operator environment:
  LOOM_FEATURES_IMAGE   runtime image of pipeline pods (default ghcr.io/loom-ml/loom-features:0.1.0;
                        spark and ray use its -spark / -ray variants unless engine.image is set)
  LOOM_SPARK_VERSION    spec.sparkVersion of SparkApplications (default 4.0.1)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import kopf
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from pydantic import ValidationError

from loom import kube, metrics
from loom.api.common import API_VERSION, GROUP, VERSION
from loom.api.featurepipeline import LABEL_PIPELINE, FeaturePipeline, FeaturePipelineStatus
from loom.builders.featurepipeline import CHILD_API_VERSIONS, DEFAULT_IMAGE, DEFAULT_SPARK_VERSION, Images
from loom.builders.featurepipeline_plan import ENGINE_CRDS, Observation, Plan, decide
from loom.builders.featurepipeline_runs import RunPhase, observe_run
from loom.builders.featurepipeline_status import needs_patch, run_status
from loom.controllers.featurepipeline_observe import Expectations, plain_body, slim_child, slim_pod
from loom.controllers.trainingjob_queue import WorkQueue

KIND = "FeaturePipeline"
IMAGES = Images(
    base=os.environ.get("LOOM_FEATURES_IMAGE") or DEFAULT_IMAGE,
    spark_version=os.environ.get("LOOM_SPARK_VERSION") or DEFAULT_SPARK_VERSION,
)
CHILD_EVENT_BATCH_SECONDS = 0.1
Key = tuple[str, str]
T = TypeVar("T")
log = logging.getLogger(__name__)
_RUN_INDEXES = ("featurepipeline_jobs", "featurepipeline_sparkapps", "featurepipeline_rayjobs")
_ENGINE_CRD_NAMES = frozenset(crd for crd, _, _ in ENGINE_CRDS.values())
_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="loom-featurepipeline")
_indices: dict[str, Any] = {}
_written: dict[Key, dict[str, Any]] = {}  # the body Loom last patched, until the watch shows it
_expectations = Expectations()
_phases: dict[Key, str] = {}


def _owner(namespace: str | None, labels: kopf.Labels) -> Key:
    return (str(namespace), labels[LABEL_PIPELINE])


async def _child_index(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[Key, Any]:
    return {_owner(namespace, labels): slim_child(body)}


def _engine_crd(name: str, **_: Any) -> bool:
    return name in _ENGINE_CRD_NAMES


# -- observation -----------------------------------------------------------------------------------
PRESENT = {LABEL_PIPELINE: kopf.PRESENT}
CHILD_RESOURCES = {
    "featurepipeline_jobs": ("batch", "v1", "jobs"),
    "featurepipeline_sparkapps": ("sparkoperator.k8s.io", "v1beta2", "sparkapplications"),
    "featurepipeline_rayjobs": ("ray.io", "v1", "rayjobs"),
    "featurepipeline_streams": ("apps", "v1", "deployments"),
}
for _id, _resource in CHILD_RESOURCES.items():
    kopf.index(*_resource, labels=PRESENT, id=_id)(_child_index)


@kopf.index(GROUP, VERSION, "featurepipelines")
async def featurepipeline_bodies(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[Key, Any]:
    return {(str(namespace), name): plain_body(body)}


@kopf.index("pods", labels=PRESENT)
async def featurepipeline_pods(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[Key, Any]:
    return {_owner(namespace, labels): slim_pod(body)}


@kopf.index("apiextensions.k8s.io", "v1", "customresourcedefinitions", when=_engine_crd)
async def featurepipeline_engine_crds(name: str, status: kopf.Status, **_: Any) -> dict[str, bool]:
    established = any(
        c.get("type") == "Established" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return {name: established}


# -- triggers --------------------------------------------------------------------------------------
@kopf.on.startup()
async def featurepipeline_start(**kwargs: Any) -> None:
    for name in (
        "featurepipeline_bodies",
        "featurepipeline_pods",
        "featurepipeline_engine_crds",
        *CHILD_RESOURCES,
    ):
        _indices[name] = kwargs[name]
    queue.start()


@kopf.on.event(GROUP, VERSION, "featurepipelines")
async def featurepipeline_event(namespace: str | None, name: str, **_: Any) -> None:
    queue.add((str(namespace), name))


async def _child_event(namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    queue.add(_owner(namespace, labels), delay=CHILD_EVENT_BATCH_SECONDS)


_WATCHED: list[tuple[str, ...]] = [*CHILD_RESOURCES.values(), ("v1", "pods")]
for _watched in _WATCHED:
    kopf.on.event(*_watched, labels=PRESENT, id=f"featurepipeline_{_watched[-1]}_event")(_child_event)


@kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", when=_engine_crd)
async def featurepipeline_crd_event(**_: Any) -> None:
    for key in list(_phases):  # an engine appeared or went: every pipeline may start or stop waiting
        queue.add(key)


# -- the reconcile ---------------------------------------------------------------------------------
async def reconcile(key: Key) -> float | None:
    started = time.monotonic()
    body = _latest(key)
    if body is None:
        _forget(key)
        return None
    pipeline = _model(body)
    if pipeline is None:
        return None
    children = [c for index in _RUN_INDEXES for c in _store(index, key)]
    children = _expectations.merge(key, children, time.monotonic())
    pods = _store("featurepipeline_pods", key)
    runs = [run for c in children if (run := observe_run(c, pods)) is not None]
    streams = _store("featurepipeline_streams", key)
    crds = frozenset(name for name, store in _indices["featurepipeline_engine_crds"].items() if any(store))
    plan = decide(
        pipeline, Observation(runs, streams[0] if streams else None, crds), datetime.now(UTC), IMAGES
    )
    await _in_thread(_carry_out, key, body, pipeline, plan)
    _observe_phase(key, str(plan.status.phase))
    metrics.RECONCILE_SECONDS.labels(kind=KIND).observe(time.monotonic() - started)
    return plan.requeue_after


def _carry_out(key: Key, body: dict[str, Any], pipeline: FeaturePipeline, plan: Plan) -> None:
    namespace, name = key
    existed: set[str] = set()
    for child in plan.create:
        try:
            created = kube.create(child)
        except ResourceNotFoundError:
            log.warning("%s/%s: %s is not served; its run waits", namespace, name, child["kind"])
            continue
        if created is None:
            existed.add(child["metadata"]["name"])
        _expectations.expect(key, created or child, time.monotonic())
    for desired in plan.apply:
        kube.apply(desired)
    if needs_patch(pipeline.status, plan.status):
        status = plan.status.model_dump(mode="json")
        patched = kube.patch(API_VERSION, KIND, name, namespace, {"status": status}, subresource="status")
        if patched is None:
            return  # the pipeline is gone
        _written[key] = patched
    _record_metrics(key, pipeline, plan)
    for run in plan.delete:
        kube.delete(
            CHILD_API_VERSIONS[run.child_kind], run.child_kind, run.name, namespace, uid=run.uid or None
        )
    for event in plan.events:
        if event.reason != "RunStarted" or event.run not in existed:
            kube.event(body, event.reason, event.message, type_=event.type)


def _record_metrics(key: Key, pipeline: FeaturePipeline, plan: Plan) -> None:
    namespace, name = key
    engine = str(pipeline.spec.engine.type)
    for run in plan.recorded:
        result = "succeeded" if run.phase == RunPhase.SUCCEEDED else "failed"
        metrics.FEATURE_RUNS.labels(namespace, name, engine, result).inc()
        if run.summary and run.summary.rows_out:
            metrics.FEATURE_ROWS_WRITTEN.labels(namespace, name, engine).inc(run.summary.rows_out)
        seconds = run_status(run).seconds
        if seconds is not None:
            metrics.FEATURE_RUN_SECONDS.labels(engine, result).observe(seconds)
    if plan.status.freshnessSeconds is not None:
        metrics.FEATURE_FRESHNESS.labels(namespace, name).set(plan.status.freshnessSeconds)


# -- helpers ---------------------------------------------------------------------------------------
def _on_error(key: Key, error: BaseException) -> None:
    metrics.RECONCILE_ERRORS.labels(kind=KIND).inc()


queue: WorkQueue[Key] = WorkQueue(reconcile, workers=8, on_error=_on_error)


def _store(index: str, key: Any) -> list[Any]:
    store = _indices[index].get(key)
    return list(store) if store is not None else []


def _latest(key: Key) -> dict[str, Any] | None:
    """The pipeline as last observed, or as Loom last wrote it while the watch has not caught up."""
    found = _store("featurepipeline_bodies", key)
    if not found:
        return None
    body: dict[str, Any] = found[0]
    written = _written.get(key)
    if written is not None:
        try:
            if int(body["metadata"].get("resourceVersion") or 0) < int(
                written["metadata"]["resourceVersion"]
            ):
                return written
        except (KeyError, ValueError):
            pass
        del _written[key]
    return body


def _model(body: dict[str, Any]) -> FeaturePipeline | None:
    """The pipeline as a model; a status it cannot read (another Loom's) starts afresh."""
    known = FeaturePipelineStatus.model_fields
    status = {k: v for k, v in (body.get("status") or {}).items() if k in known}
    for candidate in (status, None):
        try:
            return FeaturePipeline.model_validate({**body, "kind": KIND, "status": candidate})
        except ValidationError as e:
            error = e
    log.warning("FeaturePipeline %s is not readable: %s", body["metadata"].get("name"), error)
    return None


def _forget(key: Key) -> None:
    queue.forget(key)
    _written.pop(key, None)
    _expectations.forget(key)
    _observe_phase(key, None)
    with contextlib.suppress(KeyError):
        metrics.FEATURE_FRESHNESS.remove(*key)


def _observe_phase(key: Key, phase: str | None) -> None:
    old = _phases.pop(key, None)
    if old is not None:
        metrics.RESOURCES_BY_PHASE.labels(kind=KIND, phase=old).dec()
    if phase is not None:
        _phases[key] = phase
        metrics.RESOURCES_BY_PHASE.labels(kind=KIND, phase=phase).inc()


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_executor, functools.partial(fn, *args))
