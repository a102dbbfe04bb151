"""One InferenceService reconcile, decided: `decide(isvc, previous, views, deployments, bad_nodes, sidecar)
-> Plan`: the revision to roll back (if its canary failed), pods to replace, the replicas of each
revision's Deployment, and the Deployment writes that get there, in order.

Pure (kept next to its controller): no I/O; the pods come as `PodView`s taken at `now` by the caller.
The controller carries a plan out in its order: replace at most one pod (the first victim whose
deletion succeeds), then the Deployment writes (shrinking old revisions before growing new ones),
the Service, and last the status built from the plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loom.api.inferenceservice import LABEL_REVISION, InferenceService, InferenceServiceStatus
from loom.builders.inferenceservice import (
    ANNOTATION_SPEC_HASH,
    ObservedRevisions,
    RevisionObservation,
    SidecarConfig,
    desired_deployment,
    plan_rollout,
    revision_hash,
    rollout_target,
)
from loom.health.pods import Issue, PodView, Replacements, live, plan_replacements, rollout_failure, summarize


@dataclass(frozen=True)
class Apply:
    """Server-side apply of the latest revision's Deployment."""

    deployment: dict[str, Any]


@dataclass(frozen=True)
class Scale:
    name: str
    replicas: int


@dataclass(frozen=True)
class Delete:
    name: str
    uid: str


DeploymentWrite = Apply | Scale | Delete


@dataclass(frozen=True)
class Plan:
    latest: str
    stable: str | None
    failed: tuple[str, ...]
    target: str
    rollback: Issue | None  # the latest revision is rolled back in this reconcile, and why
    replacements: Replacements
    replicas: Mapping[str, int]  # per revision
    writes: tuple[DeploymentWrite, ...] = field(default=())


def observation(revision: str, deployment: Mapping[str, Any], views: list[PodView]) -> RevisionObservation:
    return RevisionObservation(
        name=revision,
        replicas=int(deployment["spec"].get("replicas") or 0),
        ready=summarize(views, revision).ready,
        created=str(deployment["metadata"].get("creationTimestamp") or ""),
    )


def canary_hold(isvc: InferenceService, views: list[PodView], latest: str, stable: str | None) -> bool:
    """Keep the canary at its first step until one of its pods has been Ready for promoteAfterSeconds."""
    wait = isvc.spec.canary.promoteAfterSeconds if isvc.spec.canary else 0
    if not wait or not stable or stable == latest:
        return False
    ready = [v.ready_seconds or 0.0 for v in live(views) if v.revision == latest and v.ready]
    return not ready or max(ready) < wait


def differs(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    annotations = existing["metadata"].get("annotations") or {}
    return bool(
        annotations.get(ANNOTATION_SPEC_HASH) != desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
        or existing["spec"].get("replicas") != desired["spec"]["replicas"]
    )


def deployment_writes(
    isvc: InferenceService,
    latest: str,
    stable: str | None,
    failed: Iterable[str],
    replicas: Mapping[str, int],
    by_rev: Mapping[str, Mapping[str, Any]],
    sidecar: SidecarConfig,
) -> list[DeploymentWrite]:
    """What makes each revision's Deployment match `replicas`, touching only what differs.

    The latest revision is applied whole (server-side apply); older ones only change replicas, as
    their templates are no longer in the spec. The stable revision is kept (at 0 if need be) until a
    newer one replaces it, so a rollback always has something to return to; the rest are deleted.
    Old revisions shrink before new ones grow."""
    failed = frozenset(failed)

    def change(item: tuple[str, int]) -> int:
        existing = by_rev.get(item[0])
        return item[1] - int(existing["spec"].get("replicas") or 0) if existing else item[1]

    out: list[DeploymentWrite] = []
    for rev, count in sorted(replicas.items(), key=change):
        existing = by_rev.get(rev)
        if rev == latest and rev not in failed:
            desired = desired_deployment(isvc, rev, count, sidecar)
            if existing is None or differs(existing, desired):
                out.append(Apply(desired))
        elif existing is None:
            continue
        elif count == 0 and rev != stable:
            out.append(Delete(existing["metadata"]["name"], existing["metadata"]["uid"]))
        elif existing["spec"].get("replicas") != count:
            out.append(Scale(existing["metadata"]["name"], count))
    return out


def decide(
    isvc: InferenceService,
    previous: InferenceServiceStatus,
    views: list[PodView],
    deployments: Iterable[Mapping[str, Any]],
    bad_nodes: Mapping[str, str],
    sidecar: SidecarConfig,
) -> Plan:
    by_rev = {d["metadata"]["labels"].get(LABEL_REVISION, ""): d for d in deployments}
    latest = revision_hash(isvc, sidecar)
    stable = previous.revisions.latestReady
    stable = stable if stable == latest or stable in by_rev else None
    failed = list(previous.revisions.failed)
    rollback = None
    if stable and stable != latest and latest not in failed:
        rollback = rollout_failure(views, latest, by_rev.get(latest), isvc.spec.health)
        if rollback is not None:
            failed.append(latest)
    observed = ObservedRevisions(
        latest=latest,
        stable=stable,
        failed=frozenset(failed),
        revisions=[observation(rev, d, views) for rev, d in by_rev.items()],
        hold=canary_hold(isvc, views, latest, stable),
    )
    target = rollout_target(observed)
    expected = sum(r.replicas for r in observed.revisions)
    replacements = plan_replacements(
        views, {target, stable or target}, bad_nodes, isvc.spec.health, isvc.spec.minReplicas, expected
    )
    replicas = plan_rollout(isvc.spec, observed)
    if replacements.surge:
        replicas[target] = replicas.get(target, 0) + replacements.surge
    writes = deployment_writes(isvc, latest, stable, failed, replicas, by_rev, sidecar)
    return Plan(latest, stable, tuple(failed), target, rollback, replacements, replicas, tuple(writes))
