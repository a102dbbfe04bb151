"""The conditions GitOps tools read: Ready, Reconciling and Stalled, decided from a status being built.

kstatus (sigs.k8s.io/cli-utils: Flux's health checks, kubectl-style waiters, cli-utils appliers) reads, in
order: a deletionTimestamp (Terminating); metadata.generation != status.observedGeneration (InProgress);
Reconciling=True (InProgress); Stalled=True (Failed); then Ready (True: Current, else InProgress).
Reconciling and Stalled follow its "abnormal-true" polarity: present only while True. What each kind
means by them:

- TrainingJob: Ready while the gang runs and once it succeeded; Reconciling while pending, creating or
  restarting; Stalled once failed.
- InferenceService: Ready while a replica serves (or none is wanted: the builder's); Reconciling while a
  rollout or a scale-up is under way; Stalled when the latest revision was rolled back or no model loads.
- FeaturePipeline: Ready once written up to a watermark, while its consumers run, or while scheduled and
  waiting for a tick (the builder's); Reconciling while backfill windows are left; Stalled when a run
  failed or the engine (Spark Operator, KubeRay) is not installed.

A suspended TrainingJob or FeaturePipeline is Ready=False without Reconciling: InProgress, as kstatus
reads a suspended batch Job. Argo CD's health checks (manifests/argocd) read the same conditions.

Pure: no I/O; `now` is a parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from loom.api.common import Condition, ConditionStatus
from loom.api.featurepipeline import FeaturePipelineStatus
from loom.api.inferenceservice import InferenceServiceStatus
from loom.api.trainingjob import TrainingJobStatus

READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"


@dataclass(frozen=True)
class Verdict:
    reason: str
    message: str


def settle(
    conditions: list[Condition],
    previous: Sequence[Condition],
    *,
    ready: tuple[bool, Verdict] | None,
    reconciling: Verdict | None,
    stalled: Verdict | None,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """`conditions` with Ready set (None: left as it is), Reconciling and Stalled present exactly when
    given; a condition keeps its lastTransitionTime from `previous` while its status stays."""
    out = [
        c for c in conditions if c.type not in (RECONCILING, STALLED) and (ready is None or c.type != READY)
    ]
    if ready is not None:
        out.append(_condition(previous, READY, ready[0], ready[1], generation, now))
    if reconciling is not None and stalled is None:
        out.append(_condition(previous, RECONCILING, True, reconciling, generation, now))
    if stalled is not None:
        out.append(_condition(previous, STALLED, True, stalled, generation, now))
    return out


def _condition(
    previous: Sequence[Condition],
    type_: str,
    ok: bool,
    verdict: Verdict,
    generation: int | None,
    now: datetime,
) -> Condition:
    status = ConditionStatus.TRUE if ok else ConditionStatus.FALSE
    old = next((c for c in previous if c.type == type_), None)
    since = old.lastTransitionTime if old and old.status == status and old.lastTransitionTime else now
    return Condition(
        type=type_,
        status=status,
        reason=verdict.reason,
        message=verdict.message[:1000],
        lastTransitionTime=since,
        observedGeneration=generation,
    )


def message_of(conditions: Sequence[Condition], *types: str) -> str:
    """The message of the first of `types` present (the condition that says most about the phase)."""
    for type_ in types:
        cond = next((c for c in conditions if c.type == type_), None)
        if cond is not None and cond.message:
            return cond.message
    return ""


def trainingjob(
    status: TrainingJobStatus, previous: Sequence[Condition], generation: int | None, now: datetime
) -> None:
    """Ready, Reconciling and Stalled of a TrainingJob, from its phase."""
    phase, conds = str(status.phase), status.conditions
    ready: tuple[bool, Verdict]
    reconciling = stalled = None
    if phase == "Failed":
        failed = next((c for c in conds if c.type == "Failed"), None)
        message = failed.message if failed and failed.message else "the job failed"
        ready = (False, Verdict("Failed", message))
        stalled = Verdict(failed.reason if failed and failed.reason else "Failed", message)
    elif phase in ("Running", "Succeeded", "Suspended"):
        message = message_of(conds, phase) or f"the job is {phase.lower()}"
        ready = (phase != "Suspended", Verdict(phase, message))
    else:  # Pending, Created, Restarting: on its way
        message = message_of(conds, "Restarting" if phase == "Restarting" else "Running", "Created")
        verdict = Verdict(phase, message or f"the job is {phase.lower()}")
        ready, reconciling = (False, verdict), verdict
    status.conditions = settle(
        conds, previous, ready=ready, reconciling=reconciling, stalled=stalled, generation=generation, now=now
    )


def inferenceservice(
    status: InferenceServiceStatus, previous: Sequence[Condition], generation: int | None, now: datetime
) -> None:
    """Reconciling and Stalled of an InferenceService (its Ready is the builder's: a replica serves)."""
    conds = status.conditions
    rollout = next((c for c in conds if c.type == "RolloutComplete"), None)
    reconciling = stalled = None
    if rollout is not None and rollout.reason == "RolledBack":
        stalled = Verdict("RolledBack", rollout.message)
    elif status.phase == "Failed":
        model = status.modelStatus
        reason = model.reason or "FailedToLoad"
        stalled = Verdict(reason, message_of(conds, "ModelLoaded") or f"the model failed to load: {reason}")
    elif rollout is not None and rollout.status != ConditionStatus.TRUE:
        reconciling = Verdict("RollingOut", rollout.message)
    elif status.readyReplicas < (status.desiredReplicas or 0):
        text = f"{status.readyReplicas}/{status.desiredReplicas} replicas Ready"
        reconciling = Verdict("Scaling", text)
    status.conditions = settle(
        conds, previous, ready=None, reconciling=reconciling, stalled=stalled, generation=generation, now=now
    )


def featurepipeline(
    status: FeaturePipelineStatus, previous: Sequence[Condition], generation: int | None, now: datetime
) -> None:
    """Reconciling and Stalled of a FeaturePipeline (its Ready is the builder's)."""
    conds = status.conditions
    engine = next((c for c in conds if c.type == "EngineAvailable"), None)
    ready = next((c for c in conds if c.type == READY), None)
    reconciling = stalled = None
    if engine is not None and engine.status != ConditionStatus.TRUE:
        stalled = Verdict("EngineNotInstalled", engine.message)
    elif status.phase == "Failed":
        stalled = Verdict(ready.reason if ready else "RunFailed", ready.message if ready else "a run failed")
    elif (
        status.phase != "Suspended"
        and status.backfill is not None
        and status.backfill.succeeded + status.backfill.failed < status.backfill.windowsTotal
    ):
        bf = status.backfill
        text = f"{bf.succeeded + bf.failed}/{bf.windowsTotal} backfill windows done, {bf.running} running"
        reconciling = Verdict("Backfilling", text)
    status.conditions = settle(
        conds, previous, ready=None, reconciling=reconciling, stalled=stalled, generation=generation, now=now
    )
