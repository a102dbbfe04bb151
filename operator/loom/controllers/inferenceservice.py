"""InferenceService controller: a Deployment per revision + a Service, model-aware rollouts,
autoscaling and pod health, reconciled once per tick (a Kopf timer per service, 1 s by default).

Each tick reads the pods, Deployments and GPU-unhealthy nodes from Kopf indexes (no listing), decides
with pure functions (`autoscaling.scaler.decide`, `builders.plan_rollout`, `health.pods`), acts through
`loom.kube` (scale subresource, server-side apply, deletes), then patches the status once when it
changed and records events after that. Everything that must survive a restart lives in the status
(stable and failed revisions); the autoscaler's windows restart empty, as Knative's do.

Operator environment:
  LOOM_SIDECAR_IMAGE           model sidecar image (default ghcr.io/loom-ml/loom-sidecar:0.1.0)
  LOOM_METRICS_URL_TEMPLATE    pod metrics URL, with {pod_ip} {port} {path} {pod} {namespace} {name}
                               (default http://{pod_ip}:{port}{path})
  LOOM_INFERENCE_TICK_SECONDS  reconcile and autoscaler period (default 1)
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import kopf
from pydantic import ValidationError

from loom import kube, metrics
from loom.api.common import API_VERSION, GROUP, VERSION, parse_lenient
from loom.api.inferenceservice import (
    LABEL_REVISION,
    LABEL_SERVICE,
    Autoscaler,
    InferenceService,
    InferenceServiceStatus,
    ModelState,
)
from loom.autoscaling.scaler import Decision, Observation, ScalerSpec, ScalerState, decide
from loom.autoscaling.sources import (
    DEFAULT_URL_TEMPLATE,
    PodTarget,
    PrometheusSource,
    ScrapeSource,
    Target,
    UnusableMetric,
)
from loom.builders import inferenceservice_plan as rollout
from loom.builders.common import (
    INVALID_SPEC,
    UNREADABLE_STATUS,
    invalid_spec_message,
    stalled_conditions,
    unreadable_status_message,
)
from loom.builders.inferenceservice import (
    DEFAULT_SIDECAR_IMAGE,
    SidecarConfig,
    desired_replicas,
    desired_service,
)
from loom.builders.inferenceservice_plan import Apply, Delete, DeploymentWrite
from loom.builders.inferenceservice_status import MetricProblem, Observed, build_status, events
from loom.controllers.clock import Clock
from loom.health.pods import (
    Issue,
    PodView,
    gpu_unhealthy,
    live,
    summarize,
    view,
)

KIND = "InferenceService"
TICK_SECONDS = float(os.environ.get("LOOM_INFERENCE_TICK_SECONDS") or 1.0)
SIDECAR = SidecarConfig(image=os.environ.get("LOOM_SIDECAR_IMAGE") or DEFAULT_SIDECAR_IMAGE)
SERVICE_RESYNC_SECONDS = 60.0
SCRAPER = ScrapeSource(os.environ.get("LOOM_METRICS_URL_TEMPLATE") or DEFAULT_URL_TEMPLATE)
log = logging.getLogger(__name__)
clock = Clock()


def _slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a pod or Deployment the controller reads, so indexes stay small."""
    meta = body.get("metadata") or {}
    keep = ("name", "namespace", "uid", "labels", "annotations", "creationTimestamp", "deletionTimestamp")
    spec = body.get("spec") or {}
    return {
        "metadata": {k: copy.deepcopy(meta.get(k)) for k in keep},
        "spec": {"nodeName": spec.get("nodeName"), "replicas": spec.get("replicas")},
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


@kopf.index("pods", labels={LABEL_SERVICE: kopf.PRESENT})
def isvc_pods(body: kopf.Body, namespace: str | None, labels: Mapping[str, str], **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[LABEL_SERVICE]): _slim(body)}


@kopf.index("apps", "v1", "deployments", labels={LABEL_SERVICE: kopf.PRESENT})
def isvc_deployments(
    body: kopf.Body, namespace: str | None, labels: Mapping[str, str], **_: Any
) -> dict[Any, Any]:
    return {(namespace, labels[LABEL_SERVICE]): _slim(body)}


@kopf.index("nodes")
def gpu_unhealthy_nodes(body: kopf.Body, name: str, **_: Any) -> dict[Any, Any] | None:
    reason = gpu_unhealthy(body)
    return {name: reason} if reason else None


class _QuietTicks(logging.Filter):
    """Kopf logs every timer run at INFO: once a second per service is noise; failures still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        quiet = ("'inferenceservice_tick'", "'inferenceservice_forget'")
        return not (record.levelno <= logging.INFO and any(name in message for name in quiet))


logging.getLogger("kopf.objects").addFilter(_QuietTicks())


@kopf.timer(GROUP, VERSION, "inferenceservices", interval=TICK_SECONDS, backoff=2.0)
def inferenceservice_tick(
    body: kopf.Body, memo: Any, namespace: str | None, name: str, **kwargs: Any
) -> None:
    """Indexes come as keyword arguments named after their functions."""
    key = (namespace, name)
    started = time.monotonic()
    try:
        reconcile(
            copy.deepcopy(dict(body)),
            memo,
            list(kwargs["isvc_pods"].get(key, [])),
            list(kwargs["isvc_deployments"].get(key, [])),
            {node: next(iter(store)) for node, store in kwargs["gpu_unhealthy_nodes"].items()},
        )
    except Exception:
        metrics.RECONCILE_ERRORS.labels(kind=KIND).inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.labels(kind=KIND).observe(time.monotonic() - started)


@kopf.on.event(GROUP, VERSION, "inferenceservices")
def inferenceservice_forget(type: str, namespace: str | None, name: str, **_: Any) -> None:
    """Drop per-service scrape state and metrics once a service is gone (a watch handler: no diffbase)."""
    if type != "DELETED":
        return
    namespace = namespace or "default"
    SCRAPER.forget(namespace, name)
    for state in ("desired", "current", "ready"):
        _remove(metrics.INFERENCE_REPLICAS, namespace, name, state)
    _remove(metrics.AUTOSCALER_PANIC, namespace, name)
    _remove(metrics.AUTOSCALER_METRIC, namespace, name)
    for reason in UnusableMetric.REASONS:
        _remove(metrics.AUTOSCALER_UNUSABLE_SAMPLES, namespace, name, reason)


def _remove(metric: Any, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


def reconcile(
    body: dict[str, Any],
    memo: Any,
    pods: list[dict[str, Any]],
    deployments: list[dict[str, Any]],
    bad_nodes: Mapping[str, str],
) -> None:
    now = clock.now()
    stored = parse_lenient(InferenceServiceStatus, body.get("status"))
    try:
        isvc = InferenceService.model_validate({k: v for k, v in body.items() if k != "status"})
    except ValidationError as e:
        return _hold(body, INVALID_SPEC, invalid_spec_message(e), now)
    if stored.unreadable(InferenceServiceStatus.RECOMPUTED):  # e.g. the failed revisions: never guess
        message = unreadable_status_message(stored, InferenceServiceStatus.RECOMPUTED)
        return _hold(body, UNREADABLE_STATUS, message, now)
    previous = stored.value
    ns, name = isvc.metadata["namespace"], isvc.metadata["name"]
    views = [view(p, now) for p in pods]
    decision, scaled_from, metric_problem = autoscale(isvc, views, memo)
    plan = rollout.decide(isvc, previous, views, deployments, bad_nodes, SIDECAR)
    if plan.rollback is not None:
        metrics.INFERENCE_ROLLBACKS.labels(reason=plan.rollback.reason).inc()
    replaced = _replace(ns, plan.replacements.delete, plan.replacements.issues)
    _write_deployments(ns, plan.writes)
    _ensure_service(isvc, memo)

    revisions = {d["metadata"]["labels"].get(LABEL_REVISION, "") for d in deployments}
    revisions |= {plan.latest} | {v.revision for v in views}
    o = Observed(
        latest=plan.latest,
        target=plan.target,
        stable=plan.stable,
        failed=plan.failed,
        summaries={r: summarize(views, r) for r in revisions if r},
        plan=plan.replicas,
        desired=desired_replicas(isvc.spec),
        rollback=plan.rollback,
        decision=decision,
        scaled_from=scaled_from,
        replacements=plan.replacements,
        replaced=replaced,
        metric_problem=metric_problem,
    )
    status = build_status(isvc, previous, o, now)
    _record_metrics(ns, name, status, decision)
    new, old = status.model_dump(mode="json"), previous.model_dump(mode="json")
    if new != old and kube.patch(API_VERSION, KIND, name, ns, {"status": new}, subresource="status") is None:
        return  # deleted meanwhile
    for type_, reason, message in events(previous, status, o):
        kube.event(body, reason, message, type_=type_)


def _hold(body: Mapping[str, Any], reason: str, message: str, now: datetime) -> None:
    """Neither scale, roll out, replace nor delete anything: only say why (Stalled, and an event when
    that changes), leaving every other status field as stored. The Deployments keep serving."""
    meta = body["metadata"]
    conditions = stalled_conditions(
        (body.get("status") or {}).get("conditions"), reason, message, meta.get("generation"), now
    )
    if conditions is None:
        return
    # observedGeneration too: kstatus reads Stalled only once the generation is observed
    patch = {"status": {"conditions": conditions, "observedGeneration": meta.get("generation")}}
    if kube.patch(API_VERSION, KIND, meta["name"], meta.get("namespace"), patch, subresource="status"):
        kube.event(dict(body), reason, message, type_="Warning")


def autoscale(
    isvc: InferenceService, views: list[PodView], memo: Any
) -> tuple[Decision | None, int | None, MetricProblem | None]:
    """One autoscaler tick: sample the metric, decide, write spec.replicas through the scale subresource.
    A sample that is missing or unusable holds the scale; why is returned for the status."""
    spec = isvc.spec
    if spec.scaling.autoscaler == Autoscaler.EXTERNAL:
        return None, None, None
    ns, name = isvc.metadata["namespace"], isvc.metadata["name"]
    ready = [v for v in live(views) if v.ready and v.model.state == ModelState.LOADED]
    target = Target(
        namespace=ns,
        name=name,
        pods=tuple(PodTarget(v.name, v.ip) for v in ready),
        metric=spec.scaling.metric,
        metric_name=spec.scaling.metricName,
        port=spec.scaling.metricsPort,
        path=spec.scaling.metricsPath,
    )
    prometheus = spec.scaling.prometheus
    source = PrometheusSource(prometheus.url, prometheus.query) if prometheus else SCRAPER
    problem: MetricProblem | None = None
    try:
        value = source.sample(target, clock.time()) if ready or prometheus else None
    except UnusableMetric as e:
        value, problem = None, MetricProblem(e.reason, e.message)
        metrics.AUTOSCALER_UNUSABLE_SAMPLES.labels(ns, name, e.reason).inc()
    if value is None and problem is None:
        problem = MetricProblem("NoMetrics", "no metric could be read")
    current = desired_replicas(spec)
    state = memo.get("scaler") or ScalerState()
    decision, memo["scaler"] = decide(
        ScalerSpec.from_spec(spec), Observation(value, len(ready), current), state, clock.monotonic()
    )
    if value is not None:
        metrics.AUTOSCALER_METRIC.labels(ns, name).set(value)
    if decision.replicas == spec.replicas:
        return decision, None, problem
    body = {"spec": {"replicas": decision.replicas}}
    kube.patch(API_VERSION, KIND, name, ns, body, subresource="scale")
    spec.replicas = decision.replicas
    if decision.replicas == current:
        return decision, None, problem
    direction = "up" if decision.replicas > current else "down"
    metrics.AUTOSCALER_DECISIONS.labels(ns, name, direction, str(decision.mode)).inc()
    return decision, current, problem


def _replace(namespace: str, victims: Iterable[PodView], issues: Iterable[Issue]) -> Issue | None:
    why = {i.pod: i for i in issues}
    for victim in victims:
        if kube.delete("v1", "Pod", victim.name, namespace, uid=victim.uid):
            metrics.INFERENCE_POD_REPLACEMENTS.labels(reason=why[victim.name].reason).inc()
            return why[victim.name]
    return None


def _write_deployments(namespace: str, writes: Iterable[DeploymentWrite]) -> None:
    """The plan's Deployment writes, in its order (old revisions shrink before new ones grow)."""
    for write in writes:
        if isinstance(write, Apply):
            kube.apply(write.deployment)
        elif isinstance(write, Delete):
            kube.delete("apps/v1", "Deployment", write.name, namespace, uid=write.uid)
        else:
            kube.patch("apps/v1", "Deployment", write.name, namespace, {"spec": {"replicas": write.replicas}})


def _ensure_service(isvc: InferenceService, memo: Any) -> None:
    """Apply the Service when it changed, and once a minute anyway (it is not watched)."""
    service = desired_service(isvc)
    digest = hashlib.sha256(json.dumps(service, sort_keys=True).encode()).hexdigest()
    applied = memo.get("service") or ("", 0.0)
    if applied[0] != digest or clock.monotonic() - applied[1] > SERVICE_RESYNC_SECONDS:
        kube.apply(service)
        memo["service"] = (digest, clock.monotonic())


def _record_metrics(ns: str, name: str, status: InferenceServiceStatus, decision: Decision | None) -> None:
    metrics.INFERENCE_REPLICAS.labels(ns, name, "desired").set(status.desiredReplicas or 0)
    metrics.INFERENCE_REPLICAS.labels(ns, name, "current").set(status.replicas)
    metrics.INFERENCE_REPLICAS.labels(ns, name, "ready").set(status.readyReplicas)
    metrics.AUTOSCALER_PANIC.labels(ns, name).set(1 if decision and decision.mode == "panic" else 0)
