"""Engine adapters: Spark and Ray run a window's partitions through the same core as the local engine.

Rule: an adapter only distributes. It reads the files `source.open_window` resolved, with the same
`start <= ts < end` filter pushed down into the engine's Parquet reader, hash-partitions the rows by the
entity keys (so one partition holds every row of its entities: the transform contract), conforms each
partition's Arrow data to the source's schema (the engine's types -> pyarrow's, so a transform sees what it
sees on local) and hands it to `partition.run_partition` (transform, validation, offline staging, online
write). The driver then commits the offline staging once (`commit_offline`) or removes it (`abort_offline`).
What a row becomes is decided once, in the core.

Before an engine starts, the driver checks what local checks before reading data: the source (paths,
schema), the transform against an empty input of the source's schema (SQL that does not parse or bind,
output without the keys or the timestamp: 65) and that Redis answers (69). A partition's outcome travels
back as one JSON string (its PartialSummary, or its one-line error and exit code), so an executor's or an
actor's failure ends the run with the same reason and exit code as on local, never with an engine
traceback as the only message. pyspark and ray are imported inside `spark.py` / `ray.py` functions only.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.dataset as ds

from loom.api.featurepipeline import FeaturePipeline, Window
from loom.features import transform
from loom.features.errors import EX_DATAERR, EX_UNAVAILABLE, PipelineError, bad_input, internal, one_line
from loom.features.online import RedisWriter
from loom.features.partition import abort_offline, commit_offline, open_writer, run_partition
from loom.features.run import DEFAULT_PARTITION_ROWS, ENV_PARTITION_ROWS, new_run_id
from loom.features.source import WindowSource, open_window
from loom.features.summary import PartialSummary, Summary
from loom.features.validate import check_schema

RESULT = "loom_result"
MESSAGE_CHARS = 600


@dataclass
class Prepared:
    """A run checked and ready for an engine: the window's source, the run id, when it started."""

    pipeline: FeaturePipeline
    window: Window
    source: WindowSource
    run_id: str
    rows: int
    started: float = field(default_factory=time.monotonic)

    def partitions(self, parallelism: int) -> int:
        """Hash partitions: at least the engine's parallelism, at most LOOM_PARTITION_ROWS rows each."""
        limit = int(os.environ.get(ENV_PARTITION_ROWS, DEFAULT_PARTITION_ROWS))
        return max(1, parallelism, math.ceil(self.rows / max(1, limit)))


def prepare(pipeline: FeaturePipeline, window: Window) -> Prepared:
    """The driver's checks before an engine starts (the same failures, in the same order, as local)."""
    writer = open_writer(pipeline)  # Redis unreachable -> 69 before anything is read
    if writer is not None:
        writer.close()
    source = open_window(pipeline.spec.source, window)
    preflight(pipeline, source.schema)
    rows = (
        source.count_rows()
    )  # row-group statistics, mostly; an unreadable file fails here, before the engine
    return Prepared(pipeline=pipeline, window=window, source=source, run_id=new_run_id(window), rows=rows)


def preflight(pipeline: FeaturePipeline, schema: pa.Schema) -> None:
    """The transform on an empty input of the source's schema, as `compute_partition` starts it: SQL that
    does not parse or bind, an output without the keys or the timestamp, a column Redis cannot hold (65)."""
    import duckdb

    spec = pipeline.spec
    if spec.transform.python is not None:
        transform.load_python(spec.transform.python)  # the user's function on no rows could fail spuriously
        return
    con = transform.connect()
    try:
        relation = transform.output(con, spec.transform, schema.empty_table())
        try:
            output = relation.limit(0).to_arrow_table().schema
        except duckdb.Error as exc:
            raise transform.sql_error(exc) from exc
        check_schema(output, spec)
    finally:
        con.close()


def hive_base(source: WindowSource) -> str | None:
    """The directory whose `<col>=<value>` subdirectories are partition columns, when the source has them."""
    files = source.files
    if not isinstance(files, ds.FileSystemDataset) or not isinstance(files.partitioning, ds.HivePartitioning):
        return None
    path = source.path
    if "://" in path:
        import pyarrow.fs as pafs

        return str(pafs.FileSystem.from_uri(path)[1]).rstrip("/")
    return os.path.abspath(path).rstrip("/")


def window_bounds(prepared: Prepared) -> tuple[pa.Scalar, pa.Scalar]:
    """The window's bounds typed like the timestamp column (naive columns hold UTC), as in `open_window`."""
    ts = prepared.pipeline.spec.source.timestampField
    tz = prepared.source.schema.field(ts).type.tz

    def bound(value: datetime) -> pa.Scalar:
        return pa.scalar(value if tz else value.replace(tzinfo=None), type=pa.timestamp("us", tz=tz))

    return bound(prepared.window.start), bound(prepared.window.end)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """An engine's batch with the source's column order and types (e.g. Spark's longs back to ns timestamps,
    Ray's string partition values back to pyarrow's inferred ints)."""
    if batch.schema.equals(schema):
        return batch
    try:
        columns = [_cast(batch.column(f.name), f.type) for f in schema]
    except KeyError as exc:
        names = ", ".join(batch.schema.names)
        raise bad_input(f"the engine's input lacks source column {exc}; it has {names}") from exc
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _cast(column: pa.Array, to: pa.DataType) -> pa.Array:
    return column if column.type.equals(to) else column.cast(to)


class PartitionTask:
    """One partition on an executor or actor: conform its batches, `run_partition`, report as JSON.

    Picklable (it travels to executors and actors). `keep_writer`: hold one Redis client for the life of the
    process that calls it (a Ray actor); else `run_partition` opens one per partition (a Spark task).
    """

    def __init__(
        self, pipeline: FeaturePipeline, window: Window, run_id: str, schema: pa.Schema, *, keep_writer: bool
    ) -> None:
        self.pipeline = pipeline
        self.window = window
        self.run_id = run_id
        self.schema = schema
        self.keep_writer = keep_writer
        self._writer: RedisWriter | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_writer": None}

    def __call__(self, batches: Iterable[pa.RecordBatch], part: str, *, threads: int = 1) -> str:
        """The partition's result: PartialSummary JSON, or `{"error", "exit_code", "part"}`."""
        os.environ.setdefault(transform.ENV_THREADS, str(max(1, threads)))
        try:
            it = iter(batches)
            first = next((b for b in it if b.num_rows), None)
            if first is None:  # an empty hash partition: nothing to run (the preflight checked the SQL)
                return PartialSummary(part=part).to_json()
            reader = pa.RecordBatchReader.from_batches(self.schema, self._conformed(first, it))
            writer = self._open_writer() if self.keep_writer else None
            return run_partition(
                self.pipeline, self.window, reader, run_id=self.run_id, part=part, writer=writer
            ).to_json()
        except PipelineError as exc:
            return _error(exc, part)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            return _error(internal(exc), part)

    def _conformed(self, first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield conform(first, self.schema)
        for batch in rest:
            if batch.num_rows:
                yield conform(batch, self.schema)

    def _open_writer(self) -> RedisWriter | None:
        if self._writer is None:
            self._writer = open_writer(self.pipeline)
        return self._writer


def _error(exc: PipelineError, part: str) -> str:
    return json.dumps({"error": exc.message, "exit_code": exc.exit_code, "part": part})


def finish(prepared: Prepared, results: Sequence[str], *, engine: str, phases: dict[str, float]) -> Summary:
    """Driver side: every partition's result in; commit the offline staging once, or abort and raise."""
    pipeline, window, run_id = prepared.pipeline, prepared.window, prepared.run_id
    partials: list[PartialSummary] = []
    errors: list[dict[str, object]] = []
    for text in results:
        obj = json.loads(text)
        if "error" in obj:
            errors.append(obj)
        else:
            partials.append(PartialSummary(**obj))
    if errors:
        abort_offline(pipeline, run_id)
        raise _first_error(errors)
    computed = time.monotonic()
    try:
        files = commit_offline(pipeline, window, run_id, partials)
    except BaseException:
        abort_offline(pipeline, run_id)
        raise
    phases = {**phases, "offline_commit": time.monotonic() - computed}
    return Summary.of(
        partials,
        window=window,
        engine=engine,
        offline_files=files,
        seconds=time.monotonic() - prepared.started,
        phases=phases,
    )


def _first_error(errors: Sequence[dict[str, object]]) -> PipelineError:
    """The error the run ends with: bad input first (a retry cannot fix it), then unavailable, then others."""
    rank = {EX_DATAERR: 0, EX_UNAVAILABLE: 1}
    ordered = sorted(errors, key=lambda e: (rank.get(int(str(e["exit_code"])), 2), str(e["part"])))
    first = ordered[0]
    message = str(first["error"])
    if len(errors) > 1:
        message += f" ({len(errors)} partitions failed; this is the first)"
    return PipelineError(message, int(str(first["exit_code"])))


def engine_message(exc: BaseException) -> str:
    """An engine exception as one short line: the line that names the cause, not the stack trace."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [
        line
        for line in lines
        if ("Exception:" in line or "Error:" in line) and not line.startswith(("at ", "File ", "Traceback"))
    ]
    text = one_line(causes[-1] if causes else (lines[0] if lines else type(exc).__name__))
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


__all__ = [
    "RESULT",
    "PartitionTask",
    "Prepared",
    "conform",
    "engine_message",
    "finish",
    "hive_base",
    "preflight",
    "prepare",
    "window_bounds",
]
