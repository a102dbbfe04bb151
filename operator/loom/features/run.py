"""One batch window of a FeaturePipeline on the local engine, start to finish.

Rule: source -> transform -> validated output staged (offline files under the dataset's staging, online rows
in an Arrow spool in TMPDIR); only when the whole output validated: the offline commit, then the online
write. Bad input writes nothing anywhere. Redis is reached before any data is read, so an unreachable Redis
fails fast (69). SQL runs as one streaming DuckDB query over the window; a Python transform gets the
window as one Table when it is small, else hash buckets of it by entity key (the transform contract makes
both give the same rows). Other engines live in `loom.features.engines.<name>` with the same
`run_window(pipeline, window) -> Summary`.
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow.dataset as ds

from loom.api.featurepipeline import FeaturePipeline, Window
from loom.features import transform
from loom.features.config import check_batch
from loom.features.errors import bad_input
from loom.features.offline import OfflineStore
from loom.features.partition import (
    ComputedPartition,
    abort_offline,
    commit_offline_files,
    compute_partition,
    open_writer,
    write_online,
)
from loom.features.source import WindowSource, open_window
from loom.features.summary import Summary

ENGINES = ("local", "spark", "ray")
ENV_PARTITION_ROWS = "LOOM_PARTITION_ROWS"
DEFAULT_PARTITION_ROWS = 1_000_000
BUCKET = "loom_bucket"


def run_window(pipeline: FeaturePipeline, window: Window, *, engine: str = "local") -> Summary:
    """Compute `window` and write the sinks; raises PipelineError (exit code inside) on failure."""
    check_batch(pipeline)
    if engine != "local":
        summary: Summary = _engine(engine).run_window(pipeline, window)
        return summary
    started = time.monotonic()
    run_id = new_run_id(window)
    writer = open_writer(pipeline)
    computed: list[ComputedPartition] = []
    try:
        source = open_window(pipeline.spec.source, window)
        for part, data in partitions(pipeline, source):
            computed.append(compute_partition(pipeline, window, data, run_id=run_id, part=part))
        phases = {"compute": time.monotonic() - started}
        final = commit_offline_files(pipeline, window, run_id, [c.partial for c in computed])
        files = len(final)
        _follow(computed, final, pipeline, run_id)
        phases["offline_commit"] = time.monotonic() - started - phases["compute"]
        online = write_online(pipeline, computed, writer=writer)
        phases["online"] = time.monotonic() - started - phases["compute"] - phases["offline_commit"]
    except BaseException:
        abort_offline(pipeline, run_id)
        raise
    finally:
        for c in computed:
            c.discard()
        if writer is not None:
            writer.close()
    partials = [c.partial for c in computed]
    if partials:
        partials[0].online_written = online
    return Summary.of(
        partials,
        window=window,
        engine=engine,
        offline_files=files,
        seconds=time.monotonic() - started,
        phases=phases,
    )


def _follow(
    computed: list[ComputedPartition], final: dict[str, str], pipeline: FeaturePipeline, run_id: str
) -> None:
    """Point the online reads at where the commit moved the staged files."""
    offline = pipeline.spec.sinks.offline
    if offline is None:
        return
    store = OfflineStore(offline, pipeline.spec.source.timestampField)
    moved = {f"{store.staging(run_id)}/{src}": dst for src, dst in final.items()}
    for c in computed:
        if c.online is not None and c.online.scratch is None:
            c.online = c.online.moved(moved, store.root)


def new_run_id(window: Window) -> str:
    return f"{window.start:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:10]}"


def partitions(pipeline: FeaturePipeline, source: WindowSource) -> Iterator[tuple[str, Any]]:
    """The local engine's partitions: the whole window (SQL, or a small window), or entity-key buckets."""
    if pipeline.spec.transform.sql is not None:
        yield "p00000", source
        return
    limit = int(os.environ.get(ENV_PARTITION_ROWS, DEFAULT_PARTITION_ROWS))
    buckets = math.ceil(source.count_rows() / limit)
    if buckets <= 1:
        yield "p00000", source
        return
    yield from _buckets(pipeline, source, buckets)


def _buckets(pipeline: FeaturePipeline, source: WindowSource, buckets: int) -> Iterator[tuple[str, Any]]:
    """Hash-partition the window by entity key into Parquet buckets in TMPDIR (DuckDB, bounded memory)."""
    import duckdb

    tmp = tempfile.mkdtemp(prefix="loom-buckets-")
    try:
        keys = ", ".join(_quote(k) for k in pipeline.spec.source.entityKeys)
        con = transform.connect()
        transform.register_source(con, source)
        try:
            con.execute(
                f"COPY (SELECT *, hash({keys}) % {buckets} AS {BUCKET} FROM source) "
                f"TO '{tmp}' (FORMAT parquet, PARTITION_BY ({BUCKET}))"
            )
        except duckdb.Error as exc:
            raise transform.sql_error(exc) from exc
        finally:
            con.close()
        for i in range(buckets):
            path = os.path.join(tmp, f"{BUCKET}={i}")
            if os.path.isdir(path):
                yield f"p{i:05d}", ds.dataset(path, format="parquet").to_table()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _engine(name: str) -> Any:
    if name not in ENGINES:
        raise bad_input(f"engine {name!r} is not one of {', '.join(ENGINES)}")
    try:
        return importlib.import_module(f"loom.features.engines.{name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("loom.features.engines"):
            raise bad_input(f"engine {name} is not built yet in this runtime; use --engine local") from exc
        raise bad_input(f"engine {name} needs {exc.name}, which is not installed") from exc
