"""Checks of the transform's output before anything becomes visible in a sink.

Rule: the output must hold the entity keys and the timestamp field (a timestamp), no null in them, and
every timestamp inside the run's window [start, end) (the offline store's files own disjoint event-time
ranges, so a row outside its window would escape the next re-run's replacement). Every partitionBy column
other than the derived `date` must be an output column, and with an online sink every feature column must
have a text form. The schema is checked before anything runs; the rows are checked by one DuckDB query
over the staged (still invisible) files, reading only the key and timestamp columns. The error names the
column, the count of bad rows in the whole output and one example row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from loom.api.featurepipeline import FeaturePipelineSpec, Window
from loom.features.errors import bad_input, example_row

DATE = "date"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def check_schema(schema: pa.Schema, spec: FeaturePipelineSpec) -> None:
    """The output's columns: keys, timestamp (a timestamp), partition columns, online text forms."""
    source = spec.source
    names = ", ".join(schema.names)
    for column in [*source.entityKeys, source.timestampField]:
        if schema.get_field_index(column) < 0:
            raise bad_input(f"transform output has no column {column}; its columns: {names}")
    ts_type = schema.field(source.timestampField).type
    if not pa.types.is_timestamp(ts_type):
        raise bad_input(
            f"transform output column {source.timestampField} is {ts_type}, not a timestamp "
            "(for aggregates use e.g. max(ts) AS ts)"
        )
    offline = spec.sinks.offline
    for column in offline.partitionBy if offline else []:
        if column != DATE and schema.get_field_index(column) < 0:
            raise bad_input(
                f"partitionBy column {column} is not a transform output column; its columns: {names}"
            )
    if spec.sinks.online is not None:
        from loom.features.online import check_online

        check_online(spec.sinks.online.redis, schema, source.entityKeys, source.timestampField)


@dataclass(frozen=True)
class Checked:
    rows: int
    newest_micros: int | None


def check_rows(
    con: Any, files: list[str], spec: FeaturePipelineSpec, window: Window, schema: pa.Schema
) -> Checked:
    """Count the output's bad rows in its Parquet files (hive paths included); bad input if any."""
    if not files:
        return Checked(rows=0, newest_micros=None)
    source = spec.source
    ts = _ident(source.timestampField)
    aware = schema.field(source.timestampField).type.tz is not None
    lo, hi = (_time_literal(t, aware) for t in (window.start, window.end))
    conditions = {f"null {k}": f"{_ident(k)} IS NULL" for k in [*source.entityKeys, source.timestampField]}
    conditions[f"{source.timestampField} outside the window"] = f"({ts} < {lo} OR {ts} >= {hi})"
    scan = "read_parquet([" + ", ".join(_literal(f) for f in files) + "], hive_partitioning = true)"
    counts = ", ".join(f"count(*) FILTER (WHERE {c})" for c in conditions.values())
    row = con.sql(f"SELECT count(*), epoch_us(max({ts})), {counts} FROM {scan}").fetchall()[0]
    rows, newest, bad = int(row[0]), row[1], [int(n) for n in row[2:]]
    problems = []
    for (what, condition), n in zip(conditions.items(), bad, strict=True):
        if n:
            example = con.sql(f"SELECT * FROM {scan} WHERE {condition} LIMIT 1").to_arrow_table().to_pylist()
            problems.append(
                f"{n} {'row' if n == 1 else 'rows'} of the output with {what}, e.g. {example_row(example[0])}"
            )
    if problems:
        text = "; ".join(problems)
        window_text = f"outside the window [{window.start.isoformat()}, {window.end.isoformat()})"
        raise bad_input(text.replace("outside the window", window_text))
    return Checked(rows=rows, newest_micros=None if newest is None else int(newest))


def to_micros(value: datetime) -> int:
    delta = value.astimezone(UTC) - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _time_literal(value: datetime, aware: bool) -> str:
    text = f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}"
    return f"TIMESTAMPTZ '{text}+00'" if aware else f"TIMESTAMP '{text}'"
