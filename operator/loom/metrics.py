"""Prometheus metrics of the operator (`loom_` prefix, base units, `_total` counters)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

API_REQUESTS = Counter(
    "loom_api_requests_total", "Requests Loom sent to the Kubernetes API server.", ["operation", "kind"]
)
API_ERRORS = Counter(
    "loom_api_errors_total", "Requests to the API server that failed for good.", ["operation", "code"]
)
API_RESPONSES = Counter(
    "loom_api_responses_total",
    "Responses Loom's client got from the API server, by HTTP method and status code (0: no answer).",
    ["verb", "code"],
)
RECONCILE_ERRORS = Counter("loom_reconcile_errors_total", "Reconciles that raised an error.", ["kind"])
WORKQUEUE_DEPTH = Gauge(
    "loom_workqueue_depth", "Keys waiting in a controller's work queue (not yet taken by a worker).", ["kind"]
)
RECONCILE_SECONDS = Histogram(
    "loom_reconcile_seconds",
    "Time spent in one reconcile.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OPERATOR_ACTIVE = Gauge(
    "loom_operator_active",
    "1 while this replica acts; 0 while Kopf peering pauses it for another replica.",
)
OPERATOR_ACTIVE.set(1)
RESOURCES_BY_PHASE = Gauge("loom_resources", "Loom resources by kind and phase.", ["kind", "phase"])

# InferenceService: desired vs actual replicas, and what the autoscaler and health checks did.
INFERENCE_REPLICAS = Gauge(
    "loom_inferenceservice_replicas",
    "Replicas of an InferenceService: desired (spec.replicas), current (pods) and ready (Loaded and Ready).",
    ["namespace", "name", "state"],
)
AUTOSCALER_DECISIONS = Counter(
    "loom_autoscaler_decisions_total",
    "Replica changes the autoscaler wrote through the scale subresource.",
    ["namespace", "name", "direction", "mode"],
)
AUTOSCALER_PANIC = Gauge(
    "loom_autoscaler_panic",
    "1 while an InferenceService's autoscaler is in panic mode.",
    ["namespace", "name"],
)
AUTOSCALER_METRIC = Gauge(
    "loom_autoscaler_observed_metric",
    "Last observed scaling metric of an InferenceService (total over its pods).",
    ["namespace", "name"],
)
AUTOSCALER_UNUSABLE_SAMPLES = Counter(
    "loom_autoscaler_unusable_samples_total",
    "Metric samples the autoscaler could not use (NaN or infinite values, malformed replies, refused "
    "queries), by reason; the scale was held instead.",
    ["namespace", "name", "reason"],
)
INFERENCE_POD_REPLACEMENTS = Counter(
    "loom_inferenceservice_pod_replacements_total", "Serving pods Loom replaced, by reason.", ["reason"]
)
INFERENCE_ROLLBACKS = Counter(
    "loom_inferenceservice_rollbacks_total", "Revisions rolled back automatically, by reason.", ["reason"]
)
MODEL_LOAD_SECONDS = Histogram(
    "loom_inferenceservice_model_load_seconds",
    "Seconds a serving pod's model sidecar took to stage the model (from its start to its startup probe "
    "passing), observed once per pod.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200),
)

# TrainingJob: phases come from RESOURCES_BY_PHASE{kind="TrainingJob"}.
TRAININGJOB_RESTARTS = Counter(
    "loom_trainingjob_restarts_total", "Gang restarts of TrainingJobs, by reason.", ["reason"]
)
TRAININGJOB_CREATE_TO_RUNNING = Histogram(
    "loom_trainingjob_create_to_running_seconds",
    "Seconds from a TrainingJob's creation to its first gang being Running.",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
TRAININGJOB_RESTART_TO_RUNNING = Histogram(
    "loom_trainingjob_restart_to_running_seconds",
    "Seconds from the creation of a restarted gang's pods to that gang being Running.",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)

# FeaturePipeline: each finished run is counted once, when the status records it.
FEATURE_FRESHNESS = Gauge(
    "loom_feature_freshness_seconds",
    "Now minus the newest event time a FeaturePipeline has written.",
    ["namespace", "name"],
)
FEATURE_ROWS_WRITTEN = Counter(
    "loom_feature_rows_written_total",
    "Rows FeaturePipeline runs wrote (their summaries' rows_out).",
    ["namespace", "name", "engine"],
)
FEATURE_RUNS = Counter(
    "loom_feature_runs_total",
    "Finished FeaturePipeline runs, by result.",
    ["namespace", "name", "engine", "result"],
)
FEATURE_RUN_SECONDS = Histogram(
    "loom_feature_run_duration_seconds",
    "Duration of finished FeaturePipeline runs (the runtime's own figure when it reported one).",
    ["engine", "result"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)
