"""What a stream consumer is told: the pipeline's streaming spec, then `--consumer` and the environment.

Rule: everything is read and checked before the consumer touches Redis; a bad value is bad input (exit 65)
naming the variable. The consumer name is `--consumer`, else env POD_NAME (the Deployment sets it from the
pod's name), else the hostname. Knobs the spec does not carry (the controller may set them as env):
LOOM_STREAM_CLAIM_IDLE (duration, default 30s: entries idle longer are claimed from their consumer; keep it
well above the time a micro-batch takes), LOOM_STREAM_REPORT_EVERY (default 10s), LOOM_STREAM_MAX_DELIVERIES
(default 5), LOOM_METRICS_PORT (unset: no metrics server).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass

from loom.api.featurepipeline import FeaturePipeline, parse_duration
from loom.features.config import pipeline_name
from loom.features.errors import bad_input

ENV_POD_NAME = "POD_NAME"
ENV_CLAIM_IDLE = "LOOM_STREAM_CLAIM_IDLE"
ENV_REPORT_EVERY = "LOOM_STREAM_REPORT_EVERY"
ENV_MAX_DELIVERIES = "LOOM_STREAM_MAX_DELIVERIES"
ENV_METRICS_PORT = "LOOM_METRICS_PORT"
DEFAULT_CLAIM_IDLE = "30s"
DEFAULT_REPORT_EVERY = "10s"
DEFAULT_MAX_DELIVERIES = 5


@dataclass(frozen=True)
class Settings:
    url: str
    stream: str
    group: str
    consumer: str
    batch_size: int
    max_latency: float
    claim_idle: float
    report_every: float
    max_deliveries: int
    metrics_port: int | None


def settings(pipeline: FeaturePipeline, consumer: str | None, env: Mapping[str, str]) -> Settings:
    """What this consumer is told: the spec, then --consumer / env; bad input names what is wrong."""
    source = pipeline.spec.source.redisStream
    if source is None:
        raise bad_input(
            f"pipeline {pipeline_name(pipeline)}: loom features stream reads source.redisStream; this "
            "pipeline has none (a source.parquet pipeline runs windows: loom features run)"
        )
    streaming = pipeline.spec.streaming
    name = consumer or env.get(ENV_POD_NAME) or socket.gethostname()
    return Settings(
        url=source.url,
        stream=source.stream,
        group=source.group,
        consumer=name,
        batch_size=streaming.batchSize,
        max_latency=_seconds(streaming.maxLatency, "streaming.maxLatency"),
        claim_idle=max(0.05, _seconds(env.get(ENV_CLAIM_IDLE) or DEFAULT_CLAIM_IDLE, ENV_CLAIM_IDLE)),
        report_every=_seconds(env.get(ENV_REPORT_EVERY) or DEFAULT_REPORT_EVERY, ENV_REPORT_EVERY),
        max_deliveries=_int(env, ENV_MAX_DELIVERIES, DEFAULT_MAX_DELIVERIES),
        metrics_port=_int(env, ENV_METRICS_PORT, 0) or None,
    )


def _seconds(text: str, what: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise bad_input(f"{what}: {exc}") from exc


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if not text:
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise bad_input(f"{name}={text!r} is not an integer") from exc
