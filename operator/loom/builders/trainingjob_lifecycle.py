"""TrainingJob decisions about the job's life beyond its gang: finishing (Succeeded, Failed, the
pods cleaned up by cleanPodPolicy, the job deleted after ttlSecondsAfterFinished) and suspension.

Pure: no I/O and no clock.
"""

from __future__ import annotations

from datetime import timedelta

from loom.api.trainingjob import CleanPodPolicy
from loom.builders.trainingjob import (
    MASTER_ROLE,
)
from loom.builders.trainingjob_conditions import Event
from loom.builders.trainingjob_decision import RESYNC, DecisionBase, Plan
from loom.builders.trainingjob_view import (
    FAILED,
    GANG_SCHEDULED,
    RESTARTING,
    RUNNING,
    SUCCEEDED,
    SUSPENDED,
    is_deleting,
    node_state,
    phase_of,
)
from loom.health.failures import NodeState, is_terminal


class Lifecycle(DecisionBase):
    def _finished(self) -> bool:
        return self.c.is_true(SUCCEEDED) or self.c.is_true(FAILED)

    def _finish(self, type_: str, reason: str, message: str) -> Plan:
        self._count_replicas()
        self.c.set(type_, True, reason, message)
        self.c.unset(RUNNING, reason, message)
        self.c.unset(RESTARTING, reason, message)
        self.st.completionTime = self.now
        self.st.nextAttemptTime = None
        return self._after_finish(stop_running=reason == "DeadlineExceeded")

    def _succeed(self) -> Plan:
        who = f"{MASTER_ROLE}-0" if MASTER_ROLE in self.spec.replicaSpecs else "every replica"
        return self._finish(
            SUCCEEDED, "JobSucceeded", f"TrainingJob {self._name} succeeded ({who} completed)"
        )

    def _fail(self, reason: str, message: str) -> Plan:
        return self._finish(FAILED, reason, message)

    def _after_finish(self, *, stop_running: bool = False) -> Plan:
        """Clean pods up by cleanPodPolicy; delete the job once ttlSecondsAfterFinished passed."""
        policy = self.spec.runPolicy.cleanPodPolicy
        for pod in self.pods:
            if is_deleting(pod) and node_state(pod, self.cluster) is NodeState.READY:
                continue
            if policy == CleanPodPolicy.ALL or (
                (policy == CleanPodPolicy.RUNNING or stop_running) and not is_terminal(pod)
            ):
                self._delete(pod)
        self._delete_groups()  # no pod of a finished job is scheduled again
        ttl = self.spec.runPolicy.ttlSecondsAfterFinished
        done = self.st.completionTime
        if ttl is not None and done is not None:
            expires = done + timedelta(seconds=ttl)
            if self.now >= expires:
                self.plan.delete_job = True
            else:
                self._wake_at(expires)
        self.st.phase = phase_of(self.st.conditions)
        return self.plan

    def _suspend(self) -> Plan:
        for pod in self.pods:
            if not is_deleting(pod) or node_state(pod, self.cluster) is not NodeState.READY:
                self._delete(pod)
        self.c.set(
            SUSPENDED, True, "JobSuspended", f"TrainingJob {self._name} is suspended; its pods are deleted"
        )
        self.c.unset(RUNNING, "JobSuspended", "the job is suspended")
        self.c.unset(RESTARTING, "JobSuspended", "the job is suspended")
        if self.c.has(GANG_SCHEDULED):
            self.c.set(GANG_SCHEDULED, False, "JobSuspended", "the job is suspended; its pods are deleted")
        self._delete_groups()
        self.st.podGroup = None
        self.st.startTime = None
        self.st.nextAttemptTime = None
        self._count_replicas()
        self.st.phase = phase_of(self.st.conditions)
        return self.plan

    def _resume(self) -> None:
        message = f"TrainingJob {self._name} is resumed with a fresh gang"
        self.c.set(SUSPENDED, False, "JobResumed", message)
        self.plan.events.append(Event("Normal", "JobResumed", message))
        if self.pods:  # pods of the suspended gang may still be terminating: use new names
            self.st.attempt += 1
        self.st.gangTimeouts = 0
        self.st.nextAttemptTime = None
        self.st.replicas = 0

    def _done(self) -> Plan:
        self._wake_at(self.now + timedelta(seconds=RESYNC))
        self.st.phase = phase_of(self.st.conditions)
        return self.plan
