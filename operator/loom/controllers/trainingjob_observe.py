"""What the TrainingJob controller observes: slim copies of pods for its index, the writes it made
that its watches have not shown yet, and `Memory`, everything the controller remembers in one
object (a test builds one, inspects it and throws it away).

Pure: no I/O; `now` is a parameter. Losing the memory (a crash) costs nothing but a few redundant
API calls: after a restart the indexes are filled from a fresh list before any reconcile runs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from loom.builders.trainingjob import SPEC_HASH
from loom.builders.trainingjob_gang import GpuPod, has_gang_gate

EXPECTATION_TTL = timedelta(seconds=30)

_CONTAINER_KEYS = ("name", "resources", "restartPolicy")
_STATUS_CONTAINER_KEYS = ("name", "ready", "state")


def _pick(obj: Mapping[str, Any] | None, keys: Iterable[str]) -> dict[str, Any]:
    return {k: obj[k] for k in keys if obj and obj.get(k) is not None}


def slim_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a pod that decisions read, in the pod's own shape (a tenth of its size)."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    slim_meta = _pick(meta, ("name", "namespace", "uid", "labels", "creationTimestamp", "deletionTimestamp"))
    if SPEC_HASH in (meta.get("annotations") or {}):
        slim_meta["annotations"] = {SPEC_HASH: meta["annotations"][SPEC_HASH]}
    return {
        "metadata": slim_meta,
        "spec": {
            **_pick(spec, ("nodeName", "schedulingGates", "schedulingGroup")),
            "containers": [_pick(c, _CONTAINER_KEYS) for c in spec.get("containers") or []],
            "initContainers": [_pick(c, _CONTAINER_KEYS) for c in spec.get("initContainers") or []],
        },
        "status": {
            **_pick(status, ("phase", "reason", "message")),
            "conditions": [_pick_condition(c) for c in status.get("conditions") or []],
            "containerStatuses": [
                _pick(c, _STATUS_CONTAINER_KEYS) for c in status.get("containerStatuses") or []
            ],
            "initContainerStatuses": [
                _pick(c, _STATUS_CONTAINER_KEYS) for c in status.get("initContainerStatuses") or []
            ],
        },
    }


def _pick_condition(condition: Mapping[str, Any]) -> dict[str, Any]:
    """A pod condition's type, status and reason; and what the scheduler said of a pod it could not place."""
    keys: tuple[str, ...] = ("type", "status", "reason")
    if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
        keys += ("message",)
    return _pick(condition, keys)


def slim_pod_group(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a PodGroup that decisions read: its name, attempt, policy and the scheduler's verdict."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return {
        "metadata": _pick(meta, ("name", "namespace", "uid", "labels", "deletionTimestamp")),
        "spec": _pick(body.get("spec") or {}, ("schedulingPolicy",)),
        "status": {
            "conditions": [
                _pick(c, ("type", "status", "reason", "message", "lastTransitionTime"))
                for c in status.get("conditions") or []
            ]
        },
    }


def _name(pod: Mapping[str, Any]) -> str:
    return str(pod["metadata"]["name"])


@dataclass
class Expectations:
    """Pods Loom created, ungated or deleted whose watch events have not arrived yet.

    Merged over the index before each decision, so that a reconcile that runs between a write
    and its watch event neither repeats the write nor misjudges capacity (an ungated pod counts as
    admitted at once, for every job). Each entry ends when the index shows the write, or after
    EXPECTATION_TTL in case the write did not happen after all."""

    created: dict[tuple[str, str], dict[str, tuple[dict[str, Any], datetime]]] = field(default_factory=dict)
    ungated: dict[tuple[str, str], datetime] = field(default_factory=dict)
    deleted: dict[tuple[str, str], tuple[str | None, datetime]] = field(default_factory=dict)
    reserved: dict[tuple[str, str], tuple[GpuPod, datetime]] = field(default_factory=dict)

    def expect_created(self, job: tuple[str, str], pod: Mapping[str, Any], now: datetime) -> None:
        self.created.setdefault(job, {})[_name(pod)] = (slim_pod(pod), now)

    def expect_ungated(self, namespace: str, name: str, now: datetime) -> None:
        self.ungated[(namespace, name)] = now

    def cancel_ungated(self, namespace: str, name: str) -> None:
        self.ungated.pop((namespace, name), None)
        self.reserved.pop((namespace, name), None)

    def reserve(self, pod: GpuPod, now: datetime) -> None:
        """A pod admitted in the same plan that creates it: its GPUs are taken before any watch
        event shows the pod, so that the next job's decision cannot promise them again."""
        self.reserved[(pod.namespace, pod.name)] = (replace(pod, gated=False), now)

    def reservations(self, observed: Collection[tuple[str, str]], now: datetime) -> list[GpuPod]:
        """Reserved pods the index does not show yet (`observed`: the (namespace, name) it shows)."""
        for key in [k for k, (_, t) in self.reserved.items() if k in observed or now - t > EXPECTATION_TTL]:
            del self.reserved[key]
        return [pod for pod, _ in self.reserved.values()]

    def expect_deleted(self, namespace: str, name: str, uid: str | None, now: datetime) -> None:
        self.deleted[(namespace, name)] = (uid, now)

    def forget(self, job: tuple[str, str]) -> None:
        self.created.pop(job, None)

    def admitted(self, now: datetime) -> frozenset[tuple[str, str]]:
        """(namespace, name) of pods ungated by Loom, as far as it knows, still to be observed so."""
        for key in [k for k, t in self.ungated.items() if now - t > EXPECTATION_TTL]:
            del self.ungated[key]
        for key in [k for k, (_, t) in self.deleted.items() if now - t > EXPECTATION_TTL]:
            del self.deleted[key]
        return frozenset(self.ungated)

    def merge(
        self, job: tuple[str, str], observed: Iterable[Mapping[str, Any]], now: datetime
    ) -> list[dict[str, Any]]:
        """The job's pods as the index shows them, with Loom's unobserved writes applied."""
        namespace = job[0]
        out: dict[str, dict[str, Any]] = {}
        for pod in observed:
            name = _name(pod)
            key = (namespace, name)
            view = dict(pod)
            if key in self.ungated:
                if not has_gang_gate(pod) or now - self.ungated[key] > EXPECTATION_TTL:
                    del self.ungated[key]
                else:
                    view["spec"] = {**pod["spec"], "schedulingGates": []}
            if key in self.deleted:
                uid, when = self.deleted[key]
                meta = pod["metadata"]
                if meta.get("deletionTimestamp") or meta.get("uid") != uid or now - when > EXPECTATION_TTL:
                    del self.deleted[key]
                else:
                    view["metadata"] = {**meta, "deletionTimestamp": now.isoformat()}
            out[name] = view
        created = self.created.get(job, {})
        for name, (pod, when) in list(created.items()):
            if name in out or now - when > EXPECTATION_TTL:
                del created[name]
            else:
                out[name] = pod
        if not created:
            self.created.pop(job, None)
        return list(out.values())


Key = tuple[str, str]


@dataclass
class Memory:
    """The TrainingJob controller's memory besides the Kopf indexes it holds references to."""

    indices: dict[str, Any] = field(default_factory=dict)  # the Kopf indexes, by handler name
    expectations: Expectations = field(default_factory=Expectations)
    written: dict[Key, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # (rv before, body after)
    waiting: set[Key] = field(default_factory=set)  # gangs waiting for GPUs (or elastic jobs that could grow)
    phases: dict[Key, str] = field(default_factory=dict)  # as counted in loom_resources
    nodes_seen: dict[str, tuple[bool, bool, int]] = field(default_factory=dict)  # (ready, cordoned, GPUs)
    pod_groups_served: bool = False  # does the API server serve scheduling.k8s.io/v1alpha2 PodGroups
    last_status_patch: dict[Key, float] = field(default_factory=dict)  # monotonic seconds

    def forget(self, key: Key) -> None:
        """A job that is gone: everything about it (its phase is uncounted by the caller)."""
        self.last_status_patch.pop(key, None)
        self.written.pop(key, None)
        self.waiting.discard(key)
        self.expectations.forget(key)
