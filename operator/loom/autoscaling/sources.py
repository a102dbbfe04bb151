"""Metric sources: where the autoscaler's observation comes from. They do HTTP I/O to the pods or to
Prometheus, never to the Kubernetes API server.

- `ScrapeSource` reads each Ready pod's Prometheus text endpoint (parsed with prometheus_client's
  parser): a gauge of in-flight requests for `concurrency`, a request counter for `rps` (the rate is
  taken between two scrapes of the same pod). The URL comes from a template, by default
  `http://{pod_ip}:{port}{path}`; tests point it at a loopback server with `{namespace}/{pod}`.
- `PrometheusSource` runs an instant query (`/api/v1/query`) giving the service's total.
"""

from __future__ import annotations

import json
import math
import threading
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families

from loom.api.inferenceservice import ScalingMetric

DEFAULT_URL_TEMPLATE = "http://{pod_ip}:{port}{path}"
DEFAULT_METRIC = {
    ScalingMetric.CONCURRENCY: "loom_inflight_requests",
    ScalingMetric.RPS: "loom_requests_total",
}


@dataclass(frozen=True)
class PodTarget:
    name: str
    ip: str | None


@dataclass(frozen=True)
class Target:
    """What to measure: the Ready pods of one InferenceService and the metric they expose."""

    namespace: str
    name: str
    pods: tuple[PodTarget, ...]
    metric: ScalingMetric = ScalingMetric.CONCURRENCY
    metric_name: str | None = None
    port: int = 8080
    path: str = "/metrics"

    @property
    def series(self) -> str:
        return self.metric_name or DEFAULT_METRIC[ScalingMetric(self.metric)]


class MetricSource(Protocol):
    """Knative's metric client, in two methods: a sample of the service's total, and forgetting it."""

    def sample(self, target: Target, now: float) -> float | None:
        """The metric summed over the service (in-flight requests, or requests per second); None when
        nothing could be read."""
        ...

    def forget(self, namespace: str, name: str) -> None: ...


def metric_value(text: str, series: str) -> float | None:
    """Sum of every sample of `series` (any labels) in a Prometheus text exposition; None if absent."""
    total, found = 0.0, False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == series and not math.isnan(sample.value):
                total += sample.value
                found = True
    return total if found else None


# Pods and Prometheus are reached directly, never through an HTTP(S)_PROXY of the operator's environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, timeout: float) -> str:
    with _OPENER.open(url, timeout=timeout) as response:
        body: bytes = response.read(4 << 20)
        return body.decode("utf-8", "replace")


class ScrapeSource:
    """Scrapes each Ready pod concurrently; thread-safe (one instance serves every InferenceService)."""

    def __init__(self, url_template: str = DEFAULT_URL_TEMPLATE, timeout: float = 0.5, workers: int = 16):
        self.url_template = url_template
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loom-scrape")
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str, str], tuple[float, float]] = {}  # (ns, svc, pod) -> (t, v)

    def url(self, target: Target, pod: PodTarget) -> str:
        return self.url_template.format(
            pod_ip=pod.ip or "",
            port=target.port,
            path=target.path,
            pod=pod.name,
            namespace=target.namespace,
            name=target.name,
        )

    def _scrape(self, target: Target, pod: PodTarget) -> float | None:
        if not pod.ip and "{pod_ip}" in self.url_template:
            return None
        try:
            return metric_value(_get(self.url(target, pod), self.timeout), target.series)
        except (OSError, ValueError):
            return None

    def sample(self, target: Target, now: float) -> float | None:
        values = list(self._pool.map(lambda p: self._scrape(target, p), target.pods))
        if target.metric == ScalingMetric.RPS:
            return self._rates(target, values, now)
        answered = [v for v in values if v is not None]
        return sum(answered) if answered else None

    def _rates(self, target: Target, values: Sequence[float | None], now: float) -> float | None:
        total, any_rate = 0.0, False
        with self._lock:
            for pod, value in zip(target.pods, values, strict=True):
                key = (target.namespace, target.name, pod.name)
                if value is None:
                    continue
                previous = self._counters.get(key)
                self._counters[key] = (now, value)
                if previous is None or now <= previous[0]:
                    continue
                increase = value - previous[1] if value >= previous[1] else value  # counter reset
                total += increase / (now - previous[0])
                any_rate = True
            live = {p.name for p in target.pods}
            for key in [k for k in self._counters if k[:2] == (target.namespace, target.name)]:
                if key[2] not in live:
                    del self._counters[key]
        return total if any_rate else None

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            for key in [k for k in self._counters if k[:2] == (namespace, name)]:
                del self._counters[key]


class PrometheusSource:
    """An instant PromQL query giving the service's total; `$namespace` and `$name` are substituted."""

    def __init__(self, base_url: str, query: str, timeout: float = 2.0):
        self.base_url = base_url.rstrip("/")
        self.query = query
        self.timeout = timeout

    def query_for(self, target: Target) -> str:
        return self.query.replace("$namespace", target.namespace).replace("$name", target.name)

    def sample(self, target: Target, now: float) -> float | None:
        params = urllib.parse.urlencode({"query": self.query_for(target)})
        try:
            reply = json.loads(_get(f"{self.base_url}/api/v1/query?{params}", self.timeout))
        except (OSError, ValueError):
            return None
        if reply.get("status") != "success":
            return None
        data = reply.get("data") or {}
        if data.get("resultType") == "scalar":
            return float(data["result"][1])
        results = data.get("result") or []
        if not results:
            return None
        return sum(float(r["value"][1]) for r in results)

    def forget(self, namespace: str, name: str) -> None:
        return None
