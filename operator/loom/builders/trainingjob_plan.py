"""The TrainingJob state machine: `decide(job, pods, cluster, now) -> Plan`.

Pure: no I/O and no clock (`now` is a parameter); it imports neither kopf nor loom.kube (a unit
test checks). Every reconcile recomputes the whole plan from the spec, the status (the record of
earlier decisions: attempt, restart count, times) and the observed pods, so an operator killed at
any point converges to the same result. The controller carries a plan out in a fixed order:
status first (so that a new attempt is recorded before its pods exist), then deletions, the
Service, the PodGroup, pod creations, ungating, the job's own deletion, and last the events.

Who places a gang all-or-nothing (trainingjob.gang_path): kube-scheduler, through a PodGroup, where the
API server serves scheduling.k8s.io/v1alpha2 PodGroups; else Loom, by lifting its scheduling gate from
every pod at once when its count of the free GPUs says the gang fits. On either path, a gang of which the
scheduler could not place a pod is never left partly bound: it is released (or an elastic one restarted
at the size that was bound).

The parts, by concern: trainingjob_view (what is read), trainingjob_conditions (conditions and
their events), trainingjob_decision (the state they share), trainingjob_lifecycle (finishing,
suspension), trainingjob_gang_plan (the current gang), trainingjob_elastic (elastic sizing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from loom.api.trainingjob import TrainingJob
from loom.builders import readiness
from loom.builders.trainingjob import name_problem
from loom.builders.trainingjob_conditions import Event
from loom.builders.trainingjob_decision import (
    GANG_TIMEOUT,
    RESYNC,
    GroupDeletion,
    Plan,
    PodDeletion,
)
from loom.builders.trainingjob_gang_plan import GangPlan
from loom.builders.trainingjob_lifecycle import Lifecycle
from loom.builders.trainingjob_view import CREATED, SUSPENDED, Cluster, attempt_of, parse_time, phase_of
from loom.health.failures import Action

__all__ = [
    "GANG_TIMEOUT",
    "RESYNC",
    "Cluster",
    "Event",
    "GroupDeletion",
    "Plan",
    "PodDeletion",
    "attempt_of",
    "decide",
    "parse_time",
    "phase_of",
]


def decide(
    job: TrainingJob,
    pods: Sequence[Mapping[str, Any]],
    cluster: Cluster,
    now: datetime,
    groups: Sequence[Mapping[str, Any]] = (),
) -> Plan:
    """What to do next for `job`, given all of its observed pods and PodGroups (every attempt) and the
    cluster."""
    plan = _Decision(job, pods, cluster, now, groups).run()
    if not job.metadata.get("deletionTimestamp"):  # Ready, Reconciling, Stalled: what GitOps tools read
        previous = job.status.conditions if job.status else []
        readiness.trainingjob(plan.status, previous, job.metadata.get("generation"), now)
    return plan


class _Decision(Lifecycle, GangPlan):
    """The state machine, read top-down; its parts live in the modules named above."""

    def run(self) -> Plan:
        if self.job.metadata.get("deletionTimestamp"):  # being deleted: its pods go with it
            self.plan.status = self.job.status or self.st
            return self.plan
        if self._finished():
            return self._after_finish()
        if not self.c.has(CREATED):
            self.c.set(CREATED, True, "JobCreated", f"TrainingJob {self._name} is created")
        problem = name_problem(self.job)
        if problem:
            return self._fail("InvalidSpec", problem)
        if self.spec.runPolicy.suspend:
            return self._suspend()
        if self.c.is_true(SUSPENDED):
            self._resume()
        if self.st.startTime is None:
            self.st.startTime = self.now
        deadline = self._active_deadline()
        if deadline is not None and self.now >= deadline:
            limit = self.spec.runPolicy.activeDeadlineSeconds
            return self._fail(
                "DeadlineExceeded", f"the job ran longer than activeDeadlineSeconds ({limit} s)"
            )
        self._wake_at(deadline)
        self._delete_stale()
        self._count_replicas()
        if self._gang_succeeded():
            return self._succeed()
        if self._spec_changed():  # the old gang's state no longer matters
            self._restart("SpecChanged", "the pod spec was changed", counted=False)
        elif (failure := self._gang_failure()) is not None:
            if failure.action is Action.FAIL:
                policy = self._policy_of(failure.pod)
                return self._fail(failure.kind, f"{failure.message}: permanent under restartPolicy {policy}")
            if self.st.restartCount >= self.spec.runPolicy.backoffLimit:
                limit = self.spec.runPolicy.backoffLimit
                return self._fail("BackoffLimitExceeded", f"{failure.message}; backoffLimit {limit} reached")
            self._restart(failure.kind, failure.message, counted=True, lost=self._lost_nodes())
        elif (stuck := self._stuck_pods()) is not None:  # admitted, but the scheduler cannot place it
            self._unstick(stuck)
        elif self._gang_timed_out():
            timeout = self.spec.runPolicy.schedulingTimeoutSeconds
            self._release_gang(GANG_TIMEOUT, f"not Running within schedulingTimeoutSeconds ({timeout} s)")
        elif (resize := self._elastic_resize()) is not None:
            self._resize(*resize)
        self._run_gang()
        return self._done()
