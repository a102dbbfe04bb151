"""FeaturePipeline: batch or streaming feature generation into offline and online stores."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import Field

from loom.api.common import Condition, KubeModel, PrinterColumn, Resource, ResourceInfo, cel

CRON = r"^(@(yearly|annually|monthly|weekly|daily|hourly)|(\S+\s+){4}\S+)$"
DURATION = r"^([0-9]+(s|m|h|d))+$"
SHORT_DURATION = r"^([0-9]+(ms|s|m|h))+$"
LABEL_PIPELINE = "loom.ml/featurepipeline"


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """A duration of the API ("1h30m", "500ms", "1d") as a timedelta; ValueError names what is wrong."""
    parts = re.findall(r"([0-9]+)(ms|s|m|h|d)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration: use digits with ms, s, m, h or d, e.g. 90s or 1h30m")
    return timedelta(seconds=sum(int(n) * _DURATION_UNITS[u] for n, u in parts))


def exactly_one(fields: list[str], where: str) -> dict[str, Any]:
    rule = " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields) + " == 1"
    return {"rule": rule, "message": f"{where} must set exactly one of: {', '.join(fields)}"}


class PipelineMode(StrEnum):
    BATCH = "batch"
    STREAMING = "streaming"


class EngineType(StrEnum):
    LOCAL = "local"
    SPARK = "spark"
    RAY = "ray"


class PipelinePhase(StrEnum):
    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    STREAMING = "Streaming"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class RunResult(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ParquetSource(KubeModel):
    path: str = Field(min_length=1, description="File, directory or glob of Parquet files.")


class RedisStreamSource(KubeModel):
    url: str = Field(pattern=r"^rediss?://", description="redis://host:port/db")
    stream: str = Field(min_length=1, description="Stream key to read (XREADGROUP).")
    group: str = Field(default="loom", min_length=1, description="Consumer group.")


class SourceSpec(KubeModel):
    model_config = cel(exactly_one(["parquet", "redisStream"], "source"))

    parquet: ParquetSource | None = None
    redisStream: RedisStreamSource | None = None
    timestampField: str = Field(min_length=1, description="Event-time column of each row.")
    entityKeys: list[str] = Field(min_length=1, max_length=8, description="Columns forming the entity key.")


class TransformSpec(KubeModel):
    model_config = cel(exactly_one(["sql", "python"], "transform"))

    sql: str | None = Field(
        default=None, min_length=1, description="SQL over the table `source` (DuckDB dialect on local)."
    )
    python: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function taking and returning a pyarrow Table.",
    )


class BackfillSpec(KubeModel):
    model_config = cel(
        {"rule": "self.start < self.end", "message": "backfill.start must be before backfill.end"}
    )

    start: datetime = Field(description="First event time to (re)compute, RFC 3339.")
    end: datetime = Field(description="Event time to stop at (exclusive), RFC 3339.")
    step: str = Field(
        default="1d", pattern=DURATION, description="Width of each backfill slice, e.g. 1h, 1d."
    )
    parallelism: int = Field(default=2, ge=1, le=64, description="Backfill windows running at once.")


class StreamingSpec(KubeModel):
    consumers: int = Field(default=1, ge=1, le=256, description="Consumer pods in the stream's group.")
    batchSize: int = Field(
        default=1000, ge=1, le=100000, description="Most stream entries in one micro-batch."
    )
    maxLatency: str = Field(
        default="1s",
        pattern=SHORT_DURATION,
        description="Longest a micro-batch waits to fill before it is processed, e.g. 500ms, 2s.",
    )


class OfflineSink(KubeModel):
    path: str = Field(min_length=1, description="Directory of the Parquet dataset.")
    partitionBy: list[str] = Field(
        default_factory=lambda: ["date"],
        description="Partition columns; `date` is derived from the timestamp.",
    )


class OnlineFormat(StrEnum):
    LOOM = "loom"
    FEAST = "feast"


class FeastEntityType(StrEnum):
    INT64 = "int64"
    INT32 = "int32"
    STRING = "string"
    BYTES = "bytes"


class FeastLayout(KubeModel):
    project: str = Field(min_length=1, description="Feast project the hashes belong to.")
    featureView: str = Field(min_length=1, description="Feast feature view the features belong to.")
    entityKeySerializationVersion: int = Field(
        default=3, ge=3, le=3, description="Feast's entity key serialization version (3, Feast >= 0.50)."
    )
    entityTypes: dict[str, FeastEntityType] = Field(
        default_factory=dict,
        description="Declared Feast value type of each entity key column (default: from the data).",
    )


class RedisSink(KubeModel):
    model_config = cel(
        {
            "rule": "self.format != 'feast' || has(self.feast)",
            "message": "format: feast needs redis.feast{project, featureView}",
        }
    )

    url: str = Field(pattern=r"^rediss?://", description="redis://host:port/db")
    keyPrefix: str = Field(default="", description="Prefix of every entity hash key (format loom).")
    ttlSeconds: int | None = Field(default=None, ge=1, description="Expire entity hashes after this long.")
    format: OnlineFormat = Field(
        default=OnlineFormat.LOOM, description="loom (readable hashes) or feast (Feast's Redis layout)."
    )
    feast: FeastLayout | None = None


class OnlineSink(KubeModel):
    redis: RedisSink


class SinksSpec(KubeModel):
    model_config = cel(
        {"rule": "has(self.offline) || has(self.online)", "message": "sinks needs offline or online"}
    )

    offline: OfflineSink | None = None
    online: OnlineSink | None = None


class EngineSpec(KubeModel):
    type: EngineType = Field(default=EngineType.LOCAL, description="local, spark or ray.")
    image: str | None = Field(
        default=None, description="Image of the pipeline pods (default: the operator's LOOM_FEATURES_IMAGE)."
    )
    executors: int = Field(default=2, ge=1, le=1000, description="Spark executors or Ray workers.")
    serviceAccountName: str | None = Field(
        default=None,
        description="ServiceAccount of the pipeline pods (Spark's driver needs one that may create pods).",
    )
    resources: dict[str, Any] | None = Field(
        default=None,
        description="Resource requirements of each pipeline pod.",
        json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    )


class FeaturePipelineSpec(KubeModel):
    model_config = cel(
        {
            "rule": "!(has(self.schedule) && self.mode == 'streaming')",
            "message": "set either schedule (batch) or mode: streaming, not both",
        },
        {
            "rule": "self.mode != 'streaming' || has(self.source.redisStream)",
            "message": "mode: streaming needs source.redisStream",
        },
        {
            "rule": "!(has(self.backfill) && self.mode == 'streaming')",
            "message": "backfill applies to batch pipelines only",
        },
        {
            "rule": "self.mode == 'streaming' || has(self.source.parquet)",
            "message": "source.redisStream is read by mode: streaming; a batch pipeline reads source.parquet",
        },
        {
            "rule": "self.mode == 'streaming' || has(self.schedule) || has(self.backfill)",
            "message": "a batch pipeline needs a schedule, a backfill, or both",
        },
        {
            "rule": "self.mode != 'streaming' || self.engine.type == 'local'",
            "message": "mode: streaming runs as a Deployment of consumers on engine local; "
            "spark and ray run batch windows only",
        },
    )

    source: SourceSpec
    transform: TransformSpec
    schedule: str | None = Field(default=None, pattern=CRON, description="Cron schedule of batch runs.")
    mode: PipelineMode = Field(default=PipelineMode.BATCH, description="batch or streaming.")
    backfill: BackfillSpec | None = None
    allowedLateness: str = Field(
        default="0s",
        pattern=DURATION,
        description="Each scheduled run recomputes from watermark - allowedLateness, so late events count.",
    )
    retries: int = Field(
        default=2, ge=0, le=20, description="Retries of a failed window before it counts as failed."
    )
    suspend: bool = Field(default=False, description="true: start no new runs (running ones finish).")
    streaming: StreamingSpec = Field(default_factory=StreamingSpec, json_schema_extra={"default": {}})
    sinks: SinksSpec
    engine: EngineSpec = Field(default_factory=EngineSpec, json_schema_extra={"default": {}})


class Window(KubeModel):
    start: datetime = Field(description="First event time of the window (inclusive).")
    end: datetime = Field(description="End of the window (exclusive).")


class RunStatus(KubeModel):
    """One run of one window, as its child (Job, SparkApplication or RayJob) reported it."""

    name: str = Field(description="The run's child object.")
    window: Window
    result: RunResult | None = Field(default=None, description="Succeeded or Failed; unset while running.")
    rows: int | None = Field(default=None, description="Rows the run wrote (its summary's rows_out).")
    seconds: float | None = Field(default=None, description="Run time, from its summary.")
    message: str = Field(default="", description="The run's summary or its one-line error.")


class BackfillStatus(KubeModel):
    windowsTotal: int = 0
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    failedWindows: list[str] = Field(
        default_factory=list, description="Start of each window that failed for good (first 20)."
    )


class FeaturePipelineStatus(KubeModel):
    phase: PipelinePhase | None = None
    watermark: datetime | None = Field(
        default=None, description="Event time up to which every window has been written."
    )
    lastSuccessfulRun: datetime | None = Field(default=None, description="When the last good run finished.")
    rowsWritten: int | None = Field(
        default=None,
        description="Rows written by all runs seen so far (batch; a stream's consumers export theirs as the "
        "metric loom_feature_rows_written_total).",
    )
    newestEventTime: datetime | None = Field(default=None, description="Newest event time written.")
    freshnessSeconds: float | None = Field(default=None, description="Now minus newestEventTime.")
    lastRun: RunStatus | None = None
    activeRuns: list[str] = Field(default_factory=list, description="Children running now.")
    backfill: BackfillStatus | None = None
    consumers: int | None = Field(default=None, description="Ready stream consumers (streaming).")
    recordedRuns: list[str] = Field(
        default_factory=list,
        description="Finished runs (children) already counted in rowsWritten and lastRun, so that each "
        "is counted once; only those that still exist.",
    )
    conditions: list[Condition] = Field(default_factory=list)
    observedGeneration: int | None = None


class FeaturePipeline(Resource):
    info: ClassVar[ResourceInfo] = ResourceInfo(
        kind="FeaturePipeline",
        plural="featurepipelines",
        short_names=("lfp",),
        printer_columns=(
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Engine", ".spec.engine.type"),
            PrinterColumn("Watermark", ".status.watermark", "date"),
            PrinterColumn("Rows", ".status.rowsWritten", "integer"),
            PrinterColumn("Freshness", ".status.freshnessSeconds", "number", priority=1),
            PrinterColumn("Last-Run", ".status.lastRun.result", priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    kind: str = "FeaturePipeline"
    spec: FeaturePipelineSpec
    status: FeaturePipelineStatus | None = None
