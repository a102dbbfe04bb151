"""Loading a FeaturePipeline and the window to run: from a file, stdin or the environment.

Rule: everything a run is told comes through here and is checked before any data is read; a spec the
runtime cannot run (no transform, a batch run without a Parquet source) is bad input (exit 65) with the
reason. The controller passes the pipeline to pods as JSON in env `LOOM_PIPELINE`; by hand it is `-f FILE`
(YAML or JSON; `-` is stdin).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from loom.api.featurepipeline import FeaturePipeline, Window
from loom.features.errors import bad_input

ENV_PIPELINE = "LOOM_PIPELINE"


def load_pipeline(path: str | None) -> FeaturePipeline:
    """The pipeline in file `path` (`-`: stdin; None: env LOOM_PIPELINE), validated against the API."""
    if path is None:
        text = os.environ.get(ENV_PIPELINE)
        if not text:
            raise bad_input(f"no pipeline: give -f FILE or set {ENV_PIPELINE} to the FeaturePipeline as JSON")
        where = f"${ENV_PIPELINE}"
    elif path == "-":
        text, where = sys.stdin.read(), "stdin"
    else:
        try:
            text, where = Path(path).read_text(), path
        except OSError as exc:
            raise bad_input(f"cannot read pipeline file {path}: {exc.strerror or exc}") from exc
    return parse_pipeline(text, where)


def parse_pipeline(text: str, where: str) -> FeaturePipeline:
    """A FeaturePipeline from YAML or JSON text (the first FeaturePipeline document of a YAML stream)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise bad_input(f"pipeline {where} is not YAML or JSON: {exc}") from exc
    objs = [d for d in docs if isinstance(d, dict) and d.get("kind", "FeaturePipeline") == "FeaturePipeline"]
    if not objs:
        raise bad_input(f"pipeline {where} holds no FeaturePipeline")
    try:
        pipeline = FeaturePipeline.model_validate(_without_status(objs[0]))
    except ValidationError as exc:
        raise bad_input(f"pipeline {where} is not a valid FeaturePipeline: {_errors(exc)}") from exc
    check_runnable(pipeline, where)
    return pipeline


def check_runnable(pipeline: FeaturePipeline, where: str = "the pipeline") -> None:
    """The rules the API server enforces with CEL, checked again for a pipeline given by hand."""
    spec = pipeline.spec
    if (spec.transform.sql is None) == (spec.transform.python is None):
        raise bad_input(f"{where}: transform must set exactly one of sql, python")
    if spec.sinks.offline is None and spec.sinks.online is None:
        raise bad_input(f"{where}: sinks needs offline or online")
    if not pipeline_name(pipeline):
        raise bad_input(f"{where}: metadata.name is required (it names the `_ts:<name>` field in Redis)")


def check_batch(pipeline: FeaturePipeline) -> None:
    if pipeline.spec.source.parquet is None:
        raise bad_input(
            f"pipeline {pipeline_name(pipeline)}: a batch run reads source.parquet; this pipeline has none "
            "(a redisStream source is read by `loom features stream`)"
        )


def pipeline_name(pipeline: FeaturePipeline) -> str:
    return str(pipeline.metadata.get("name") or "")


def parse_time(text: str) -> datetime:
    """An RFC 3339 time ("2026-11-01T00:00:00Z", "+02:00" offsets too) as an aware UTC datetime."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise bad_input(f"{text!r} is not an RFC 3339 time, e.g. 2026-11-01T00:00:00Z") from exc
    if value.tzinfo is None:
        raise bad_input(
            f"{text!r} has no time zone: RFC 3339 needs Z or an offset, e.g. 2026-11-01T00:00:00Z"
        )
    return value.astimezone(UTC)


def make_window(start: str | datetime, end: str | datetime) -> Window:
    """The window [start, end): aware UTC, start before end, whole seconds (they name the offline files)."""
    s = parse_time(start) if isinstance(start, str) else start.astimezone(UTC)
    e = parse_time(end) if isinstance(end, str) else end.astimezone(UTC)
    if s >= e:
        raise bad_input(f"window start {rfc3339(s)} is not before its end {rfc3339(e)}")
    if s.microsecond or e.microsecond:
        raise bad_input(f"window [{s.isoformat()}, {e.isoformat()}) must start and end on whole seconds")
    return Window(start=s, end=e)


def rfc3339(value: datetime) -> str:
    """UTC, `Z`, fraction only where there is one: 2026-11-01T00:00:00Z."""
    text = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return text


def _without_status(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "status"}


def _errors(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]]
    more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(parts) + more


def pipeline_json(pipeline: FeaturePipeline) -> str:
    """The pipeline as the JSON the controller puts into LOOM_PIPELINE."""
    return json.dumps(pipeline.model_dump(mode="json", exclude_none=True, exclude={"status"}))
