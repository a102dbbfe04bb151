"""PrometheusSource against a real Prometheus server (Debian's `prometheus`, installed by
scripts/install-deps.sh, started by e2e/prometheus.py) on a free loopback port, scraping a small
exporter this test serves."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from e2e.prometheus import Prometheus, free_port
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from loom.autoscaling.sources import PodTarget, PrometheusSource, Target, UnusableMetric

pytestmark = pytest.mark.timeout(120)


class Exporter:
    """What the serving pods would expose: in-flight requests per pod of one service."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.inflight = Gauge(
            "loom_inflight_requests",
            "Requests in flight.",
            ["namespace", "service", "pod"],
            registry=self.registry,
        )
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Exporter]]:
    exporter = Exporter()
    exporter.inflight.labels("ns", "ranker", "a").set(3)
    exporter.inflight.labels("ns", "ranker", "b").set(4.5)
    exporter.inflight.labels("ns", "idle", "c").set(0)
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), {"pods": [f"127.0.0.1:{exporter.port}"]})
    try:
        server.start(ready="count(loom_inflight_requests)")  # up, and the exporter scraped at least once
        yield server.base, exporter
    finally:
        server.stop()
        exporter.server.shutdown()


def target(name: str = "ranker") -> Target:
    return Target("ns", name, (PodTarget("a", None),))


def sample(base: str, query: str, name: str = "ranker") -> float | None:
    return PrometheusSource(base, query).sample(target(name), time.time())


def test_a_vector_is_summed_and_names_are_substituted(prometheus: tuple[str, Exporter]) -> None:
    base, _ = prometheus
    query = 'loom_inflight_requests{namespace="$namespace",service="$name"}'
    assert sample(base, query) == 7.5
    assert sample(base, f"sum({query})") == 7.5
    assert sample(base, f"sum({query})", "idle") == 0.0
    assert sample(base, "scalar(sum(loom_inflight_requests))") == 7.5


def test_no_series_is_no_data(prometheus: tuple[str, Exporter]) -> None:
    base, _ = prometheus
    assert sample(base, 'sum(rate(http_requests_total{service="$name"}[30s]))') is None


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        pytest.param('sum(loom_inflight_requests{service="$name"}) / 0 * 0', "NaN", id="zero-over-zero"),
        pytest.param('sum(loom_inflight_requests{service="$name"}) / 0', "+Inf", id="over-zero"),
        pytest.param('-sum(loom_inflight_requests{service="$name"}) / 0', "-Inf", id="negative-over-zero"),
        pytest.param("scalar(vector(0) / 0)", "NaN", id="scalar-nan"),
    ],
)
def test_values_that_are_not_numbers_are_unusable(
    prometheus: tuple[str, Exporter], query: str, shown: str
) -> None:
    base, _ = prometheus
    with pytest.raises(UnusableMetric) as raised:
        sample(base, query)
    assert raised.value.reason == "InvalidValue"
    assert shown in raised.value.message


def test_a_bad_query_reports_what_prometheus_said(prometheus: tuple[str, Exporter]) -> None:
    base, _ = prometheus
    with pytest.raises(UnusableMetric) as raised:
        sample(base, "sum(rate(loom_inflight_requests[30s])")
    assert raised.value.reason == "QueryFailed"
    assert "bad_data" in raised.value.message and "parse error" in raised.value.message


def test_a_range_vector_is_not_an_instant_value(prometheus: tuple[str, Exporter]) -> None:
    base, _ = prometheus
    with pytest.raises(UnusableMetric) as raised:
        sample(base, "loom_inflight_requests[10s]")
    assert raised.value.reason == "MalformedReply" and "matrix" in raised.value.message
