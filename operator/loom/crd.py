"""Pydantic models -> CustomResourceDefinition objects (structural OpenAPI v3 schema, CEL, columns).

Pure: no I/O besides `write_crds`, which writes the generated YAML files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter

from loom.api import FeaturePipeline, InferenceService, TrainingJob
from loom.api.common import GROUP, VERSION, Resource

RESOURCES: tuple[type[Resource], ...] = (TrainingJob, InferenceService, FeaturePipeline)

_DROPPED_KEYS = {"title", "$defs", "discriminator"}


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def _structural(node: dict[str, Any], defs: dict[str, Any], *, keep_defaults: bool) -> dict[str, Any]:
    """Inline $refs, unwrap Optional, and rewrite JSON Schema 2020 into Kubernetes' OpenAPI v3 subset."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    for combinator in ("anyOf", "allOf"):
        if combinator in node:
            options = [o for o in node[combinator] if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(
                    f"cannot express {combinator} with {len(options)} options in a structural schema"
                )
            rest = {k: v for k, v in node.items() if k != combinator}
            node = {**_structural(options[0], defs, keep_defaults=keep_defaults), **rest}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "default" and not keep_defaults):
            continue
        if key == "properties":
            out[key] = {n: _structural(s, defs, keep_defaults=keep_defaults) for n, s in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs, keep_defaults=keep_defaults)
        elif key == "additionalProperties":
            if isinstance(value, dict) and value:
                out[key] = _structural(value, defs, keep_defaults=keep_defaults)
            elif value is True and not node.get("x-kubernetes-preserve-unknown-fields"):
                out["x-kubernetes-preserve-unknown-fields"] = True
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "default":
            if value is not None:
                out[key] = _strip_nulls(value)
        else:
            out[key] = value
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if out.get("default") == {}:
        out["default"] = _nested_defaults(out)
    return out


def _nested_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """The object an empty default expands to, so CEL rules see every defaulted field."""
    return {
        name: child["default"] for name, child in schema.get("properties", {}).items() if "default" in child
    }


def openapi_schema(model: type[Resource]) -> dict[str, Any]:
    """The openAPIV3Schema of one resource: spec with defaults and CEL rules, status without defaults."""
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
        },
    }
    for name, keep_defaults in (("spec", True), ("status", False)):
        annotation: Any = model.model_fields[name].annotation
        raw = TypeAdapter(annotation).json_schema(mode="validation")
        defs = raw.pop("$defs", {})
        schema["properties"][name] = _structural(raw, defs, keep_defaults=keep_defaults)
    # The one default in status: an object no controller has written yet reads observedGeneration 0, so
    # kstatus (Flux, kubectl-style waiters) sees generation 1 not observed, InProgress, rather than a
    # status-less object it would call Current, even while no operator runs.
    status = schema["properties"]["status"]
    status["default"] = {"observedGeneration": 0}
    status["properties"]["observedGeneration"]["default"] = 0
    return schema


def crd_for(model: type[Resource]) -> dict[str, Any]:
    info = model.info
    subresources: dict[str, Any] = {"status": {}}
    if info.scale is not None:
        subresources["scale"] = {
            "specReplicasPath": info.scale.spec_replicas_path,
            "statusReplicasPath": info.scale.status_replicas_path,
            "labelSelectorPath": info.scale.label_selector_path,
        }
    columns = []
    for column in info.printer_columns:
        entry: dict[str, Any] = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
        if column.priority:
            entry["priority"] = column.priority
        columns.append(entry)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "loom", "app.kubernetes.io/part-of": "loom"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.kind.lower(),
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema(model)},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def render(model: type[Resource]) -> str:
    header = "# Generated by `loom crds` from operator/loom/api; do not edit.\n"
    return header + yaml.safe_dump(crd_for(model), sort_keys=False, width=120)


def crd_path(directory: Path, model: type[Resource]) -> Path:
    return directory / f"{GROUP}_{model.info.plural}.yaml"


def write_crds(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in RESOURCES:
        path = crd_path(directory, model)
        path.write_text(render(model))
        written.append(path)
    return written
