"""The state a TrainingJob decision works on, and what every part of it reads: the status being
built, the plan, the job's pods of the current attempt, deadlines; the plan's types.

Pure: no I/O and no clock (`now` is a parameter). The parts of the decision are split by concern:
trainingjob_lifecycle (finishing, cleaning up, suspending), trainingjob_gang_plan (the current gang:
failures, restarts, timeouts, elastic growth, creation and admission), and trainingjob_plan, which
reads them top-down as one state machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from loom.api.trainingjob import ReplicaStatus, TrainingJob, TrainingJobStatus
from loom.builders.common import STALLED
from loom.builders.trainingjob import (
    LABEL_ROLE,
    GangPath,
    desired_pods,
    full_size,
    gang_path,
    role_order,
)
from loom.builders.trainingjob_conditions import Conditions, Event
from loom.builders.trainingjob_podgroup import GroupState, group_state, pod_group_name
from loom.builders.trainingjob_view import (
    Cluster,
    attempt_of,
    is_deleting,
    is_ready,
    node_state,
    parse_time,
)
from loom.health.failures import NodeState, is_terminal

GANG_TIMEOUT = "GangTimeout"
GANG_UNSCHEDULABLE = "GangUnschedulable"  # the scheduler could not place a pod of an admitted gang
ELASTIC_SCALE_UP = "ElasticScaleUp"
ELASTIC_SCALE_DOWN = "ElasticScaleDown"
GANG_BACKOFF_BASE = timedelta(seconds=5)
GANG_BACKOFF_MAX = timedelta(minutes=5)
ELASTIC_GROW_AFTER = timedelta(seconds=10)  # a gang runs this long before it is restarted bigger
# A PodGroup the scheduler keeps Unschedulable this long is restarted smaller even where Loom's own
# count says it fits (the scheduler sees what Loom does not: pods outside its namespaces, CPU, memory).
ELASTIC_SHRINK_AFTER = timedelta(seconds=5)
RESYNC = 300.0  # seconds: even with no event, an active job is reconciled this often
MAX_EXCLUDED_NODES = 32  # later gangs avoid at most this many nodes (the most recently lost)


@dataclass(frozen=True)
class PodDeletion:
    name: str
    uid: str | None
    force: bool = False  # grace period 0: the pod's node is gone, no kubelet will confirm


@dataclass(frozen=True)
class GroupDeletion:
    name: str
    uid: str | None


@dataclass
class Plan:
    status: TrainingJobStatus
    service: dict[str, Any] | None = None
    create_groups: list[dict[str, Any]] = field(default_factory=list)  # PodGroups, created before pods
    delete_groups: list[GroupDeletion] = field(default_factory=list)
    create: list[dict[str, Any]] = field(default_factory=list)
    ungate: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)  # (pod, gates left)
    delete: list[PodDeletion] = field(default_factory=list)
    delete_job: bool = False
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    waiting_for_capacity: bool = False
    restart_reason: str | None = None  # for the restart counter
    running_after: float | None = None  # seconds from creation (job or attempt) to gang Running


class DecisionBase:
    def __init__(
        self,
        job: TrainingJob,
        pods: Sequence[Mapping[str, Any]],
        cluster: Cluster,
        now: datetime,
        groups: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.job, self.pods, self.cluster, self.now = job, list(pods), cluster, now
        self.groups: list[GroupState] = sorted((group_state(g) for g in groups), key=lambda g: g.name)
        self.spec = job.spec
        self.generation = job.metadata.get("generation")
        self.st = (job.status or TrainingJobStatus()).model_copy(deep=True)
        self.st.observedGeneration = self.generation
        # Deciding means the spec and the status were read: whatever stalled the job is over.
        self.st.conditions = [c for c in self.st.conditions if c.type != STALLED]
        self.plan = Plan(status=self.st)
        self.c = Conditions(self.st, self.plan.events, now, self.generation)
        self.deleted: set[str] = set()
        self.deleted_groups: set[str] = set()
        self._built: dict[tuple[int, int, tuple[str, ...], GangPath], list[dict[str, Any]]] = {}

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

    def _path(self) -> GangPath:
        """Who places the current gang: as its pods say once they exist (a pod's schedulingGroup is
        immutable), else as the cluster allows now."""
        live = self._live_current()
        if any(p.get("spec", {}).get("schedulingGroup") for p in live):
            return GangPath.POD_GROUP
        return gang_path(self.job, self.cluster.pod_groups_served and not live)

    def _group(self) -> GroupState | None:
        """The current gang's PodGroup as observed (None: not observed yet, or none on this path)."""
        name = pod_group_name(self.job, self.st.attempt)
        return next((g for g in self.groups if g.name == name), None)

    def _expected(self) -> list[dict[str, Any]]:
        """The current gang's pods as the builder makes them (built once per attempt, size and path)."""
        key = (self.st.attempt, self._size(), tuple(self.st.excludedNodes), self._path())
        if key not in self._built:
            group = pod_group_name(self.job, key[0]) if key[3] is GangPath.POD_GROUP else None
            self._built[key] = desired_pods(
                self.job, key[0], size=key[1], excluded_nodes=key[2], pod_group=group
            )
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

    def _wake_at(self, when: datetime | None) -> None:
        if when is None:
            return
        seconds = max((when - self.now).total_seconds(), 0.05)
        if self.plan.requeue_after is None or seconds < self.plan.requeue_after:
            self.plan.requeue_after = seconds

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
        self._delete_groups(keep=self.st.attempt)

    def _delete_groups(self, keep: int | None = None) -> None:
        """Delete the PodGroups of gangs other than `keep` (all of them when None)."""
        for group in self.groups:
            if group.attempt != keep and not group.deleting and group.name not in self.deleted_groups:
                self.deleted_groups.add(group.name)
                self.plan.delete_groups.append(GroupDeletion(group.name, group.uid))

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
                if is_ready(pod):
                    rs.ready += 1
        self.st.replicaStatuses = counts
        self.st.replicas = self._size()
        self.st.readyReplicas = sum(rs.ready for rs in counts.values())
