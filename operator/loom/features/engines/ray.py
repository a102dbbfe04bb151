"""`loom features run --engine ray`: one window under Ray Data.

`ray.init()` joins the cluster named by RAY_ADDRESS (a RayJob's entrypoint runs with it set), else starts
a local Ray. Ray Data reads the files `open_window` resolved (hive partition columns from the source
directory) with the window filter pushed into its Parquet read; `repartition(n, keys=entityKeys)` hash-
shuffles the rows so each output block holds every row of its entities (Ray emits one unsplit block per
partition, as its own `map_groups` relies on), and `map_batches(batch_size=None)` hands each block whole to
an actor (`_Actor`, one Redis client per actor) that runs the core on it and returns one JSON row. The driver
commits the offline staging once. The offline path must be storage that the driver and every worker share.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

import pyarrow as pa

from loom.api.featurepipeline import FeaturePipeline, Window
from loom.features.engines import (
    RESULT,
    PartitionTask,
    Prepared,
    engine_message,
    finish,
    hive_base,
    prepare,
    window_bounds,
)
from loom.features.errors import PipelineError, bad_input, one_line, unavailable
from loom.features.summary import Summary

ENGINE = "ray"
ACTOR_CPUS = 1


def run_window(pipeline: FeaturePipeline, window: Window) -> Summary:
    """Compute `window` on Ray Data; raises PipelineError (65, 69, 70) with a one-line reason."""
    prepared = prepare(pipeline, window)
    owned = connect()
    try:
        results = _compute(prepared)
        compute = time.monotonic() - prepared.started
        return finish(prepared, results, engine=ENGINE, phases={"compute": compute})
    finally:
        if owned:
            import ray

            ray.shutdown()


def connect() -> bool:
    """Join RAY_ADDRESS's cluster, or start a local Ray; True when this run started the connection."""
    try:
        import ray
    except ImportError as exc:
        raise bad_input(
            f"engine ray needs ray[data] ({exc.name} is not installed): pip install 'loom-operator[engines]'"
        ) from exc
    if ray.is_initialized():
        return False
    try:
        ray.init(logging_level=logging.WARNING, include_dashboard=False)
    except Exception as exc:
        where = os.environ.get("RAY_ADDRESS") or "a local Ray"
        raise unavailable(f"ray: cannot connect to {where}: {engine_message(exc)}") from exc
    return True


class _Actor:
    """A map_batches actor: one Redis client for its life, the core on each whole block."""

    def __init__(self, task: PartitionTask) -> None:
        self.task = task

    def __call__(self, table: pa.Table) -> pa.Table:
        part = f"p{uuid.uuid4().hex[:12]}"
        return pa.table({RESULT: [self.task(table.to_batches(), part, threads=ACTOR_CPUS)]})


def _compute(prepared: Prepared) -> list[str]:
    import ray
    import ray.data

    keys = list(prepared.pipeline.spec.source.entityKeys)
    task = PartitionTask(
        prepared.pipeline, prepared.window, prepared.run_id, prepared.source.schema, keep_writer=True
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    cpus = max(1, int(resources.get("CPU", 1)))
    try:
        blocks = read(prepared).repartition(prepared.partitions(cpus), keys=keys)
        results = blocks.map_batches(
            _Actor,
            batch_size=None,
            batch_format="pyarrow",
            fn_constructor_args=(task,),
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cpus - 1)),
            num_cpus=ACTOR_CPUS,
        )
        return [str(row[RESULT]) for row in results.take_all()]
    except PipelineError:
        raise
    except Exception as exc:
        raise _failure(prepared, exc) from exc


def read(prepared: Prepared) -> Any:
    """The window's rows as a Ray Dataset, the time filter pushed into the Parquet read."""
    import ray.data
    from ray.data.datasource.partitioning import Partitioning, PartitionStyle
    from ray.data.expressions import col, lit

    source = prepared.source
    base = hive_base(source)
    ds = ray.data.read_parquet(
        list(source.files.files),
        filesystem=source.files.filesystem,
        partitioning=Partitioning(PartitionStyle.HIVE, base_dir=base) if base is not None else None,
    )
    ts = prepared.pipeline.spec.source.timestampField
    start, end = window_bounds(prepared)
    return ds.filter(expr=(col(ts) >= lit(start)) & (col(ts) < lit(end)))


def _failure(prepared: Prepared, exc: BaseException) -> PipelineError:
    """A Ray failure as the runtime's error: a read's Arrow error is bad input, the rest unavailable."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, PipelineError):
            return cause
        if isinstance(cause, pa.ArrowInvalid | pa.ArrowTypeError | pa.ArrowNotImplementedError):
            return bad_input(f"source {prepared.source.path}: {one_line(str(cause))}")
        cause = getattr(cause, "cause", None) or cause.__cause__
    return unavailable(f"ray job failed: {engine_message(exc)}")
