"""Metric sources: where the autoscaler's observation comes from. They do HTTP I/O to the pods or to
Prometheus, never to the Kubernetes API server.

- `ScrapeSource` reads each Ready pod's Prometheus text endpoint (parsed with prometheus_client's
  parser): a gauge of in-flight requests for `concurrency`, a request counter for `rps` (the rate is
  taken between two scrapes of the same pod). The URL comes from a template, by default
  `http://{pod_ip}:{port}{path}`; tests point it at a loopback server with `{namespace}/{pod}`.
- `PrometheusSource` runs an instant query (`/api/v1/query`) giving the service's total.

A sample is a finite number, None (no data: nothing answered, or no series), or `UnusableMetric`
raised with a reason and a message: a value that is not a number (Prometheus answers NaN for a rate
over no samples or 0/0, +Inf for x/0), a reply that is not what the API documents, or a query
Prometheus refused. The autoscaler holds the scale on all three; only the last two are errors.
"""

from __future__ import annotations

import json
import math
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

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


class UnusableMetric(Exception):
    """A metric reply the autoscaler cannot use. `reason` is CamelCase (the ScalingActive condition's
    reason, the loom_autoscaler_unusable_samples_total label): InvalidValue, MalformedReply or
    QueryFailed; `message` says what was wrong and where."""

    REASONS = ("InvalidValue", "MalformedReply", "QueryFailed")

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def _shown(value: float) -> str:
    return "NaN" if math.isnan(value) else "+Inf" if value > 0 else "-Inf"


def finite(value: float, where: str) -> float:
    """`value`, or UnusableMetric when it is NaN or infinite."""
    if math.isfinite(value):
        return value
    hint = " (Prometheus answers NaN for a rate over no samples or 0/0)" if math.isnan(value) else ""
    raise UnusableMetric("InvalidValue", f"{where} gave {_shown(value)}, not a number of requests{hint}")


class MetricSource(Protocol):
    """Knative's metric client, in two methods: a sample of the service's total, and forgetting it."""

    def sample(self, target: Target, now: float) -> float | None:
        """The metric summed over the service (in-flight requests, or requests per second); None when
        nothing could be read; UnusableMetric when what was read is not a usable number."""
        ...

    def forget(self, namespace: str, name: str) -> None: ...


def metric_value(text: str, series: str) -> float | None:
    """Sum of every finite sample of `series` (any labels) in a Prometheus text exposition; None if
    absent; UnusableMetric if every sample of it is NaN or infinite."""
    total, found, odd = 0.0, False, None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != series:
                continue
            if math.isfinite(sample.value):
                total += sample.value
                found = True
            else:
                odd = sample.value
    if not found and odd is not None:
        finite(odd, series)
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

    def _scrape(self, target: Target, pod: PodTarget) -> float | UnusableMetric | None:
        if not pod.ip and "{pod_ip}" in self.url_template:
            return None
        url = self.url(target, pod)
        try:
            return metric_value(_get(url, self.timeout), target.series)
        except UnusableMetric as e:
            return UnusableMetric(e.reason, f"pod {pod.name} ({url}): {e.message}")
        except (OSError, ValueError):
            return None

    def sample(self, target: Target, now: float) -> float | None:
        """Pods whose values are not numbers count as not answering; if none answered and some
        gave such values, the first of them is raised."""
        results = list(self._pool.map(lambda p: self._scrape(target, p), target.pods))
        values = [None if isinstance(r, UnusableMetric) else r for r in results]
        if target.metric == ScalingMetric.RPS:
            total = self._rates(target, values, now)
        else:
            answered = [v for v in values if v is not None]
            total = sum(answered) if answered else None
        unusable = [r for r in results if isinstance(r, UnusableMetric)]
        if total is None and unusable:
            raise unusable[0]
        return total

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
        query = self.query_for(target)
        where = f"{self.base_url} query {query!r}"
        params = urllib.parse.urlencode({"query": query})
        try:
            text = _get(f"{self.base_url}/api/v1/query?{params}", self.timeout)
        except urllib.error.HTTPError as e:  # Prometheus answers 400/422/503 with an error object
            text = e.read(64 << 10).decode("utf-8", "replace")
            if not _is_error_reply(text):
                return None  # not Prometheus speaking (a proxy, a restart): no data this tick
        except OSError:
            return None
        try:
            reply = json.loads(text)
        except ValueError:
            raise UnusableMetric("MalformedReply", f"{where}: the reply is not JSON: {text[:80]!r}") from None
        return instant_value(reply, where)

    def forget(self, namespace: str, name: str) -> None:
        return None


def _is_error_reply(text: str) -> bool:
    try:
        reply = json.loads(text)
    except ValueError:
        return False
    return isinstance(reply, dict) and reply.get("status") == "error"


def _number(pair: Any, where: str, what: str) -> float:
    """The value of a Prometheus [time, "value"] pair, checked."""
    if not isinstance(pair, list) or len(pair) != 2:
        raise UnusableMetric("MalformedReply", f"{where}: {what} is not a [time, value] pair: {pair!r:.80}")
    try:
        value = float(pair[1])
    except (TypeError, ValueError):
        raise UnusableMetric("MalformedReply", f"{where}: {what} {pair[1]!r:.40} is not a number") from None
    return finite(value, where)


def instant_value(reply: Any, where: str) -> float | None:
    """The total of an /api/v1/query reply: a scalar, or the sum of an instant vector (None when it
    has no series). Anything else raises UnusableMetric naming what was wrong."""
    if not isinstance(reply, dict):
        raise UnusableMetric("MalformedReply", f"{where}: the reply is not a JSON object: {reply!r:.80}")
    if reply.get("status") == "error":
        error = f"{reply.get('errorType', 'error')}: {reply.get('error', '')}"
        raise UnusableMetric("QueryFailed", f"{where}: Prometheus refused the query: {error}")
    data = reply.get("data")
    if reply.get("status") != "success" or not isinstance(data, dict):
        raise UnusableMetric("MalformedReply", f"{where}: no data in the reply: {reply!r:.120}")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _number(result, where, "the scalar")
    if kind != "vector":
        raise UnusableMetric(
            "MalformedReply",
            f"{where}: the query gives a {kind}, not an instant vector or a scalar "
            "(aggregate it, e.g. sum(rate(x[1m])) instead of x[1m])",
        )
    if not isinstance(result, list):
        raise UnusableMetric("MalformedReply", f"{where}: the vector is not a list: {result!r:.80}")
    if not result:
        return None
    values = [
        _number(r.get("value") if isinstance(r, dict) else r, where, "a sample's value") for r in result
    ]
    return sum(values)
