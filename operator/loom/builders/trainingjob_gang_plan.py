"""TrainingJob decisions about the current gang: whether it succeeded, failed, changed or timed out,
restarting it (a new attempt), growing an elastic one, and creating and admitting its pods (the
gang gate is lifted for every pod at once, when the whole gang fits).

Pure: no I/O and no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from loom.api.common import ConditionStatus
from loom.builders.trainingjob import (
    GANG_GATE,
    MASTER_ROLE,
    SPEC_HASH,
    desired_service,
    pod_gpus,
    spec_hash,
)
from loom.builders.trainingjob_conditions import Event
from loom.builders.trainingjob_decision import (
    ELASTIC_GROW_AFTER,
    GANG_BACKOFF_BASE,
    GANG_BACKOFF_MAX,
    GANG_TIMEOUT,
    MAX_EXCLUDED_NODES,
    DecisionBase,
)
from loom.builders.trainingjob_elastic import free_after_own_pods, largest_fit
from loom.builders.trainingjob_gang import fits, has_gang_gate
from loom.builders.trainingjob_view import (
    RESTARTING,
    RUNNING,
    is_deleting,
    node_state,
    parse_time,
)
from loom.health.failures import Action, Failure, FailureKind, classify


class GangPlan(DecisionBase):
    def _gang_succeeded(self) -> bool:
        """Rank 0 succeeded when there is a master; otherwise every replica of the gang did."""
        current = self._current()
        succeeded = {
            p["metadata"]["name"] for p in current if p.get("status", {}).get("phase") == "Succeeded"
        }
        expected = [p["metadata"]["name"] for p in self._expected()]
        if not expected:
            return False
        if MASTER_ROLE in self.spec.replicaSpecs:
            return expected[0] in succeeded
        return all(name in succeeded for name in expected)

    def _gang_failure(self) -> Failure | None:
        """The failure that ends the current gang: a permanent one if any, else the first retryable."""
        policies = {role: spec.restartPolicy for role, spec in self.spec.replicaSpecs.items()}
        failures: list[Failure] = []
        for pod in sorted(self._live_current(), key=lambda p: p["metadata"]["name"]):
            found = classify(pod, policies.get(self._role(pod), ""), node_state(pod, self.cluster))
            if found is not None:
                failures.append(found)
        if self.c.is_true(RUNNING):  # a pod of a gang that ran is gone: the gang is broken
            present = {p["metadata"]["name"] for p in self._current()}
            for pod in self._expected():
                if pod["metadata"]["name"] not in present:
                    failures.append(Failure(FailureKind.DELETED, Action.RESTART, pod["metadata"]["name"]))
        permanent = [f for f in failures if f.action is Action.FAIL]
        return next(iter(permanent or failures), None)

    def _gang_running(self, expected: Sequence[Mapping[str, Any]]) -> bool:
        by_name = {p["metadata"]["name"]: p for p in self._live_current()}
        return all(
            (pod := by_name.get(e["metadata"]["name"])) is not None
            and pod.get("status", {}).get("phase") == "Running"
            and not is_deleting(pod)
            for e in expected
        )

    def _spec_changed(self) -> bool:
        """Was the live gang built from an older pod spec (templates, replicas, nproc, elastic)?"""
        current = spec_hash(self.job)
        return any(
            p["metadata"].get("annotations", {}).get(SPEC_HASH, current) != current
            for p in self._live_current()
        )

    def _gang_timed_out(self) -> bool:
        if self.c.is_true(RUNNING):
            return False
        created = self._first_created(self._live_current())
        if created is None:
            return False
        deadline = created + timedelta(seconds=self.spec.runPolicy.schedulingTimeoutSeconds)
        if self.now < deadline:
            self._wake_at(deadline)
            return False
        return True

    def _restart(self, reason: str, message: str, *, counted: bool, lost: Sequence[str] = ()) -> None:
        """End the current gang and start the next attempt (its pods are created in this same plan)."""
        old = self.st.attempt
        for pod in self._current():
            self._delete(pod)
        self.st.attempt += 1
        if counted:
            self.st.restartCount += 1
        if lost:
            self.st.excludedNodes = sorted(set(self.st.excludedNodes) | set(lost))[-MAX_EXCLUDED_NODES:]
        if self.spec.elastic is not None:
            self.st.replicas = 0  # chosen again when the new gang is created
        text = f"{reason}: attempt {old} ended ({message}); starting attempt {self.st.attempt}"
        if counted:
            text += f", restart {self.st.restartCount} of {self.spec.runPolicy.backoffLimit}"
        self.c.set(RESTARTING, True, reason, text, quiet=True)
        self.plan.events.append(Event("Warning", "Restarting", text))
        self.c.unset(RUNNING, reason, text)
        self.plan.restart_reason = reason

    def _release_gang(self) -> None:
        """GangTimeout: delete the whole gang so that no partial gang holds GPUs; retry with backoff."""
        backoff = min(GANG_BACKOFF_BASE * 2**self.st.gangTimeouts, GANG_BACKOFF_MAX)
        timeout = self.spec.runPolicy.schedulingTimeoutSeconds
        self._restart(
            GANG_TIMEOUT, f"not Running within schedulingTimeoutSeconds ({timeout} s)", counted=False
        )
        self.st.gangTimeouts += 1
        self.st.nextAttemptTime = self.now + backoff
        cond = self.c.get(RESTARTING)
        if cond is not None:
            cond.message += f"; next gang in {int(backoff.total_seconds())} s"

    def _largest_fit(self) -> int:
        free = free_after_own_pods(self.cluster, self.pods)
        return largest_fit(self.job, self.st.attempt, self.st.excludedNodes, free, self.cluster)

    def _should_grow(self) -> bool:
        elastic = self.spec.elastic
        running = self.c.get(RUNNING)
        if elastic is None or running is None or running.status != ConditionStatus.TRUE:
            return False
        if self.st.replicas >= elastic.maxReplicas:
            return False
        since = running.lastTransitionTime or self.now
        if self.now < since + ELASTIC_GROW_AFTER:
            self._wake_at(since + ELASTIC_GROW_AFTER)
            return False
        if self._largest_fit() > self.st.replicas:
            return True
        self.plan.waiting_for_capacity = True  # woken up when GPUs are freed
        return False

    def _run_gang(self) -> None:
        live = self._live_current()
        if not live and self.spec.elastic is not None:
            self.st.replicas = self._largest_fit()
        self.st.replicas = self._size()
        expected = self._expected()
        present = {p["metadata"]["name"]: p for p in live}
        missing = [p for p in expected if p["metadata"]["name"] not in present]
        if missing:
            if self.st.nextAttemptTime is not None and self.now < self.st.nextAttemptTime:
                self._wake_at(self.st.nextAttemptTime)
                self._count_replicas()
                return
            self.st.nextAttemptTime = None
            self.plan.service = desired_service(self.job, self.st.attempt)
            self.plan.create = missing
            if not live:
                self.plan.events.append(
                    Event(
                        "Normal", "GangCreated", f"creating {len(expected)} pods of attempt {self.st.attempt}"
                    )
                )
        self._admit(expected, present)
        self._count_replicas()
        if expected and self._gang_running(expected) and not self.c.is_true(RUNNING):
            self._running(live)

    def _admit(self, expected: Sequence[Mapping[str, Any]], present: Mapping[str, Mapping[str, Any]]) -> None:
        """Lift the gang gate of every pod of the gang at once, when the whole gang fits."""
        gated = [present.get(p["metadata"]["name"], p) for p in expected]
        gated = [p for p in gated if has_gang_gate(p)]
        if not gated:
            return
        specs = [e["spec"] for e in expected if has_gang_gate(present.get(e["metadata"]["name"], e))]
        if not fits(self.cluster.free, self.cluster.nodes, specs):
            self.plan.waiting_for_capacity = True
            gpus = sum(pod_gpus(s) for s in specs)
            self.c.set(
                RUNNING,
                False,
                "WaitingForCapacity",
                f"the gang of {len(expected)} pods ({gpus} GPUs) does not fit the free GPUs yet",
            )
            return
        for pod in gated:
            left = [g for g in pod["spec"].get("schedulingGates") or [] if g.get("name") != GANG_GATE]
            self.plan.ungate.append((pod["metadata"]["name"], left))

    def _running(self, live: Sequence[Mapping[str, Any]]) -> None:
        restarted = self.c.is_true(RESTARTING)
        message = f"all {self.st.replicas} pods of attempt {self.st.attempt} are Running"
        self.c.set(RUNNING, True, "GangRunning", message)
        restarting = self.c.get(RESTARTING)
        if restarting is not None:  # keep what the last restart was about
            self.c.unset(RESTARTING, "GangRunning", restarting.message)
        self.st.gangTimeouts = 0
        since = (
            self._first_created(live) if restarted else parse_time(self.job.metadata.get("creationTimestamp"))
        )
        if since is not None:
            self.plan.running_after = max((self.now - since).total_seconds(), 0.0)
