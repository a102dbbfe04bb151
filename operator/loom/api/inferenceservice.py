"""InferenceService: GPU model serving with a sidecar that stages weights in shared memory."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import Field

from loom.api.common import (
    DNS_LABEL,
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

# The contract between the InferenceService's builders, its health checks and the controller.
SIDECAR_CONTAINER = "loom-sidecar"
MODEL_VOLUME = "loom-models"
LABEL_SERVICE = "loom.ml/inferenceservice"
LABEL_REVISION = "loom.ml/revision"
# Nodes whose GPUs failed: Loom's GPU agent (`loom gpu-agent`) sets the node condition GPUHealthy=False
# and the taint loom.ml/gpu-unhealthy:NoSchedule; people may label them loom.ml/gpu-health=unhealthy.
# Any of the three marks a node GPU-unhealthy: serving pods there are replaced, TrainingJob gangs there
# restart elsewhere, and new pods avoid such nodes.
GPU_HEALTH_LABEL = "loom.ml/gpu-health"
GPU_UNHEALTHY = "unhealthy"
GPU_HEALTH_CONDITION = "GPUHealthy"
GPU_UNHEALTHY_TAINT = "loom.ml/gpu-unhealthy"


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


# model.uri: a path in the pod, or a URI of one of these schemes (the sidecar reads all but pvc://,
# which the operator mounts read-only and hands over as a path). One RE2/Python regex, so the
# API server's CEL rule and the tests agree.
MODEL_URI_SCHEMES = ("http://", "https://", "s3://", "gs://", "hf://", "pvc://")
MODEL_URI_PATTERN = (
    r"^(/"
    r"|https?://[^/?#]+"
    r"|(s3|gs)://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/|$)"
    r"|hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[^/@ ]+)?(/|$)"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/|$))"
)
MODEL_URI_MESSAGE = (
    "model.uri must be an absolute path or a URI: http(s)://HOST/PATH, s3://BUCKET[/KEY], "
    "gs://BUCKET[/KEY], hf://ORG/REPO[@REVISION][/PATH] or pvc://CLAIM[/PATH]"
)
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class ModelCredentials(KubeModel):
    """Where the sidecar's credentials for model.uri come from; only names, never values."""

    model_config = cel(
        {
            "rule": "has(self.secretName) != has(self.serviceAccountName)",
            "message": "model.credentials takes exactly one of secretName or serviceAccountName",
        }
    )

    secretName: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="A Secret in the service's namespace, given to the sidecar only: its keys become "
        "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, "
        "GCS_ACCESS_KEY_ID, GCS_SECRET_ACCESS_KEY, HF_TOKEN) and files under "
        "/var/run/loom/model-credentials; a key `credentials` is read as an AWS shared credentials file "
        "(profile AWS_PROFILE, default `default`).",
    )
    serviceAccountName: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="The pods run as this ServiceAccount: EKS IRSA (AWS_ROLE_ARN + "
        "AWS_WEB_IDENTITY_TOKEN_FILE, exchanged through STS) or GKE Workload Identity.",
    )


class ModelSpec(KubeModel):
    model_config = cel(
        {
            "rule": "!has(self.region) || self.uri.startsWith('s3://')",
            "message": "model.region applies to s3:// URIs only",
        },
        {
            "rule": "!has(self.endpoint) || self.uri.matches('^(s3|gs|hf)://')",
            "message": "model.endpoint applies to s3://, gs:// and hf:// URIs only",
        },
    )

    uri: str = Field(
        min_length=1,
        max_length=2048,
        description="Where the weights are: a path inside the pod (file or directory), an http(s) URL, "
        "an object store URI (s3://BUCKET/KEY, gs://BUCKET/KEY, hf://ORG/REPO[@REVISION][/PATH]) or "
        "pvc://CLAIM[/PATH] (the claim is mounted read-only into the sidecar). A URI that does not end in "
        ".safetensors or .json is a prefix: its model.safetensors.index.json, else every .safetensors "
        "object directly under it.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": f"self.matches('{MODEL_URI_PATTERN}')", "message": MODEL_URI_MESSAGE},
                {
                    "rule": "!self.startsWith('pvc://') || !self.matches('/[.][.](/|$)')",
                    "message": "a pvc:// model.uri must not climb out of its claim with '..'",
                },
            ]
        },
    )
    credentials: ModelCredentials | None = Field(
        default=None, description="Credentials for model.uri (none: anonymous, or the node's own)."
    )
    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#]+/?$",
        description="An S3-compatible endpoint for s3:// (MinIO, Ceph, R2; path-style addressing), "
        "the GCS XML API for gs://, or a Hugging Face hub mirror for hf://. Default: the public service.",
    )
    region: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]{1,32}$",
        description="The S3 signing region (default: AWS_REGION in the Secret, else us-east-1).",
    )
    name: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        max_length=63,
        description="Name the model is staged under (LOOM_MODEL_NAME); defaults to the service's name.",
    )
    format: ModelFormat = Field(default=ModelFormat.SAFETENSORS, description="Weights format.")
    sizeLimit: str | None = Field(
        default=None,
        pattern=QUANTITY,
        description="Memory the staged model may take (emptyDir sizeLimit), e.g. 16Gi. "
        "Defaults to the serving container's memory request, else 1Gi.",
    )
    loadTimeoutSeconds: int | None = Field(
        default=None,
        ge=30,
        le=86400,
        description="Seconds a pod may take to stage the model before it counts as failed. "
        "Defaults to 120 s plus sizeLimit read at a conservative 200 MB/s.",
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
    metricName: str | None = Field(
        default=None,
        pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        description="Prometheus metric the pods expose: a gauge of in-flight requests (concurrency, "
        "default loom_inflight_requests) or a request counter (rps, default loom_requests_total).",
    )
    metricsPort: int = Field(default=8080, ge=1, le=65535, description="Port of the pods' /metrics.")
    metricsPath: str = Field(default="/metrics", pattern=r"^/", description="Path of the pods' metrics.")
    prometheus: PrometheusSource | None = Field(
        default=None, description="Read the metric from Prometheus instead of scraping the pods."
    )


class HealthSpec(KubeModel):
    """When serving pods are replaced: one at a time, never below minReplicas ready pods."""

    notReadySeconds: int = Field(
        default=60,
        ge=1,
        le=86400,
        description="Replace a pod that has been NotReady this long after having been Ready.",
    )
    crashLoopRestarts: int = Field(
        default=3, ge=1, le=1000, description="Replace a pod in CrashLoopBackOff after this many restarts."
    )
    replaceOnUnhealthyGPU: bool = Field(
        default=True,
        description="Replace pods on nodes labelled loom.ml/gpu-health=unhealthy "
        "(or with node condition GPUHealthy=False); new pods avoid such nodes.",
    )


class CanarySpec(KubeModel):
    trafficPercent: int = Field(
        default=10, ge=0, le=100, description="Share of replicas (and so traffic) a new revision starts with."
    )
    promoteAfterSeconds: int = Field(
        default=0,
        ge=0,
        le=86400,
        description="Seconds the canary's pods must stay Loaded and Ready before it grows (analysis time).",
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
    canary: CanarySpec | None = Field(
        default=None,
        description="Start each new revision with this share of the replicas; without it a new "
        "revision starts with one pod. Either way it grows only as its pods are Loaded and Ready.",
    )
    health: HealthSpec = Field(
        default_factory=HealthSpec, description="Pod replacement.", json_schema_extra={"default": {}}
    )


class ModelStatus(KubeModel):
    """State of the model of the latest revision, as KServe's modelStatus."""

    state: ModelState = ModelState.PENDING
    reason: str = ""
    message: str = ""
    exitCode: int | None = Field(default=None, description="Exit code of the sidecar when it failed.")
    revision: str | None = Field(default=None, description="Revision this state is about.")
    loadedReplicas: int = Field(default=0, description="Pods of that revision with the model staged.")


class RevisionStatus(KubeModel):
    name: str = Field(description="Revision hash; its Deployment is <service>-<revision>.")
    replicas: int = 0
    readyReplicas: int = 0
    modelState: ModelState = ModelState.PENDING


class RevisionsStatus(KubeModel):
    latestCreated: str | None = Field(default=None, description="Revision of the current spec.")
    latestReady: str | None = Field(default=None, description="Revision that last had every replica Ready.")
    canary: str | None = Field(default=None, description="Revision being rolled out, if any.")
    failed: list[str] = Field(default_factory=list, description="Revisions rolled back (newest last).")
    items: list[RevisionStatus] = Field(default_factory=list, description="Revisions that have pods.")


class ScalingDecision(KubeModel):
    time: datetime | None = None
    fromReplicas: int = 0
    toReplicas: int = 0
    mode: str = Field(default="stable", description="stable or panic.")
    stableValue: float = Field(default=0.0, description="Stable-window average of the metric (total).")
    panicValue: float = Field(default=0.0, description="Panic-window average of the metric (total).")


class AutoscalingStatus(KubeModel):
    desiredReplicas: int | None = None
    mode: str | None = Field(default=None, description="stable or panic.")
    lastDecision: ScalingDecision | None = None


class PodIssue(KubeModel):
    pod: str
    reason: str
    message: str = ""


class HealthStatus(KubeModel):
    unhealthyPods: list[PodIssue] = Field(default_factory=list, description="Pods awaiting replacement.")
    replacedPods: int = Field(default=0, description="Pods replaced by Loom so far.")
    lastReplaced: PodIssue | None = None


class InferenceServiceStatus(KubeModel):
    # Rebuilt from what is observed on every reconcile; the rest (the rollout record: stable and
    # failed revisions, the model's last failure, the replacement count) is state.
    RECOMPUTED: ClassVar[frozenset[str]] = frozenset(
        {
            "phase",
            "url",
            "replicas",
            "readyReplicas",
            "desiredReplicas",
            "selector",
            "revisions.items",
            "revisions.latestCreated",
            "revisions.canary",
            "autoscaling",
            "health.unhealthyPods",
            "conditions",
            "observedGeneration",
        }
    )

    phase: ServicePhase | None = None
    url: str | None = None
    replicas: int = 0
    readyReplicas: int = 0
    desiredReplicas: int | None = None
    selector: str | None = Field(default=None, description="Label selector of the pods (scale subresource).")
    modelStatus: ModelStatus = Field(default_factory=ModelStatus)
    revisions: RevisionsStatus = Field(default_factory=RevisionsStatus)
    autoscaling: AutoscalingStatus = Field(default_factory=AutoscalingStatus)
    health: HealthStatus = Field(default_factory=HealthStatus)
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
            PrinterColumn("Desired", ".spec.replicas", "integer", priority=1),
            PrinterColumn("Revision", ".status.revisions.latestReady", priority=1),
            PrinterColumn("Canary", ".status.revisions.canary", priority=1),
            PrinterColumn("URL", ".status.url", priority=1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
        scale=ScaleSubresource(".spec.replicas", ".status.replicas", ".status.selector"),
    )

    kind: str = "InferenceService"
    spec: InferenceServiceSpec
    status: InferenceServiceStatus | None = None
