"""The per-partition core every engine runs, and the driver's commit of the offline staging.

Rule: one partition's rows go transform -> one parallel DuckDB COPY into the offline staging (invisible
files; a TMPDIR scratch directory when there is no offline sink) -> validation of every row by a query over
those files -> online write read back from them, only once the whole partition validated. Nothing becomes
visible offline until the driver calls `commit_offline` once for the run.

Engines call it like this (the adapters in `engines/` are thin):
- local: the window is one partition (SQL; DuckDB streams the whole window), or hash buckets of the window
  by entity key (Python transforms on large windows); online writes wait for every bucket (`compute_partition`
  then `write_online`).
- Spark: `df.repartition(n, *entityKeys).mapInArrow(fn, "summary string")` where `fn(batches)` builds
  `pa.RecordBatchReader.from_batches(schema, batches)` (or a Table), calls
  `run_partition(pipeline, window, reader, run_id=run_id, part=f"p{TaskContext.get().partitionId():05d}")`
  and yields one row holding `partial.to_json()`; the driver collects the rows, then
  `commit_offline(pipeline, window, run_id, [PartialSummary.from_json(s) ...])` (`abort_offline` on failure).
- Ray: `ds.map_batches(Fn, batch_format="pyarrow", ...)` with a callable class whose `__call__(table)` calls
  `run_partition(..., part=uuid)`, returning a one-row table of `partial.to_json()`; the groupby by entity
  keys must come first (e.g. `ds.groupby(keys).map_groups(...)`, or a hash repartition) so that each
  call sees all rows of its entities. Then the same driver-side commit.
The offline staging must be on storage every executor and the driver share (an object store or shared
volume); the commit moves only the files the successful partitions list (`partial.staged`), so files left
by a failed or speculative task attempt are never committed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from loom.api.featurepipeline import FeaturePipeline, OfflineSink, Window
from loom.features import transform
from loom.features.config import pipeline_name
from loom.features.errors import PipelineError
from loom.features.offline import OfflineStore
from loom.features.online import RedisWriter
from loom.features.source import WindowSource
from loom.features.summary import PartialSummary
from loom.features.validate import check_rows, check_schema

PartitionInput: TypeAlias = "WindowSource | pa.Table | pa.RecordBatchReader | ds.Dataset"
ONLINE_BATCH_ROWS = 64 * 1024


@dataclass
class OnlineRows:
    """Where a partition's validated rows wait for the online write: its Parquet files, Hive paths."""

    fs: pafs.FileSystem
    base: str
    files: list[str]
    schema: pa.Schema
    partition_by: list[str]
    scratch: str | None = None

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The output rows (partition columns from the paths, the derived `date` left out), bounded."""
        if not self.files:
            return
        in_paths = [self.schema.field(c) for c in self.partition_by if self.schema.get_field_index(c) >= 0]
        dataset = ds.dataset(
            self.files,
            filesystem=self.fs,
            format="parquet",
            partitioning=ds.partitioning(pa.schema(in_paths), flavor="hive") if in_paths else None,
            partition_base_dir=self.base,
        )
        yield from dataset.to_batches(columns=self.schema.names, batch_size=ONLINE_BATCH_ROWS)

    def moved(self, final: dict[str, str], base: str) -> OnlineRows:
        """The same rows after the commit moved the staged files (`final`: staged path -> final path)."""
        return OnlineRows(
            fs=self.fs,
            base=base,
            files=[final[f] for f in self.files],
            schema=self.schema,
            partition_by=self.partition_by,
            scratch=self.scratch,
        )

    def discard(self) -> None:
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


@dataclass
class ComputedPartition:
    """A validated, staged partition: its partial summary and the rows its online write reads."""

    partial: PartialSummary
    online: OnlineRows | None

    def discard(self) -> None:
        if self.online is not None:
            self.online.discard()


def run_partition(
    pipeline: FeaturePipeline,
    window: Window,
    data: PartitionInput,
    *,
    run_id: str,
    part: str,
    writer: RedisWriter | None = None,
) -> PartialSummary:
    """Transform, validate, stage offline files and write online rows of ONE partition.

    `data`: the partition's input rows (a pa.Table, a RecordBatchReader, or a pyarrow Dataset already filtered
    to the window), all rows of each entity in it. `run_id`: the same for every partition of one run (it
    names the staging directory). `part`: unique per partition of the run, e.g. `p00042` (its staging
    subdirectory; a retried attempt of the same part replaces it). `writer`: a connected RedisWriter to reuse
    (a Ray actor keeps one), else one is opened for the call when the pipeline has an online sink.
    Raises PipelineError (bad input 65, unavailable 69); on failure this part's staged files are removed.
    Returns the partial summary; its `staged` list is what `commit_offline` moves in.
    """
    computed = compute_partition(pipeline, window, data, run_id=run_id, part=part)
    try:
        computed.partial.online_written = write_online(pipeline, [computed], writer=writer)
    finally:
        computed.discard()
    return computed.partial


def compute_partition(
    pipeline: FeaturePipeline, window: Window, data: PartitionInput, *, run_id: str, part: str
) -> ComputedPartition:
    """The first half of `run_partition`: everything but the online write (its rows stay in Parquet).

    One DuckDB: the input is the table `source`, the transform its relation; the output's schema is checked
    before anything runs, then one parallel COPY writes it (into the offline staging, or a TMPDIR scratch
    directory for an online-only pipeline), then one query over those files checks every row.
    """
    import duckdb

    spec = pipeline.spec
    offline = spec.sinks.offline
    store = OfflineStore(offline, spec.source.timestampField) if offline else None
    rows_in = _rows(data)
    con = transform.connect()
    target: str | None = None
    try:
        relation = transform.output(con, spec.transform, _counted(data, rows_in))
        try:
            schema = relation.limit(0).to_arrow_table().schema
        except duckdb.Error as exc:
            raise transform.sql_error(exc) from exc
        check_schema(schema, spec)
        target = store.target(run_id, part) if store else tempfile.mkdtemp(prefix=f"loom-spool-{part}-")
        layout = store or OfflineStore(OfflineSink(path=target, partitionBy=[]), spec.source.timestampField)
        try:
            files = layout.copy(con, "SELECT * FROM loom_output", schema, target)
            checked = check_rows(con, files, spec, window, schema)
        except duckdb.Error as exc:
            raise transform.sql_error(exc) from exc
        if checked.rows == 0:
            for f in files:
                os.unlink(f)
            files = []
        staged = store.publish(run_id, part, target, files) if store else []
    except BaseException:
        if target:
            shutil.rmtree(target, ignore_errors=True)
        if store is not None:
            store.remove_part(run_id, part)
        raise
    finally:
        con.close()
    online = None
    if spec.sinks.online is not None:
        local = store is None or not isinstance(store.fs, pafs.LocalFileSystem)
        online = OnlineRows(
            fs=pafs.LocalFileSystem(),
            base=target,
            files=files,
            schema=schema,
            partition_by=list(offline.partitionBy) if offline else [],
            scratch=target if local else None,
        )
    elif store is None or not isinstance(store.fs, pafs.LocalFileSystem):
        shutil.rmtree(target, ignore_errors=True)
    partial = PartialSummary(
        part=part,
        rows_in=rows_in.value,
        rows_out=checked.rows,
        newest_micros=checked.newest_micros,
        staged=staged,
    )
    return ComputedPartition(partial=partial, online=online)


def open_writer(pipeline: FeaturePipeline) -> RedisWriter | None:
    """A connected RedisWriter for the pipeline's online sink (69 if Redis cannot be reached), or None."""
    online = pipeline.spec.sinks.online
    if online is None:
        return None
    source = pipeline.spec.source
    writer = RedisWriter(online.redis, pipeline_name(pipeline), source.entityKeys, source.timestampField)
    try:
        writer.connect()
    except BaseException:
        writer.close()
        raise
    return writer


def write_online(
    pipeline: FeaturePipeline, computed: Sequence[ComputedPartition], *, writer: RedisWriter | None = None
) -> int:
    """Write the validated rows of the partitions into Redis; entities written."""
    if pipeline.spec.sinks.online is None:
        return 0
    own = writer is None
    writer = writer or open_writer(pipeline)
    assert writer is not None
    try:
        return sum(writer.write(c.online.batches()) for c in computed if c.online is not None)
    finally:
        if own:
            writer.close()


def commit_offline(
    pipeline: FeaturePipeline, window: Window, run_id: str, partials: Sequence[PartialSummary]
) -> int:
    """Driver side, once per run after every partition succeeded: move the staged files in (replacing the
    window's old rows, trimming overlapping files) at one commit point. Returns the files moved in; 0 and
    nothing done when the pipeline has no offline sink. Idempotent: an interrupted commit is finished by
    the next run on the dataset."""
    return len(commit_offline_files(pipeline, window, run_id, partials))


def commit_offline_files(
    pipeline: FeaturePipeline, window: Window, run_id: str, partials: Sequence[PartialSummary]
) -> dict[str, str]:
    """`commit_offline`, returning each staged path's final path."""
    offline = pipeline.spec.sinks.offline
    if offline is None:
        return {}
    store = OfflineStore(offline, pipeline.spec.source.timestampField)
    return store.commit(run_id, window, [s for p in partials for s in p.staged])


def abort_offline(pipeline: FeaturePipeline, run_id: str) -> None:
    """Driver side, when the run failed: remove its staging; the dataset stays as it was."""
    offline = pipeline.spec.sinks.offline
    if offline is not None:
        OfflineStore(offline, pipeline.spec.source.timestampField).abort(run_id)


@dataclass
class _Count:
    value: int = 0


def _rows(data: PartitionInput) -> _Count:
    """The input's row count: known now for a Table or a window, counted as it is read for a reader."""
    if isinstance(data, pa.Table):
        return _Count(int(data.num_rows))
    if isinstance(data, WindowSource):
        return _Count(data.count_rows())
    if isinstance(data, ds.Dataset):
        return _Count(int(data.count_rows()))
    return _Count()


def _counted(data: PartitionInput, count: _Count) -> PartitionInput:
    if not isinstance(data, pa.RecordBatchReader):
        return data
    reader = data

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            count.value += batch.num_rows
            yield batch

    counted: PartitionInput = pa.RecordBatchReader.from_batches(reader.schema, batches())
    return counted


__all__ = [
    "ComputedPartition",
    "PipelineError",
    "abort_offline",
    "commit_offline",
    "commit_offline_files",
    "compute_partition",
    "open_writer",
    "run_partition",
    "write_online",
]
