"""FeaturePipeline: batch or streaming feature generation into offline and online stores."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import Field

from loom.api.common import Condition, KubeModel, PrinterColumn, Resource, ResourceInfo, cel

CRON = r"^(@(yearly|annually|monthly|weekly|daily|hourly)|(\S+\s+){4}\S+)$"
DURATION = r"^([0-9]+(s|m|h|d))+$"


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
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SCHEDULED = "Scheduled"


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


class OfflineSink(KubeModel):
    path: str = Field(min_length=1, description="Directory of the Parquet dataset.")
    partitionBy: list[str] = Field(
        default_factory=lambda: ["date"],
        description="Partition columns; `date` is derived from the timestamp.",
    )


class RedisSink(KubeModel):
    url: str = Field(pattern=r"^rediss?://", description="redis://host:port/db")
    keyPrefix: str = Field(default="", description="Prefix of every entity hash key.")
    ttlSeconds: int | None = Field(default=None, ge=1, description="Expire entity hashes after this long.")


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
    image: str | None = Field(default=None, description="Image of the pipeline pods.")
    executors: int = Field(default=2, ge=1, le=1000, description="Spark executors or Ray workers.")
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
    )

    source: SourceSpec
    transform: TransformSpec
    schedule: str | None = Field(default=None, pattern=CRON, description="Cron schedule of batch runs.")
    mode: PipelineMode = Field(default=PipelineMode.BATCH, description="batch or streaming.")
    backfill: BackfillSpec | None = None
    sinks: SinksSpec
    engine: EngineSpec = Field(default_factory=EngineSpec, json_schema_extra={"default": {}})


class FeaturePipelineStatus(KubeModel):
    phase: PipelinePhase | None = None
    watermark: datetime | None = Field(default=None, description="Latest event time fully written.")
    lastSuccessfulRun: datetime | None = None
    rowsWritten: int = 0
    freshnessSeconds: float | None = None
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
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    )

    kind: str = "FeaturePipeline"
    spec: FeaturePipelineSpec
    status: FeaturePipelineStatus | None = None
