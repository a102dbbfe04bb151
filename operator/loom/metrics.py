"""Prometheus metrics of the operator (`loom_` prefix, base units, `_total` counters)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

API_REQUESTS = Counter(
    "loom_api_requests_total", "Requests Loom sent to the Kubernetes API server.", ["operation", "kind"]
)
API_ERRORS = Counter(
    "loom_api_errors_total", "Requests to the API server that failed for good.", ["operation", "code"]
)
RECONCILE_ERRORS = Counter("loom_reconcile_errors_total", "Reconciles that raised an error.", ["kind"])
RECONCILE_SECONDS = Histogram(
    "loom_reconcile_seconds",
    "Time spent in one reconcile.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RESOURCES_BY_PHASE = Gauge("loom_resources", "Loom resources by kind and phase.", ["kind", "phase"])
