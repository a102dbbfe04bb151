"""The per-partition core every engine runs, and the driver's commit of the offline staging.

Rule: one partition's rows go transform -> validation -> offline staging (invisible files) and an Arrow IPC
spool of the validated output in TMPDIR -> online write from the spool, only once the whole partition
validated. Nothing becomes visible offline until the driver calls `commit_offline` once for the run.

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

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import pyarrow as pa
import pyarrow.dataset as ds

from loom.api.featurepipeline import FeaturePipeline, Window
from loom.features import transform
from loom.features.config import pipeline_name
from loom.features.errors import PipelineError
from loom.features.offline import OfflineStore
from loom.features.online import RedisWriter
from loom.features.summary import PartialSummary
from loom.features.validate import OutputCheck

PartitionInput: TypeAlias = "pa.Table | pa.RecordBatchReader | ds.Dataset"


@dataclass
class ComputedPartition:
    """A validated, staged partition: its partial summary and the spool its online rows wait in."""

    partial: PartialSummary
    spool: str | None

    def discard(self) -> None:
        if self.spool:
            with contextlib.suppress(OSError):
                os.unlink(self.spool)
            self.spool = None


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
    """The first half of `run_partition`: everything but the online write (kept in a spool file)."""
    spec = pipeline.spec
    counted = _Counted(data)
    check = OutputCheck(spec, window)
    store = OfflineStore(spec.sinks.offline, spec.source.timestampField) if spec.sinks.offline else None
    spool_path: str | None = None
    try:
        reader = transform.apply(spec.transform, counted.input())
        check.schema(reader.schema)
        spool = None
        if spec.sinks.online is not None:
            fd, spool_path = tempfile.mkstemp(prefix=f"loom-spool-{part}-", suffix=".arrow")
            os.close(fd)
            spool = pa.ipc.new_stream(spool_path, reader.schema)

        def good_batches() -> Iterator[pa.RecordBatch]:
            for batch in reader:
                if check.batch(batch):
                    if spool is not None:
                        spool.write_batch(batch)
                    yield batch

        if store is not None:
            staged = store.stage(run_id, part, reader.schema, good_batches())
        else:
            staged = []
            for _ in good_batches():
                pass
        if spool is not None:
            spool.close()
        check.finish()
    except BaseException:
        if spool_path:
            with contextlib.suppress(OSError):
                os.unlink(spool_path)
        if store is not None:
            with contextlib.suppress(OSError):
                store.fs.delete_dir(f"{store.staging(run_id)}/{part}")
        raise
    partial = PartialSummary(
        part=part,
        rows_in=counted.rows(),
        rows_out=check.rows,
        newest_micros=check.newest_micros,
        staged=staged,
    )
    return ComputedPartition(partial=partial, spool=spool_path)


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
    """Write the spooled, validated rows of the partitions into Redis; entities written."""
    if pipeline.spec.sinks.online is None:
        return 0
    own = writer is None
    writer = writer or open_writer(pipeline)
    assert writer is not None
    try:
        written = 0
        for c in computed:
            if c.spool:
                with pa.OSFile(c.spool) as f:
                    written += writer.write(iter(pa.ipc.open_stream(f)))
        return written
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
    offline = pipeline.spec.sinks.offline
    if offline is None:
        return 0
    store = OfflineStore(offline, pipeline.spec.source.timestampField)
    return store.commit(run_id, window, [s for p in partials for s in p.staged])


def abort_offline(pipeline: FeaturePipeline, run_id: str) -> None:
    """Driver side, when the run failed: remove its staging; the dataset stays as it was."""
    offline = pipeline.spec.sinks.offline
    if offline is not None:
        OfflineStore(offline, pipeline.spec.source.timestampField).abort(run_id)


class _Counted:
    """Counts the rows of a partition's input as the transform reads it."""

    def __init__(self, data: PartitionInput) -> None:
        self.data = data
        self.count = 0

    def input(self) -> PartitionInput:
        if isinstance(self.data, pa.RecordBatchReader):
            reader = self.data

            def batches() -> Iterator[pa.RecordBatch]:
                for batch in reader:
                    self.count += batch.num_rows
                    yield batch

            counted: PartitionInput = pa.RecordBatchReader.from_batches(reader.schema, batches())
            return counted
        return self.data

    def rows(self) -> int:
        if isinstance(self.data, pa.Table):
            return int(self.data.num_rows)
        if isinstance(self.data, ds.Dataset):
            return int(self.data.count_rows())
        return self.count


__all__ = [
    "ComputedPartition",
    "PipelineError",
    "abort_offline",
    "commit_offline",
    "compute_partition",
    "open_writer",
    "run_partition",
    "write_online",
]
