"""What the FeaturePipeline controller keeps of the objects it watches, and of the children it created
that its watches have not shown yet.

Pure: no I/O; `now` is a parameter. Slim copies keep the indexes small (a SparkApplication's status
lists every executor); `Expectations` is the only memory besides the indexes, and losing it costs
nothing: after a restart the indexes are filled from a fresh list before any reconcile runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loom.builders.featurepipeline import ANNOTATION_END, ANNOTATION_SPEC_HASH, ANNOTATION_START

EXPECTATION_TTL_SECONDS = 30.0
_META = ("name", "namespace", "uid", "labels", "creationTimestamp", "deletionTimestamp")
_ANNOTATIONS = (ANNOTATION_START, ANNOTATION_END, ANNOTATION_SPEC_HASH)
_STATUS = {
    "Job": ("conditions", "active", "ready", "succeeded", "failed", "startTime", "completionTime"),
    "SparkApplication": ("applicationState", "driverInfo", "terminationTime", "executionAttempts"),
    "RayJob": ("jobDeploymentStatus", "jobStatus", "message", "reason", "startTime", "endTime"),
    "Deployment": ("replicas", "readyReplicas", "availableReplicas", "updatedReplicas"),
}
_TERMINATED = ("exitCode", "reason", "message", "finishedAt")


def _plain(value: Any) -> Any:
    """A JSON-shaped deep copy of a Kopf body part (dict-like views included)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def plain_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """A whole object as plain dicts, without managedFields (the largest part nothing reads)."""
    out: dict[str, Any] = _plain(body)
    out.get("metadata", {}).pop("managedFields", None)
    return out


def _pick(obj: Mapping[str, Any] | None, keys: Iterable[str]) -> dict[str, Any]:
    return {k: _plain(obj[k]) for k in keys if obj and obj.get(k) is not None}


def slim_child(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Job, SparkApplication, RayJob or Deployment: identity, window, replicas and status."""
    kind = str(body.get("kind") or "")
    meta = body.get("metadata") or {}
    slim_meta = _pick(meta, _META)
    slim_meta["annotations"] = _pick(meta.get("annotations"), _ANNOTATIONS)
    out: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"),
        "kind": kind,
        "metadata": slim_meta,
        "status": _pick(body.get("status"), _STATUS.get(kind, ())),
    }
    if kind == "Deployment":
        out["spec"] = _pick(body.get("spec"), ("replicas",))
    return out


def slim_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """A run's pod: its labels and how its containers terminated (the termination message)."""
    meta = body.get("metadata") or {}
    statuses = []
    for c in (body.get("status") or {}).get("containerStatuses") or []:
        state = c.get("state") or {}
        terminated = state.get("terminated")
        statuses.append(
            {
                "name": c.get("name"),
                "state": {"terminated": _pick(terminated, _TERMINATED)} if terminated else {},
            }
        )
    return {
        "metadata": _pick(meta, ("name", "labels", "creationTimestamp")),
        "status": {"phase": (body.get("status") or {}).get("phase"), "containerStatuses": statuses},
    }


@dataclass
class Expectations:
    """Children created whose watch events have not arrived yet, merged over the index so that a
    reconcile in between neither starts a window twice nor exceeds backfill.parallelism."""

    created: dict[tuple[str, str], dict[str, tuple[dict[str, Any], float]]] = field(default_factory=dict)

    def expect(self, key: tuple[str, str], child: Mapping[str, Any], now: float) -> None:
        self.created.setdefault(key, {})[str(child["metadata"]["name"])] = (slim_child(child), now)

    def forget(self, key: tuple[str, str]) -> None:
        self.created.pop(key, None)

    def merge(
        self, key: tuple[str, str], observed: Iterable[Mapping[str, Any]], now: float
    ) -> list[dict[str, Any]]:
        out = {str(c["metadata"]["name"]): dict(c) for c in observed}
        pending = self.created.get(key, {})
        for name, (child, when) in list(pending.items()):
            if name in out or now - when > EXPECTATION_TTL_SECONDS:
                del pending[name]
            else:
                out[name] = child
        if not pending:
            self.created.pop(key, None)
        return list(out.values())
