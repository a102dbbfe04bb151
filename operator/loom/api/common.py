"""Shared API types: conditions, the pod template, and resource metadata for CRD generation."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.config import JsonDict

GROUP = "loom.ml"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"


class KubeModel(BaseModel):
    """Base of every API object: camelCase field names as in Kubernetes, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=True)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(KubeModel):
    """A metav1.Condition: the latest observation of one aspect of the resource's state."""

    type: str = Field(description="Type of condition in CamelCase, e.g. Running.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="Machine-readable CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable details about the last transition.")
    lastTransitionTime: datetime | None = Field(
        default=None, description="When the condition last changed status."
    )
    observedGeneration: int | None = Field(
        default=None, description="The .metadata.generation the condition was set from."
    )


_OPEN_OBJECT: JsonDict = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


_CONTAINERS: JsonDict = {"type": "array", "minItems": 1, "items": _OPEN_OBJECT}
_POD_SPEC: JsonDict = {**_OPEN_OBJECT, "required": ["containers"], "properties": {"containers": _CONTAINERS}}
_POD_TEMPLATE: JsonDict = {
    "type": "object",
    "required": ["spec"],
    "properties": {"metadata": _OPEN_OBJECT, "spec": _POD_SPEC},
}


def pod_template_field(description: str) -> Any:
    """A PodTemplateSpec: containers required here; the rest is validated as a Pod when Loom creates it."""
    return Field(description=description, json_schema_extra=_POD_TEMPLATE)


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""


@dataclass(frozen=True)
class ScaleSubresource:
    spec_replicas_path: str
    status_replicas_path: str
    label_selector_path: str


@dataclass(frozen=True)
class ResourceInfo:
    """What a CRD needs beyond the schema: names, printer columns, subresources."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    scale: ScaleSubresource | None = None
    categories: tuple[str, ...] = field(default=("loom",))


class Resource(KubeModel):
    """A namespaced custom resource: apiVersion, kind, metadata, spec, status."""

    info: ClassVar[ResourceInfo]

    apiVersion: str = API_VERSION
    kind: str
    metadata: dict[str, Any] = Field(default_factory=dict)


def cel(*rules: JsonDict) -> ConfigDict:
    """Model config carrying CEL rules (x-kubernetes-validations) the API server enforces."""
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": list(rules)})


M = TypeVar("M", bound=BaseModel)
_MAX_REPAIRS = 1000


@dataclass(frozen=True)
class Lenient(Generic[M]):
    """What `parse_lenient` made of stored data: the model of everything that parsed, the paths of
    unknown fields it ignored, and "path: why" of the values it could not read and left out."""

    value: M
    ignored: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()

    def unreadable(self, recomputed: frozenset[str] = frozenset()) -> tuple[str, ...]:
        """The dropped values that matter: those outside the fields in `recomputed` (paths such as
        "phase" or "revisions.items", rebuilt from observation on every reconcile, so losing them
        loses nothing)."""
        return tuple(d for d in self.dropped if not _under(d.split(":", 1)[0], recomputed))


def _under(path: str, prefixes: frozenset[str]) -> bool:
    return any(path == p or path.startswith((f"{p}.", f"{p}[")) for p in prefixes)


def describe_errors(error: ValidationError, limit: int = 3) -> str:
    """`path: message` of the first errors of a validation, for a condition message."""
    items = [f"{_path(tuple(e['loc']))}: {e['msg']}" for e in error.errors()]
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _remove(data: Any, loc: tuple[int | str, ...], *, whole_item: bool) -> tuple[int | str, ...]:
    """Delete what `loc` points at (its longest existing prefix); with `whole_item`, the innermost
    list item on the way instead (a condition missing a required field goes as a whole)."""
    trail: list[tuple[Any, int | str]] = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (isinstance(node, list) and isinstance(part, int)):
            if isinstance(node, list) and not 0 <= int(part) < len(node):
                break
            trail.append((node, part))
            node = node[part]  # type: ignore[index]
        else:
            break
    if not trail:
        raise ValueError(f"cannot repair {loc}")
    if whole_item or len(trail) < len(loc):
        items = [i for i, (parent, _) in enumerate(trail) if isinstance(parent, list)]
        cut = items[-1] if items else len(trail) - 1
        trail = trail[: cut + 1]
    parent, key = trail[-1]
    del parent[key]
    return tuple(k for _, k in trail)


def parse_lenient(model: type[M], data: Mapping[str, Any] | None) -> Lenient[M]:
    """Validate stored data (e.g. a status another version of Loom wrote) keeping what parses:
    unknown fields are ignored, values that do not validate (a new enum value, a wrong type) are
    left out one by one, a list item missing a required field goes as a whole; never raises."""
    work: Any = copy.deepcopy(dict(data or {}))
    ignored: list[str] = []
    dropped: list[str] = []
    for _ in range(_MAX_REPAIRS):
        try:
            return Lenient(model.model_validate(work), tuple(ignored), tuple(dropped))
        except ValidationError as e:
            error = e.errors()[0]
            loc = tuple(error["loc"])
            try:
                if error["type"] == "extra_forbidden":
                    ignored.append(_path(_remove(work, loc, whole_item=False)))
                else:
                    removed = _remove(work, loc, whole_item=error["type"] == "missing")
                    dropped.append(f"{_path(removed)}: {error['msg']}")
            except (ValueError, KeyError, IndexError, TypeError):
                break
    return Lenient(model.model_validate({}), tuple(ignored), (*dropped, "(everything): unreadable"))
