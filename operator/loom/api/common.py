"""Shared API types: conditions, the pod template, and resource metadata for CRD generation."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
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
