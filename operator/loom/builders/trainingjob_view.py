"""What the TrainingJob decision reads: the cluster beyond the job's own pods, and predicates on
the observed pods (attempt, deletion, node state, readiness) and on conditions (the phase).

Pure: no I/O and no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from loom.api.common import Condition, ConditionStatus
from loom.api.trainingjob import TrainingPhase
from loom.builders.trainingjob import LABEL_ATTEMPT
from loom.builders.trainingjob_gang import GpuPod, Node, free_gpus
from loom.health.failures import NodeState

CREATED, RUNNING, RESTARTING = "Created", "Running", "Restarting"
SUCCEEDED, FAILED, SUSPENDED = "Succeeded", "Failed", "Suspended"
GANG_SCHEDULED = "GangScheduled"  # every pod of the current gang is bound, or why none is
NODES_EXCLUDED = "NodesExcluded"  # later gangs avoid nodes lost under earlier ones


@dataclass(frozen=True)
class Cluster:
    """What the controller observes beyond the job's own pods: nodes, every pod holding or wanting
    GPUs (`admitted`: pods ungated by Loom whose update was not observed yet), and whether the API
    server serves PodGroups (kube-scheduler's gang scheduling)."""

    nodes: Mapping[str, Node] = field(default_factory=dict)
    pods: Iterable[GpuPod] = ()
    admitted: frozenset[tuple[str, str]] = frozenset()
    pod_groups_served: bool = False

    @cached_property
    def free(self) -> dict[str, int]:
        """GPUs free per usable node; computed only by decisions that need it."""
        return free_gpus(self.nodes.values(), self.pods, self.admitted)

    def free_without(self, namespace: str, names: Iterable[str]) -> dict[str, int]:
        """GPUs free per usable node as they will be once the pods `names` of `namespace` are gone."""
        gone = {(namespace, n) for n in names}
        kept = [p for p in self.pods if (p.namespace, p.name) not in gone]
        return free_gpus(self.nodes.values(), kept, self.admitted)


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


def is_ready(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )
