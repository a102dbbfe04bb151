"""InferenceService status, built in memory from what one reconcile observed and decided.

Pure (kept next to its controller): no I/O, `now` is a parameter. The controller patches the result
once, and only when it differs from the stored status; `events()` says what to record afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from loom.api.common import Condition, ConditionStatus
from loom.api.inferenceservice import (
    AutoscalingStatus,
    HealthStatus,
    InferenceService,
    InferenceServiceStatus,
    ModelState,
    ModelStatus,
    PodIssue,
    RevisionsStatus,
    RevisionStatus,
    ScalingDecision,
    ServicePhase,
)
from loom.autoscaling.scaler import Decision
from loom.builders import readiness
from loom.builders.inferenceservice import selector, url
from loom.health.pods import Issue, Replacements, RevisionPods


@dataclass(frozen=True)
class MetricProblem:
    """Why the autoscaler held the scale: NoMetrics (nothing answered), or an UnusableMetric reason."""

    reason: str
    message: str = ""


@dataclass(frozen=True)
class Observed:
    """One reconcile's view and decisions, everything the status is made from."""

    latest: str
    target: str
    stable: str | None
    failed: tuple[str, ...]
    summaries: Mapping[str, RevisionPods]
    plan: Mapping[str, int]
    desired: int
    rollback: Issue | None = None  # the latest revision was just rolled back, and why
    decision: Decision | None = None  # None: autoscaler external
    scaled_from: int | None = None  # replicas before the decision, when the decision changed them
    replacements: Replacements = field(default_factory=Replacements)
    replaced: Issue | None = None  # the pod deleted in this reconcile
    metric_problem: MetricProblem | None = None  # the metric could not be used this tick


def _condition(
    previous: list[Condition],
    type_: str,
    ok: bool | None,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> Condition:
    status = ConditionStatus.UNKNOWN if ok is None else ConditionStatus.TRUE if ok else ConditionStatus.FALSE
    old = next((c for c in previous if c.type == type_), None)
    since = old.lastTransitionTime if old and old.status == status and old.lastTransitionTime else now
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=since,
        observedGeneration=generation,
    )


def model_status(
    previous: ModelStatus, revision: str, pods: RevisionPods, rolled_back: Issue | None
) -> ModelStatus:
    """The latest revision's model. A revision rolled back because its model failed to load reports
    that failure, even when a replacement pod loaded the model meanwhile; a load failure stays
    reported until a pod of the revision loads the model."""
    same_failed_revision = previous.revision == revision and previous.state == ModelState.FAILED_TO_LOAD
    load_failure = pods.failure or (
        rolled_back if rolled_back is not None and rolled_back.load_failure else None
    )
    if rolled_back is not None and load_failure is not None:
        if same_failed_revision:
            return previous
        return ModelStatus(
            state=ModelState.FAILED_TO_LOAD,
            reason=load_failure.reason,
            message=load_failure.message,
            exitCode=load_failure.exit_code,
            revision=revision,
        )
    if pods.loaded:
        return ModelStatus(state=ModelState.LOADED, revision=revision, loadedReplicas=pods.loaded)
    if pods.failure is not None:
        return ModelStatus(
            state=ModelState.FAILED_TO_LOAD,
            reason=pods.failure.reason,
            message=pods.failure.message,
            exitCode=pods.failure.exit_code,
            revision=revision,
        )
    if same_failed_revision or (previous.revision == revision and rolled_back is not None and not pods.pods):
        return previous  # what was last seen of a revision whose pods are gone
    if rolled_back is not None:
        return ModelStatus(
            state=ModelState.FAILED_TO_LOAD,
            reason=rolled_back.reason,
            message=rolled_back.message,
            exitCode=rolled_back.exit_code,
            revision=revision,
        )
    state = ModelState.LOADING if pods.loading else ModelState.PENDING
    reason = "Staging" if pods.loading else "NoPods" if not pods.pods else "Scheduling"
    return ModelStatus(state=state, reason=reason, revision=revision)


def build_status(
    isvc: InferenceService, previous: InferenceServiceStatus, o: Observed, now: datetime
) -> InferenceServiceStatus:
    gen = isvc.metadata.get("generation")
    latest_pods = o.summaries.get(o.latest) or RevisionPods(o.latest)
    rolled_back = o.latest in o.failed
    last_failure = o.rollback or (Issue("", "RolledBack", "") if rolled_back else None)
    model = model_status(previous.modelStatus, o.latest, latest_pods, last_failure)
    pods = sum(s.pods for s in o.summaries.values())
    ready = sum(s.ready for s in o.summaries.values())
    others_left = any(o.plan.get(r, 0) > 0 or s.pods > 0 for r, s in o.summaries.items() if r != o.target)
    target_ready = (o.summaries.get(o.target) or RevisionPods(o.target)).ready
    complete = (
        not rolled_back and o.target == o.latest and not others_left and target_ready >= min(1, o.desired)
    )
    stable = o.latest if complete and target_ready > 0 else o.stable
    canary = o.latest if stable and not rolled_back and o.latest != stable else None

    c: list[Condition] = []
    prev = previous.conditions
    loaded = model.state == ModelState.LOADED
    c.append(
        _condition(
            prev,
            "ModelLoaded",
            loaded,
            model.state if loaded else model.reason or model.state,
            model.message or f"revision {o.latest}: {model.state}",
            gen,
            now,
        )
    )
    if o.desired == 0:
        c.append(_condition(prev, "Ready", True, "ScaledToZero", "no replicas wanted", gen, now))
    elif ready:
        c.append(_condition(prev, "Ready", True, "PodsReady", f"{ready}/{o.desired} pods Ready", gen, now))
    else:
        c.append(_condition(prev, "Ready", False, "NoReadyPods", f"0/{o.desired} pods Ready", gen, now))
    if rolled_back:
        old = next((x for x in prev if x.type == "RolloutComplete" and x.reason == "RolledBack"), None)
        if o.rollback is not None or old is None:
            why = f"{o.rollback.reason}: {o.rollback.message}" if o.rollback else "it failed"
            msg = f"revision {o.latest} rolled back ({why}); serving revision {o.target}"
        else:
            msg = old.message
        c.append(_condition(prev, "RolloutComplete", False, "RolledBack", msg, gen, now))
    elif complete:
        c.append(
            _condition(prev, "RolloutComplete", True, "Complete", f"revision {o.latest} serves", gen, now)
        )
    else:
        msg = f"revision {o.latest}: {latest_pods.ready}/{o.desired} Ready"
        c.append(_condition(prev, "RolloutComplete", False, "Progressing", msg, gen, now))
    if o.decision is None:
        c.append(
            _condition(prev, "ScalingActive", False, "External", "replicas are left to HPA/KEDA", gen, now)
        )
    elif o.metric_problem is not None:
        why = o.metric_problem.message or "no metric could be read"
        msg = f"{why}; holding {o.decision.replicas} replicas"
        c.append(_condition(prev, "ScalingActive", False, o.metric_problem.reason, msg, gen, now))
    else:
        c.append(
            _condition(prev, "ScalingActive", True, "Loom", "the loom autoscaler sets replicas", gen, now)
        )

    if o.desired > 0 and ready == 0 and model.state == ModelState.FAILED_TO_LOAD:
        phase = ServicePhase.FAILED
    elif o.desired == 0 or (ready >= o.desired and complete):
        phase = ServicePhase.READY
    elif ready:
        phase = (
            ServicePhase.DEGRADED
            if rolled_back or ready < o.desired or any(not i.load_failure for i in o.replacements.issues)
            else ServicePhase.READY
        )
    else:
        phase = ServicePhase.LOADING if model.state == ModelState.LOADING else ServicePhase.PENDING

    autoscaling = previous.autoscaling
    if o.decision is None:
        autoscaling = AutoscalingStatus()
    else:
        last = autoscaling.lastDecision
        if o.scaled_from is not None:
            last = ScalingDecision(
                time=now,
                fromReplicas=o.scaled_from,
                toReplicas=o.decision.replicas,
                mode=str(o.decision.mode),
                stableValue=round(o.decision.stable_value, 3),
                panicValue=round(o.decision.panic_value, 3),
            )
        autoscaling = AutoscalingStatus(
            desiredReplicas=o.desired, mode=str(o.decision.mode), lastDecision=last
        )

    health = HealthStatus(
        unhealthyPods=[
            PodIssue(pod=i.pod, reason=i.reason, message=i.message) for i in o.replacements.issues
        ],
        replacedPods=previous.health.replacedPods + (1 if o.replaced else 0),
        lastReplaced=(
            PodIssue(pod=o.replaced.pod, reason=o.replaced.reason, message=o.replaced.message)
            if o.replaced
            else previous.health.lastReplaced
        ),
    )
    items = [
        RevisionStatus(name=r, replicas=s.pods, readyReplicas=s.ready, modelState=s.state)
        for r, s in sorted(o.summaries.items())
        if s.pods or o.plan.get(r, 0)
    ]
    status = InferenceServiceStatus(
        phase=phase,
        url=url(isvc),
        replicas=pods,
        readyReplicas=ready,
        desiredReplicas=o.desired,
        selector=selector(isvc),
        modelStatus=model,
        revisions=RevisionsStatus(
            latestCreated=o.latest,
            latestReady=stable,
            canary=canary,
            failed=list(o.failed)[-10:],
            items=items,
        ),
        autoscaling=autoscaling,
        health=health,
        conditions=c,
        observedGeneration=gen,
    )
    readiness.inferenceservice(status, prev, gen, now)  # Reconciling, Stalled: what GitOps tools read
    return status


def events(
    previous: InferenceServiceStatus, new: InferenceServiceStatus, o: Observed
) -> list[tuple[str, str, str]]:
    """(type, reason, message) of each event worth recording for this status change."""
    out: list[tuple[str, str, str]] = []
    if o.scaled_from is not None and o.decision is not None:
        verb = "ScaledUp" if o.decision.replicas > o.scaled_from else "ScaledDown"
        out.append(
            (
                "Normal",
                verb,
                f"replicas {o.scaled_from} -> {o.decision.replicas} ({o.decision.mode}: "
                f"stable {o.decision.stable_value:.2f}, panic {o.decision.panic_value:.2f})",
            )
        )
    if o.metric_problem is not None and o.metric_problem.reason != "NoMetrics":
        was = next((c for c in previous.conditions if c.type == "ScalingActive"), None)
        now = next((c for c in new.conditions if c.type == "ScalingActive"), None)
        if now is not None and (was is None or (was.reason, was.message) != (now.reason, now.message)):
            out.append(("Warning", "MetricUnusable", now.message))
    if o.rollback is not None:
        out.append(
            ("Warning", "RolledBack", f"revision {o.latest}: {o.rollback.reason}: {o.rollback.message}")
        )
    if new.revisions.canary and new.revisions.canary != previous.revisions.canary:
        out.append(("Normal", "CanaryStarted", f"revision {new.revisions.canary} rolling out"))
    if new.revisions.latestReady and new.revisions.latestReady != previous.revisions.latestReady:
        out.append(("Normal", "Promoted", f"revision {new.revisions.latestReady} serves every replica"))
    if o.replaced is not None:
        out.append(
            ("Warning", "PodReplaced", f"pod {o.replaced.pod}: {o.replaced.reason}: {o.replaced.message}")
        )
    seen = {(i.pod, i.reason) for i in previous.health.unhealthyPods}
    for issue in o.replacements.issues:
        if (issue.pod, issue.reason) not in seen:
            reason = "ModelFailedToLoad" if issue.load_failure else "PodUnhealthy"
            out.append(("Warning", reason, f"pod {issue.pod}: {issue.reason}: {issue.message}"))
    m, pm = new.modelStatus, previous.modelStatus
    reported = any(i.load_failure for i in o.replacements.issues if (i.pod, i.reason) not in seen)
    if (
        m.state == ModelState.FAILED_TO_LOAD
        and (pm.state != m.state or pm.revision != m.revision)
        and not reported
    ):
        out.append(("Warning", "ModelFailedToLoad", f"revision {m.revision}: {m.reason}: {m.message}"))
    return out
