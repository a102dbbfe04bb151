"""What every child object Loom creates carries (the recommended labels and an owner reference), and
the Stalled condition of a resource Loom holds off acting on.

Pure: no I/O; `now` is a parameter."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from loom.api.common import API_VERSION, Lenient, Resource, describe_errors

MANAGED_BY = "loom-operator"
STALLED = "Stalled"
INVALID_SPEC = "InvalidSpec"
UNREADABLE_STATUS = "UnreadableStatus"


def recommended_labels(resource: Resource, component: str | None = None) -> dict[str, str]:
    """The app.kubernetes.io/* labels of a child of `resource`."""
    out = {
        "app.kubernetes.io/name": resource.kind.lower(),
        "app.kubernetes.io/instance": str(resource.metadata["name"]),
        "app.kubernetes.io/part-of": "loom",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    if component is not None:
        out["app.kubernetes.io/component"] = component
    return out


def owner_reference(resource: Resource) -> dict[str, Any]:
    """Makes `resource` the controller of a child, so the child is garbage-collected with it."""
    return {
        "apiVersion": API_VERSION,
        "kind": resource.kind,
        "name": resource.metadata["name"],
        "uid": resource.metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def invalid_spec_message(error: ValidationError) -> str:
    return (
        f"the spec is invalid: {describe_errors(error)}. The API server's schema should have refused it, "
        "so its CRD is probably older than this operator: apply the operator's CRDs (kubectl apply "
        "--server-side -k crds), then fix the spec. Loom does nothing with it until then."
    )


def unreadable_status_message(parsed: Lenient[Any], recomputed: frozenset[str]) -> str:
    return (
        f"status fields this operator cannot read: {'; '.join(parsed.unreadable(recomputed))}. Loom changes "
        "nothing of this resource until they can be read: run the Loom version that wrote them, or "
        "remove them (kubectl patch --subresource=status)."
    )


def stalled_conditions(
    stored: Any, reason: str, message: str, generation: int | None, now: datetime
) -> list[Any] | None:
    """The stored conditions, left as they are stored (including any this version cannot read),
    with Stalled=True for `reason`; None when the stored ones already say exactly that."""
    items = list(stored) if isinstance(stored, list) else []
    old = next((c for c in items if isinstance(c, Mapping) and c.get("type") == STALLED), None)
    if old is not None and (old.get("status"), old.get("reason"), old.get("message")) == (
        "True",
        reason,
        message,
    ):
        return None
    since = old.get("lastTransitionTime") if old is not None and old.get("status") == "True" else None
    stalled = {
        "type": STALLED,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "observedGeneration": generation,
    }
    return [c for c in items if c is not old] + [stalled]
