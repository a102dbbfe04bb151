"""TrainingJob -> the PodGroup of its gang (kube-scheduler's gang scheduling, scheduling.k8s.io/v1alpha2),
and what the scheduler wrote in an observed PodGroup's status.

Pure: no I/O. One PodGroup per attempt, `<job>-a<attempt>`, owned by the job: its policy is a gang of
exactly the attempt's pods (`minCount` = the gang size, elastic or not), so kube-scheduler binds every
pod of the gang in one cycle or none (it keeps them Pending, PodGroupScheduled=False, reason
Unschedulable). PodGroups are immutable: a gang of another size is another attempt, with its own group.
The group's priorityClassName follows the job's (the API server drops it unless the
WorkloadAwarePreemption gate is on); the pods carry theirs as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loom.api.trainingjob import TrainingJob
from loom.builders.common import owner_reference
from loom.builders.trainingjob import LABEL_ATTEMPT, labels

POD_GROUP_API_VERSION = "scheduling.k8s.io/v1alpha2"
POD_GROUP_KIND = "PodGroup"
POD_GROUP_PLURAL = "podgroups"
POD_GROUP_SCHEDULED = "PodGroupScheduled"  # the scheduler's condition on the group
MESSAGE_LIMIT = 600


def pod_group_name(job: TrainingJob, attempt: int) -> str:
    return f"{job.metadata['name']}-a{attempt}"


def desired_pod_group(job: TrainingJob, attempt: int, size: int) -> dict[str, Any]:
    """The PodGroup of gang `attempt` of `size` pods: all of them or none are bound."""
    spec: dict[str, Any] = {"schedulingPolicy": {"gang": {"minCount": size}}}
    if job.spec.runPolicy.priorityClassName:
        spec["priorityClassName"] = job.spec.runPolicy.priorityClassName
    return {
        "apiVersion": POD_GROUP_API_VERSION,
        "kind": POD_GROUP_KIND,
        "metadata": {
            "name": pod_group_name(job, attempt),
            "namespace": job.metadata.get("namespace"),
            "labels": labels(job) | {LABEL_ATTEMPT: str(attempt)},
            "ownerReferences": [owner_reference(job)],
        },
        "spec": spec,
    }


@dataclass(frozen=True)
class GroupState:
    """An observed PodGroup of the job, as its decisions read it. `scheduled`: the PodGroupScheduled
    condition's status (None while the scheduler has not written it)."""

    name: str
    uid: str | None
    attempt: int
    min_count: int
    deleting: bool = False
    scheduled: bool | None = None
    reason: str = ""
    message: str = ""
    since: datetime | None = None  # the condition's lastTransitionTime


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def group_state(body: Mapping[str, Any]) -> GroupState:
    meta = body.get("metadata") or {}
    try:
        attempt = int((meta.get("labels") or {}).get(LABEL_ATTEMPT, -1))
    except ValueError:
        attempt = -1
    gang = ((body.get("spec") or {}).get("schedulingPolicy") or {}).get("gang") or {}
    condition = next(
        (
            c
            for c in (body.get("status") or {}).get("conditions") or []
            if c.get("type") == POD_GROUP_SCHEDULED
        ),
        None,
    )
    scheduled = None if condition is None else condition.get("status") == "True"
    return GroupState(
        name=str(meta.get("name", "")),
        uid=meta.get("uid"),
        attempt=attempt,
        min_count=int(gang.get("minCount") or 0),
        deleting=bool(meta.get("deletionTimestamp")),
        scheduled=scheduled,
        reason=str((condition or {}).get("reason") or ""),
        message=str((condition or {}).get("message") or ""),
        since=_time((condition or {}).get("lastTransitionTime")),
    )


def _scheduled_condition(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "PodScheduled"), None)


def is_unschedulable(pod: Mapping[str, Any]) -> bool:
    """Did the scheduler report the pod Unschedulable (its PodScheduled condition)?"""
    condition = _scheduled_condition(pod)
    return (
        condition is not None
        and condition.get("status") == "False"
        and condition.get("reason") == "Unschedulable"
    )


def _unschedulable_message(pod: Mapping[str, Any]) -> str:
    condition = _scheduled_condition(pod)
    return str(condition.get("message") or "") if condition is not None and is_unschedulable(pod) else ""


def unschedulable_detail(pods: list[Mapping[str, Any]]) -> str:
    """The most telling thing the scheduler said about a pod it could not place: its per-node count
    ("0/6 nodes are available: 2 Insufficient nvidia.com/gpu, ...") when one pod has it, else the
    first message. Empty when no pod was reported Unschedulable."""
    messages = [(p["metadata"]["name"], text) for p in pods if (text := _unschedulable_message(p))]
    if not messages:
        return ""
    name, text = next(((n, t) for n, t in sorted(messages) if t.startswith("0/")), sorted(messages)[0])
    return f"pod {name}: {text}"[:MESSAGE_LIMIT]
