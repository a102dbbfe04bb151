"""`loom features run --engine spark`: one window under PySpark.

The SparkSession comes from the environment: in a SparkApplication's driver, spark-submit's master and
configuration; by hand, PySpark's default (`local[*]`, or whatever PYSPARK_SUBMIT_ARGS and spark-defaults
say). Spark reads the files `open_window` resolved (hive partition columns from the source directory) with
the window filter pushed down into its Parquet scan, `repartition(n, *entityKeys)` puts every entity's rows
in one partition, and `mapInArrow` runs the core on each partition (`engines.PartitionTask`), returning one
JSON row per partition; the driver commits the offline staging once. The session is set to UTC and reads
nanosecond timestamps as longs (`spark.sql.legacy.parquet.nanosAsLong`), which `conform` turns back into the
source's timestamps. The offline path must be storage that the driver and every executor share.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from loom.api.featurepipeline import FeaturePipeline, Window
from loom.features.engines import RESULT, PartitionTask, Prepared, engine_message, finish, hive_base, prepare
from loom.features.errors import PipelineError, bad_input, unavailable
from loom.features.summary import Summary
from loom.features.transform import BATCH_ROWS

ENGINE = "spark"
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.legacy.parquet.nanosAsLong": "true",
    "spark.sql.parquet.inferTimestampNTZ.enabled": "true",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",  # strings; conform casts like pyarrow
    "spark.sql.execution.arrow.maxRecordsPerBatch": str(BATCH_ROWS),
}
SCHEMES = {"local": "file://", "s3": "s3a://", "gcs": "gs://"}


def run_window(pipeline: FeaturePipeline, window: Window) -> Summary:
    """Compute `window` on Spark; raises PipelineError (65, 69, 70) with a one-line reason."""
    prepared = prepare(pipeline, window)
    spark, owned = session(pipeline)
    try:
        with _conf(spark):
            results = _compute(spark, prepared)
        compute = time.monotonic() - prepared.started
        return finish(prepared, results, engine=ENGINE, phases={"compute": compute})
    finally:
        if owned:
            spark.stop()


def session(pipeline: FeaturePipeline) -> tuple[Any, bool]:
    """The environment's SparkSession (and whether this run started it, so it stops it)."""
    try:
        from pyspark import SparkContext
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise bad_input(
            f"engine spark needs pyspark ({exc.name} is not installed): pip install 'loom-operator[engines]'"
        ) from exc
    existed = SparkContext._active_spark_context is not None
    if not existed and "PYSPARK_GATEWAY_PORT" not in os.environ:
        # By hand (not under spark-submit): executors run this interpreter, which has Loom installed.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    name = str(pipeline.metadata.get("name") or "pipeline")
    try:
        spark = SparkSession.builder.appName(f"loom-features-{name}").getOrCreate()
    except Exception as exc:
        raise unavailable(f"spark: cannot start a session: {engine_message(exc)}") from exc
    return spark, not existed


@contextlib.contextmanager
def _conf(spark: Any) -> Iterator[None]:
    """The session settings a run needs, put back afterwards (the session may be the caller's)."""
    before = {k: spark.conf.get(k, None) for k in SESSION_CONF}
    for k, v in SESSION_CONF.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def _compute(spark: Any, prepared: Prepared) -> list[str]:
    """The partitions' results (JSON strings), one per hash partition."""
    from pyspark import TaskContext
    from pyspark.errors import AnalysisException

    spec = prepared.pipeline.spec.source
    task = PartitionTask(
        prepared.pipeline, prepared.window, prepared.run_id, prepared.source.schema, keep_writer=False
    )

    def partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ctx = TaskContext.get()
        assert ctx is not None  # always set inside a task
        part = f"p{ctx.partitionId():05d}a{ctx.attemptNumber()}"
        yield pa.RecordBatch.from_pydict({RESULT: [task(batches, part, threads=ctx.cpus())]})

    try:
        df = read(spark, prepared)
        n = prepared.partitions(spark.sparkContext.defaultParallelism)
        rows = df.repartition(n, *[_col(k) for k in spec.entityKeys]).mapInArrow(
            partition, f"{RESULT} string"
        )
        return [str(r[0]) for r in rows.collect()]
    except PipelineError:
        raise
    except AnalysisException as exc:
        raise bad_input(f"spark cannot read source {prepared.source.path}: {engine_message(exc)}") from exc
    except Exception as exc:
        raise unavailable(f"spark job failed: {engine_message(exc)}") from exc


def read(spark: Any, prepared: Prepared) -> Any:
    """The window's rows as a DataFrame of the source's columns, the time filter pushed into the scan."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, TimestampNTZType

    source, window = prepared.source, prepared.window
    ts = prepared.pipeline.spec.source.timestampField
    fs = source.files.filesystem
    scheme = SCHEMES.get(fs.type_name, "")
    paths = [scheme + p for p in source.files.files]
    reader = spark.read
    base = hive_base(source)
    if base is not None:
        reader = reader.option("basePath", scheme + base)
    df = reader.parquet(*paths)
    column = F.col(_col(ts))
    kind = df.schema[ts].dataType
    if isinstance(kind, LongType):  # nanoseconds, read as longs
        start, end = (F.lit(_epoch_nanos(t)) for t in (window.start, window.end))
    elif isinstance(kind, TimestampNTZType):  # naive timestamps hold UTC
        start, end = (F.expr(f"TIMESTAMP_NTZ'{t:%Y-%m-%d %H:%M:%S}'") for t in (window.start, window.end))
    else:
        start, end = F.lit(window.start), F.lit(window.end)
    return df.where((column >= start) & (column < end)).select(*[_col(n) for n in source.schema.names])


def _epoch_nanos(value: Any) -> int:
    from loom.features.validate import to_micros

    return to_micros(value) * 1000


def _col(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
