"""What every child object Loom creates carries: the recommended labels and an owner reference."""

from __future__ import annotations

from typing import Any

from loom.api.common import API_VERSION, Resource

MANAGED_BY = "loom-operator"


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
