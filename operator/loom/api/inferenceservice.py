"""InferenceService: GPU model serving with a sidecar that stages weights in shared memory."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from pydantic import Field

from loom.api.common import (
    QUANTITY,
    Condition,
    KubeModel,
    PrinterColumn,
    Resource,
    ResourceInfo,
    ScaleSubresource,
    cel,
    pod_template_field,
)


class ModelFormat(StrEnum):
    SAFETENSORS = "safetensors"


class ScalingMetric(StrEnum):
    CONCURRENCY = "concurrency"
    RPS = "rps"


class Autoscaler(StrEnum):
    LOOM = "loom"
    EXTERNAL = "external"


class ModelState(StrEnum):
    PENDING = "Pending"
    LOADING = "Loading"
    LOADED = "Loaded"
    FAILED_TO_LOAD = "FailedToLoad"


class ServicePhase(StrEnum):
    PENDING = "Pending"
    LOADING = "Loading"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class ModelSpec(KubeModel):
    uri: str = Field(
        min_length=1,
        description="Where the weights are: a path inside the pod (file or directory), or an http(s) URL.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.startsWith('/') || self.startsWith('http://') || self.startsWith('https://')",
                    "message": "model.uri must be an absolute path or an http(s):// URL",
                }
            ]
        },
    )
    format: ModelFormat = Field(default=ModelFormat.SAFETENSORS, description="Weights format.")
    sizeLimit: str | None = Field(
        default=None,
        pattern=QUANTITY,
        description="Memory the staged model may take (emptyDir sizeLimit), e.g. 16Gi. "
        "Defaults to the serving container's memory request.",
    )


class PredictorSpec(KubeModel):
    template: dict[str, Any] = pod_template_field("Pod template of the serving pods.")


class PrometheusSource(KubeModel):
    url: str = Field(pattern=r"^https?://", description="Prometheus base URL, e.g. http://prometheus:9090.")
    query: str = Field(
        min_length=1,
        description="PromQL giving the total metric over the service; $namespace and $name are substituted.",
    )


class ScalingSpec(KubeModel):
    """Knative-KPA-style autoscaling on in-flight requests (concurrency) or requests per second."""

    model_config = cel(
        {
            "rule": "self.panicWindowSeconds <= self.stableWindowSeconds",
            "message": "scaling.panicWindowSeconds must be <= scaling.stableWindowSeconds",
        }
    )

    autoscaler: Autoscaler = Field(
        default=Autoscaler.LOOM, description="loom scales; external leaves replicas to HPA or KEDA."
    )
    metric: ScalingMetric = Field(default=ScalingMetric.CONCURRENCY, description="concurrency or rps.")
    target: float = Field(default=10.0, gt=0, description="Target value of the metric per pod.")
    stableWindowSeconds: int = Field(default=60, ge=6, le=3600, description="Averaging window.")
    panicWindowSeconds: int = Field(default=6, ge=1, le=3600, description="Short window for bursts.")
    panicThreshold: float = Field(
        default=2.0, gt=1.0, le=10.0, description="Panic when panic-window demand / ready pods >= this."
    )
    maxScaleUpRate: float = Field(default=1000.0, gt=1.0, description="Most growth factor per decision.")
    maxScaleDownRate: float = Field(default=2.0, gt=1.0, description="Most shrink factor per decision.")
    tolerance: float = Field(default=0.1, ge=0, lt=1, description="Ignore changes within this fraction.")
    scaleToZeroGracePeriodSeconds: int = Field(
        default=30, ge=0, description="Idle seconds before scaling to zero (when minReplicas is 0)."
    )
    prometheus: PrometheusSource | None = Field(
        default=None, description="Read the metric from Prometheus instead of scraping the pods."
    )


class CanarySpec(KubeModel):
    trafficPercent: int = Field(
        default=10, ge=0, le=100, description="Share of replicas (and so traffic) a new revision starts with."
    )


class InferenceServiceSpec(KubeModel):
    model_config = cel(
        {
            "rule": "self.minReplicas <= self.maxReplicas",
            "message": "minReplicas must be <= maxReplicas",
        },
        {
            "rule": "!has(self.replicas) || (self.replicas >= self.minReplicas "
            "&& self.replicas <= self.maxReplicas)",
            "message": "replicas must lie within [minReplicas, maxReplicas]",
        },
    )

    model: ModelSpec = Field(description="The model to stage and serve.")
    predictor: PredictorSpec = Field(description="The serving pods.")
    replicas: int | None = Field(
        default=None, ge=0, description="Desired replicas; written by the autoscaler (scale subresource)."
    )
    minReplicas: int = Field(
        default=1, ge=0, le=10000, description="Fewest replicas (0 allows scale to zero)."
    )
    maxReplicas: int = Field(default=10, ge=1, le=10000, description="Most replicas.")
    scaling: ScalingSpec = Field(
        default_factory=ScalingSpec, description="Autoscaling.", json_schema_extra={"default": {}}
    )
    canary: CanarySpec | None = Field(default=None, description="Roll new revisions out as a canary first.")


class ModelStatus(KubeModel):
    state: ModelState = ModelState.PENDING
    reason: str = ""
    message: str = ""


class RevisionsStatus(KubeModel):
    latestCreated: str | None = None
    latestReady: str | None = None
    canary: str | None = None


class InferenceServiceStatus(KubeModel):
    phase: ServicePhase | None = None
    url: str | None = None
    replicas: int = 0
    readyReplicas: int = 0
    selector: str | None = Field(default=None, description="Label selector of the pods (scale subresource).")
    modelStatus: ModelStatus = Field(default_factory=ModelStatus)
    revisions: RevisionsStatus = Field(default_factory=RevisionsStatus)
    conditions: list[Condition] = Field(default_factory=list)
    observedGeneration: int | None = None


class InferenceService(Resource):
    info: ClassVar[ResourceInfo] = ResourceInfo(
        kind="InferenceService",
        plural="inferenceservices",
        short_names=("lis",),
        printer_columns=(
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Model", ".status.modelStatus.state"),
            PrinterColumn("Replicas", ".status.replicas", "integer"),
            PrinterColumn("Ready", ".status.readyReplicas", "integer"),
            PrinterColumn("URL", ".status.url", priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
        scale=ScaleSubresource(".spec.replicas", ".status.replicas", ".status.selector"),
    )

    kind: str = "InferenceService"
    spec: InferenceServiceSpec
    status: InferenceServiceStatus | None = None
