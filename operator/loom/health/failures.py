"""Pod failure classification: what went wrong with a pod, and whether its gang may be restarted.

Pure: takes a pod (a dict shaped like the API object) and the replica's restart policy; no I/O.
The policies are data (`RULES`): one function per restart policy from failure kind and exit code
to an action, so a new policy is one table entry, not another branch in the controller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from loom.api.trainingjob import RestartPolicy


class FailureKind(StrEnum):
    """What happened, named as the condition reason the job reports."""

    EXIT_CODE = "ExitCode"  # a container exited non-zero
    OOM_KILLED = "OOMKilled"  # the kernel killed a container for memory
    EVICTED = "Evicted"  # the kubelet evicted the pod (node pressure)
    PREEMPTED = "Preempted"  # the scheduler preempted the pod for a higher priority one
    NODE_LOST = "NodeLost"  # the pod's node is gone or NotReady
    DELETED = "PodDeleted"  # someone (or something) deleted a pod of the running gang
    UNKNOWN = "PodFailed"  # the pod failed without a container exit (admission errors and the like)


class Action(StrEnum):
    RESTART = "Restart"  # restart the whole gang, counted against backoffLimit
    FAIL = "Fail"  # the job fails at once


class NodeState(StrEnum):
    READY = "Ready"
    NOT_READY = "NotReady"
    GONE = "Gone"


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    action: Action
    pod: str
    container: str | None = None
    exit_code: int | None = None
    node: str | None = None
    detail: str = ""

    @property
    def is_permanent(self) -> bool:
        return self.action is Action.FAIL

    @property
    def message(self) -> str:
        """One line naming the pod, container and exit code, e.g. for a condition message."""
        where = f"pod {self.pod}" + (f" container {self.container}" if self.container else "")
        if self.kind in (FailureKind.EXIT_CODE, FailureKind.OOM_KILLED):
            text = f"{where} exited with code {self.exit_code}"
            text += " (OOMKilled)" if self.kind is FailureKind.OOM_KILLED else ""
        elif self.kind is FailureKind.NODE_LOST:
            text = f"{where}: node {self.node} is lost, NotReady or GPU-unhealthy"
        elif self.kind is FailureKind.DELETED:
            text = f"{where} was deleted while the gang was running"
        else:
            text = f"{where} failed: {self.kind}"
        return f"{text}: {self.detail}" if self.detail else text


# Failures the program did not cause: every policy restarts the gang for these.
DISRUPTIONS = frozenset(
    {
        FailureKind.EVICTED,
        FailureKind.PREEMPTED,
        FailureKind.NODE_LOST,
        FailureKind.DELETED,
        FailureKind.UNKNOWN,
    }
)


def _never(kind: FailureKind, code: int | None) -> Action:
    return Action.RESTART if kind in DISRUPTIONS else Action.FAIL


def _on_failure(kind: FailureKind, code: int | None) -> Action:
    return Action.RESTART


def _exit_code(kind: FailureKind, code: int | None) -> Action:
    """Kubeflow's ExitCode policy: 1-127 are the program's own errors (permanent); 128-255 are
    signals (SIGKILL 137, SIGSEGV 139, ...) and so worth a retry, like OOMKilled (137)."""
    if kind is FailureKind.EXIT_CODE and code is not None and 1 <= code <= 127:
        return Action.FAIL
    return Action.RESTART


RULES: Mapping[str, Callable[[FailureKind, int | None], Action]] = {
    RestartPolicy.NEVER: _never,
    RestartPolicy.ON_FAILURE: _on_failure,
    RestartPolicy.EXIT_CODE: _exit_code,
}
DEFAULT_RULE = _on_failure

# DisruptionTarget condition reasons (pod disruption conditions, Kubernetes 1.26+).
_DISRUPTION_REASONS = {
    "PreemptionByScheduler": FailureKind.PREEMPTED,
    "PreemptionByKubeScheduler": FailureKind.PREEMPTED,
    "TerminationByKubelet": FailureKind.EVICTED,
    "EvictionByEvictionAPI": FailureKind.EVICTED,
    "DeletionByTaintManager": FailureKind.NODE_LOST,
    "DeletionByPodGC": FailureKind.NODE_LOST,
}


def is_terminal(pod: Mapping[str, Any]) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def _sidecars(pod: Mapping[str, Any]) -> set[str]:
    return {
        c.get("name", "")
        for c in pod.get("spec", {}).get("initContainers") or []
        if c.get("restartPolicy") == "Always"
    }


def failed_container(pod: Mapping[str, Any]) -> tuple[str, int, str] | None:
    """(name, exit code, reason) of the first container that terminated non-zero, init containers first.

    Native sidecars (init containers with restartPolicy Always) are skipped: the kubelet stops them
    with a signal when the main containers finish, which is not a failure of the pod."""
    status = pod.get("status", {})
    sidecars = _sidecars(pod)
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            if cs.get("name") in sidecars:
                continue
            terminated = (cs.get("state") or {}).get("terminated")
            if terminated and int(terminated.get("exitCode") or 0) != 0:
                return cs.get("name", ""), int(terminated["exitCode"]), terminated.get("reason") or ""
    return None


def _kind(pod: Mapping[str, Any], node: NodeState) -> tuple[FailureKind, tuple[str, int, str] | None] | None:
    status = pod.get("status", {})
    phase = status.get("phase")
    if phase == "Succeeded":
        return None
    if status.get("reason") == "Evicted":
        return FailureKind.EVICTED, failed_container(pod)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            kind = _DISRUPTION_REASONS.get(cond.get("reason", ""))
            if kind and (phase == "Failed" or pod.get("metadata", {}).get("deletionTimestamp")):
                return kind, failed_container(pod)
    exited = failed_container(pod)
    if phase != "Failed" and node is not NodeState.READY and pod.get("spec", {}).get("nodeName"):
        return FailureKind.NODE_LOST, exited
    if phase != "Failed" and pod.get("metadata", {}).get("deletionTimestamp"):
        # Deleted from outside while alive: its exit code is the answer to SIGTERM, not a verdict.
        return FailureKind.DELETED, exited
    if exited is not None:
        kind = FailureKind.OOM_KILLED if exited[2] == "OOMKilled" else FailureKind.EXIT_CODE
        return kind, exited
    if phase == "Failed":
        return FailureKind.UNKNOWN, None
    return None


def classify(pod: Mapping[str, Any], policy: str, node: NodeState = NodeState.READY) -> Failure | None:
    """The pod's failure and what to do about it under `policy`; None while the pod is healthy
    (pending, running, succeeded).

    `node` is the state of the pod's node as the caller observes it (a pod on a lost node still
    reads Running until something notices). A pod being deleted counts as failed (DELETED): the
    caller passes only pods of the live gang, never those it is deleting itself."""
    found = _kind(pod, node)
    if found is None:
        return None
    kind, exited = found
    code = exited[1] if exited else None
    action = RULES.get(policy, DEFAULT_RULE)(kind, code)
    status = pod.get("status", {})
    detail = status.get("message") or ""
    if exited and exited[2] and exited[2] not in ("Error", "OOMKilled"):
        detail = detail or exited[2]
    return Failure(
        kind=kind,
        action=action,
        pod=pod.get("metadata", {}).get("name", ""),
        container=exited[0] if exited else None,
        exit_code=code,
        node=pod.get("spec", {}).get("nodeName"),
        detail=detail[:200],
    )
