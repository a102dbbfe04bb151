"""The TrainingJob state machine: `decide(job, pods, cluster, now) -> Plan`.

Pure: no I/O and no clock (`now` is a parameter); it imports neither kopf nor loom.kube (a unit
test checks). Every reconcile recomputes the whole plan from the spec, the status (the record of
earlier decisions: attempt, restart count, times) and the observed pods, so an operator killed at
any point converges to the same result. The controller carries a plan out in a fixed order:
status first (so that a new attempt is recorded before its pods exist), then deletions, the
Service, creations, ungating, the job's own deletion, and last the events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from loom.api.common import Condition, ConditionStatus
from loom.api.trainingjob import (
    CleanPodPolicy,
    ReplicaStatus,
    TrainingJob,
    TrainingJobStatus,
    TrainingPhase,
)
from loom.builders.common import STALLED
from loom.builders.trainingjob import (
    GANG_GATE,
    LABEL_ATTEMPT,
    LABEL_ROLE,
    MASTER_ROLE,
    SPEC_HASH,
    desired_pods,
    desired_service,
    full_size,
    name_problem,
    pod_gpus,
    role_order,
    spec_hash,
)
from loom.builders.trainingjob_gang import GpuPod, Node, fits, free_gpus, has_gang_gate
from loom.health.failures import Action, Failure, FailureKind, NodeState, classify, is_terminal

CREATED, RUNNING, RESTARTING = "Created", "Running", "Restarting"
SUCCEEDED, FAILED, SUSPENDED = "Succeeded", "Failed", "Suspended"
GANG_TIMEOUT = "GangTimeout"
ELASTIC_SCALE_UP = "ElasticScaleUp"
GANG_BACKOFF_BASE = timedelta(seconds=5)
GANG_BACKOFF_MAX = timedelta(minutes=5)
ELASTIC_GROW_AFTER = timedelta(seconds=10)  # a gang runs this long before it is restarted bigger
RESYNC = 300.0  # seconds: even with no event, an active job is reconciled this often
MAX_EXCLUDED_NODES = 32


@dataclass(frozen=True)
class Cluster:
    """What the controller observes beyond the job's own pods: nodes, and every pod holding or
    wanting GPUs (`admitted`: pods ungated by Loom whose update was not observed yet)."""

    nodes: Mapping[str, Node] = field(default_factory=dict)
    pods: Iterable[GpuPod] = ()
    admitted: frozenset[tuple[str, str]] = frozenset()

    @cached_property
    def free(self) -> dict[str, int]:
        """GPUs free per usable node; computed only by decisions that need it."""
        return free_gpus(self.nodes.values(), self.pods, self.admitted)


@dataclass(frozen=True)
class PodDeletion:
    name: str
    uid: str | None
    force: bool = False  # grace period 0: the pod's node is gone, no kubelet will confirm


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass
class Plan:
    status: TrainingJobStatus
    service: dict[str, Any] | None = None
    create: list[dict[str, Any]] = field(default_factory=list)
    ungate: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)  # (pod, gates left)
    delete: list[PodDeletion] = field(default_factory=list)
    delete_job: bool = False
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    waiting_for_capacity: bool = False
    restart_reason: str | None = None  # for the restart counter
    running_after: float | None = None  # seconds from creation (job or attempt) to gang Running


def parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def attempt_of(pod: Mapping[str, Any]) -> int:
    try:
        return int(pod["metadata"].get("labels", {}).get(LABEL_ATTEMPT, -1))
    except ValueError:
        return -1


def is_deleting(pod: Mapping[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def node_state(pod: Mapping[str, Any], cluster: Cluster) -> NodeState:
    name = pod.get("spec", {}).get("nodeName")
    if not name:
        return NodeState.READY
    node = cluster.nodes.get(name)
    if node is None:
        return NodeState.GONE
    return NodeState.READY if node.ready else NodeState.NOT_READY


def phase_of(conditions: Sequence[Condition]) -> TrainingPhase:
    true = {c.type for c in conditions if c.status == ConditionStatus.TRUE}
    for kind, phase in (
        (FAILED, TrainingPhase.FAILED),
        (SUCCEEDED, TrainingPhase.SUCCEEDED),
        (SUSPENDED, TrainingPhase.SUSPENDED),
        (RESTARTING, TrainingPhase.RESTARTING),
        (RUNNING, TrainingPhase.RUNNING),
        (CREATED, TrainingPhase.CREATED),
    ):
        if kind in true:
            return phase
    return TrainingPhase.PENDING


def decide(job: TrainingJob, pods: Sequence[Mapping[str, Any]], cluster: Cluster, now: datetime) -> Plan:
    """What to do next for `job`, given all of its observed pods (every attempt) and the cluster."""
    return _Decision(job, pods, cluster, now).run()


class _Decision:
    def __init__(
        self, job: TrainingJob, pods: Sequence[Mapping[str, Any]], cluster: Cluster, now: datetime
    ) -> None:
        self.job, self.pods, self.cluster, self.now = job, list(pods), cluster, now
        self.spec = job.spec
        self.generation = job.metadata.get("generation")
        self.st = (job.status or TrainingJobStatus()).model_copy(deep=True)
        self.st.observedGeneration = self.generation
        # Deciding means the spec and the status were read: whatever stalled the job is over.
        self.st.conditions = [c for c in self.st.conditions if c.type != STALLED]
        self.plan = Plan(status=self.st)
        self.deleted: set[str] = set()
        self._built: dict[tuple[int, int, tuple[str, ...]], list[dict[str, Any]]] = {}

    # -- the state machine, read top-down ------------------------------------------------------
    def run(self) -> Plan:
        if self.job.metadata.get("deletionTimestamp"):  # being deleted: its pods go with it
            self.plan.status = self.job.status or self.st
            return self.plan
        if self._finished():
            return self._after_finish()
        if not self._has(CREATED):
            self._set(CREATED, True, "JobCreated", f"TrainingJob {self._name} is created")
        problem = name_problem(self.job)
        if problem:
            return self._fail("InvalidSpec", problem)
        if self.spec.runPolicy.suspend:
            return self._suspend()
        if self._is(SUSPENDED):
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
        elif self._gang_timed_out():
            self._release_gang()
        elif self._should_grow():
            self._restart(ELASTIC_SCALE_UP, f"capacity for {self._largest_fit()} replicas", counted=False)
        self._run_gang()
        return self._done()

    # -- observations ----------------------------------------------------------------------------
    @property
    def _name(self) -> str:
        return f"{self.job.metadata.get('namespace')}/{self.job.metadata.get('name')}"

    def _current(self) -> list[Mapping[str, Any]]:
        return [p for p in self.pods if attempt_of(p) == self.st.attempt]

    def _live_current(self) -> list[Mapping[str, Any]]:
        """Pods of the current gang that Loom is not deleting itself."""
        return [p for p in self._current() if p["metadata"]["name"] not in self.deleted]

    def _policy_of(self, pod_name: str) -> str:
        role = next((self._role(p) for p in self.pods if p["metadata"]["name"] == pod_name), "")
        spec = self.spec.replicaSpecs.get(role)
        return str(spec.restartPolicy) if spec else ""

    def _role(self, pod: Mapping[str, Any]) -> str:
        return str(pod["metadata"].get("labels", {}).get(LABEL_ROLE, ""))

    def _size(self) -> int:
        if self.spec.elastic is None:
            return full_size(self.job)
        return self.st.replicas if self.st.replicas else self.spec.elastic.minReplicas

    def _expected(self) -> list[dict[str, Any]]:
        """The current gang's pods as the builder makes them (built once per attempt and size)."""
        key = (self.st.attempt, self._size(), tuple(self.st.excludedNodes))
        if key not in self._built:
            self._built[key] = desired_pods(self.job, key[0], size=key[1], excluded_nodes=key[2])
        return self._built[key]

    def _first_created(self, pods: Sequence[Mapping[str, Any]]) -> datetime | None:
        times = [t for p in pods if (t := parse_time(p["metadata"].get("creationTimestamp")))]
        return min(times) if times else None

    def _lost_nodes(self) -> list[str]:
        return sorted(
            {
                p["spec"]["nodeName"]
                for p in self._live_current()
                if node_state(p, self.cluster) is not NodeState.READY and not is_terminal(p)
            }
        )

    # -- conditions and events -------------------------------------------------------------------
    def _cond(self, type_: str) -> Condition | None:
        return next((c for c in self.st.conditions if c.type == type_), None)

    def _has(self, type_: str) -> bool:
        return self._cond(type_) is not None

    def _is(self, type_: str) -> bool:
        cond = self._cond(type_)
        return cond is not None and cond.status == ConditionStatus.TRUE

    def _set(self, type_: str, value: bool, reason: str, message: str, *, quiet: bool = False) -> None:
        """Set a condition; a change to True (or of reason while True) is recorded as an event."""
        status = ConditionStatus.TRUE if value else ConditionStatus.FALSE
        cond = self._cond(type_)
        changed = cond is None or cond.status != status or (value and cond.reason != reason)
        if cond is None:
            cond = Condition(type=type_, status=status)
            self.st.conditions.append(cond)
        if cond.status != status or cond.lastTransitionTime is None:
            cond.lastTransitionTime = self.now
        cond.status, cond.reason, cond.message = status, reason, message
        cond.observedGeneration = self.generation
        if changed and value and not quiet:
            warning = type_ in (FAILED, RESTARTING)
            self.plan.events.append(Event("Warning" if warning else "Normal", reason, message))

    def _unset(self, type_: str, reason: str, message: str) -> None:
        if self._is(type_):
            self._set(type_, False, reason, message)

    def _wake_at(self, when: datetime | None) -> None:
        if when is None:
            return
        seconds = max((when - self.now).total_seconds(), 0.05)
        if self.plan.requeue_after is None or seconds < self.plan.requeue_after:
            self.plan.requeue_after = seconds

    # -- terminal states -------------------------------------------------------------------------
    def _finished(self) -> bool:
        return self._is(SUCCEEDED) or self._is(FAILED)

    def _finish(self, type_: str, reason: str, message: str) -> Plan:
        self._count_replicas()
        self._set(type_, True, reason, message)
        self._unset(RUNNING, reason, message)
        self._unset(RESTARTING, reason, message)
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

    # -- suspension ------------------------------------------------------------------------------
    def _suspend(self) -> Plan:
        for pod in self.pods:
            if not is_deleting(pod) or node_state(pod, self.cluster) is not NodeState.READY:
                self._delete(pod)
        self._set(
            SUSPENDED, True, "JobSuspended", f"TrainingJob {self._name} is suspended; its pods are deleted"
        )
        self._unset(RUNNING, "JobSuspended", "the job is suspended")
        self._unset(RESTARTING, "JobSuspended", "the job is suspended")
        self.st.startTime = None
        self.st.nextAttemptTime = None
        self._count_replicas()
        self.st.phase = phase_of(self.st.conditions)
        return self.plan

    def _resume(self) -> None:
        message = f"TrainingJob {self._name} is resumed with a fresh gang"
        self._set(SUSPENDED, False, "JobResumed", message)
        self.plan.events.append(Event("Normal", "JobResumed", message))
        if self.pods:  # pods of the suspended gang may still be terminating: use new names
            self.st.attempt += 1
        self.st.gangTimeouts = 0
        self.st.nextAttemptTime = None
        self.st.replicas = 0

    # -- the current gang ------------------------------------------------------------------------
    def _active_deadline(self) -> datetime | None:
        limit = self.spec.runPolicy.activeDeadlineSeconds
        if limit is None or self.st.startTime is None:
            return None
        return self.st.startTime + timedelta(seconds=limit)

    def _delete(self, pod: Mapping[str, Any]) -> None:
        name = pod["metadata"]["name"]
        if name in self.deleted:
            return
        self.deleted.add(name)
        force = node_state(pod, self.cluster) is not NodeState.READY
        self.plan.delete.append(PodDeletion(name, pod["metadata"].get("uid"), force=force))

    def _delete_stale(self) -> None:
        for pod in self.pods:
            stuck = is_deleting(pod) and node_state(pod, self.cluster) is not NodeState.READY
            if attempt_of(pod) != self.st.attempt and (not is_deleting(pod) or stuck):
                self._delete(pod)

    def _count_replicas(self) -> None:
        counts = {role: ReplicaStatus() for role in role_order(self.job)}
        for pod in self._current():
            rs = counts.get(self._role(pod))
            if rs is None:
                continue
            phase = pod.get("status", {}).get("phase")
            if phase == "Succeeded":
                rs.succeeded += 1
            elif phase == "Failed":
                rs.failed += 1
            elif not is_deleting(pod):
                rs.active += 1
                if _is_ready(pod):
                    rs.ready += 1
        self.st.replicaStatuses = counts
        self.st.replicas = self._size()
        self.st.readyReplicas = sum(rs.ready for rs in counts.values())

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
        if self._is(RUNNING):  # a pod of a gang that ran is gone: the gang is broken
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
        if self._is(RUNNING):
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
        self._set(RESTARTING, True, reason, text, quiet=True)
        self.plan.events.append(Event("Warning", "Restarting", text))
        self._unset(RUNNING, reason, text)
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
        cond = self._cond(RESTARTING)
        if cond is not None:
            cond.message += f"; next gang in {int(backoff.total_seconds())} s"

    # -- elastic ---------------------------------------------------------------------------------
    def _free_without_own_pods(self) -> dict[str, int]:
        """Free GPUs as they will be once this job's own pods are gone (they are being replaced)."""
        free = dict(self.cluster.free)
        for pod in self.pods:
            node = pod.get("spec", {}).get("nodeName")
            if node in free and not is_terminal(pod):
                free[node] += pod_gpus(pod.get("spec", {}))
        return free

    def _largest_fit(self) -> int:
        elastic = self.spec.elastic
        assert elastic is not None
        free = self._free_without_own_pods()
        for size in range(elastic.maxReplicas, elastic.minReplicas - 1, -1):
            specs = [
                p["spec"]
                for p in desired_pods(
                    self.job, self.st.attempt, size=size, excluded_nodes=self.st.excludedNodes
                )
            ]
            if fits(free, self.cluster.nodes, specs):
                return size
        return elastic.minReplicas

    def _should_grow(self) -> bool:
        elastic = self.spec.elastic
        running = self._cond(RUNNING)
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

    # -- creation, admission, running --------------------------------------------------------------
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
        if expected and self._gang_running(expected) and not self._is(RUNNING):
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
            self._set(
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
        restarted = self._is(RESTARTING)
        message = f"all {self.st.replicas} pods of attempt {self.st.attempt} are Running"
        self._set(RUNNING, True, "GangRunning", message)
        restarting = self._cond(RESTARTING)
        if restarting is not None:  # keep what the last restart was about
            self._unset(RESTARTING, "GangRunning", restarting.message)
        self.st.gangTimeouts = 0
        since = (
            self._first_created(live) if restarted else parse_time(self.job.metadata.get("creationTimestamp"))
        )
        if since is not None:
            self.plan.running_after = max((self.now - since).total_seconds(), 0.0)

    def _done(self) -> Plan:
        self._wake_at(self.now + timedelta(seconds=RESYNC))
        self.st.phase = phase_of(self.st.conditions)
        return self.plan


def _is_ready(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )
