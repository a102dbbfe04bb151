"""Checks of the transform's output before anything reaches a sink.

Rule: the output must hold the entity keys and the timestamp field (a timestamp), no null in them, and
every timestamp inside the run's window [start, end) (the offline store's files own disjoint event-time
ranges, so a row outside its window would escape the next re-run's replacement). Every partitionBy column
other than the derived `date` must be an output column, and with an online sink every feature column must
have a text form. A bad batch is counted, not thrown at once: the error names the column, the count of
bad rows in the whole output and one example row. Pure: batches in, a verdict out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from loom.api.featurepipeline import FeaturePipelineSpec, Window
from loom.features.errors import bad_input, example_row

DATE = "date"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Problem:
    what: str
    rows: int = 0
    example: str = ""


@dataclass
class OutputCheck:
    """Validates the output batch by batch; `finish()` raises the first problem with its total count."""

    spec: FeaturePipelineSpec
    window: Window
    rows: int = 0
    newest_micros: int | None = None
    problems: dict[str, Problem] = field(default_factory=dict)
    _schema: pa.Schema | None = None

    def schema(self, schema: pa.Schema) -> None:
        """The output's columns: keys, timestamp (a timestamp), partition columns, online text forms."""
        if self._schema is not None and self._schema.equals(schema):
            return
        source = self.spec.source
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
        offline = self.spec.sinks.offline
        for column in offline.partitionBy if offline else []:
            if column != DATE and schema.get_field_index(column) < 0:
                raise bad_input(
                    f"partitionBy column {column} is not a transform output column; its columns: {names}"
                )
        if self.spec.sinks.online is not None:
            from loom.features.online import check_online

            check_online(self.spec.sinks.online.redis, schema, source.entityKeys, source.timestampField)
        self._schema = schema

    def batch(self, batch: pa.RecordBatch) -> bool:
        """Check one batch; True when it is good (and nothing bad was seen before)."""
        self.schema(batch.schema)
        self.rows += batch.num_rows
        if batch.num_rows == 0:
            return not self.problems
        source = self.spec.source
        for column in [*source.entityKeys, source.timestampField]:
            self._count(batch, pc.is_null(batch[column]), f"null {column}")
        ts = batch[source.timestampField]
        micros = pc.cast(ts, pa.timestamp("us", tz=ts.type.tz), safe=False).cast(pa.int64())
        lo, hi = to_micros(self.window.start), to_micros(self.window.end)
        outside = pc.or_kleene(pc.less(micros, lo), pc.greater_equal(micros, hi))
        self._count(batch, outside, f"{source.timestampField} outside the window")
        newest = pc.max(micros).as_py()
        if newest is not None and (self.newest_micros is None or newest > self.newest_micros):
            self.newest_micros = newest
        return not self.problems

    def finish(self) -> None:
        if not self.problems:
            return
        parts = [
            f"{p.rows} {'row' if p.rows == 1 else 'rows'} of the output with {p.what}, e.g. {p.example}"
            for p in self.problems.values()
        ]
        window = f"[{self.window.start.isoformat()}, {self.window.end.isoformat()})"
        raise bad_input("; ".join(parts).replace("outside the window", f"outside the window {window}"))

    @property
    def newest(self) -> datetime | None:
        return None if self.newest_micros is None else from_micros(self.newest_micros)

    def _count(self, batch: pa.RecordBatch, mask: pa.Array, what: str) -> None:
        bad = int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0)
        if not bad:
            return
        problem = self.problems.setdefault(what, Problem(what))
        if not problem.example:
            problem.example = example_row(batch.filter(pc.fill_null(mask, False)).slice(0, 1).to_pylist()[0])
        problem.rows += bad


def to_micros(value: datetime) -> int:
    delta = value.astimezone(UTC) - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)
