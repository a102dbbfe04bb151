"""Metric sources against real HTTP servers on loopback: pod /metrics scraping and Prometheus' API."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loom.api.inferenceservice import ScalingMetric
from loom.autoscaling.sources import (
    PodTarget,
    PrometheusSource,
    ScrapeSource,
    Target,
    UnusableMetric,
    metric_value,
)

EXPOSITION = """# HELP loom_inflight_requests Requests being served.
# TYPE loom_inflight_requests gauge
loom_inflight_requests{model="ranker"} 3
loom_inflight_requests{model="other"} 2
# HELP loom_requests_total Requests served.
# TYPE loom_requests_total counter
loom_requests_total{code="200"} %d
loom_requests_total{code="500"} 0
"""


class Server:
    """Serves /<namespace>/<pod>/metrics from `pages` and /api/v1/query from `prometheus`."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        self.prometheus: object = {}
        self.queries: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                code = 200
                if url.path == "/api/v1/query":
                    outer.queries.append(urllib.parse.parse_qs(url.query)["query"][0])
                    reply = outer.prometheus
                    if isinstance(reply, tuple):  # (HTTP code, raw body)
                        code, text = reply
                        body, ctype = text.encode(), "application/json"
                    else:
                        body, ctype = json.dumps(reply).encode(), "application/json"
                elif url.path in outer.pages:
                    body, ctype = outer.pages[url.path].encode(), "text/plain; version=0.0.4"
                else:
                    self.send_error(404)
                    return
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()


def target(metric: ScalingMetric = ScalingMetric.CONCURRENCY, pods: tuple[str, ...] = ("a", "b")) -> Target:
    return Target("ns", "ranker", tuple(PodTarget(p, "10.0.0.1") for p in pods), metric)


def test_metric_value_sums_every_labelled_series() -> None:
    assert metric_value(EXPOSITION % 7, "loom_inflight_requests") == 5
    assert metric_value(EXPOSITION % 7, "loom_requests_total") == 7
    assert metric_value(EXPOSITION % 7, "vllm:num_requests_running") is None


def test_scrape_sums_concurrency_over_pods_and_skips_unreachable(server: Server) -> None:
    server.pages = {"/ns/a/metrics": EXPOSITION % 0, "/ns/b/metrics": EXPOSITION % 0}
    source = ScrapeSource(server.base + "/{namespace}/{pod}{path}")
    assert source.url(target(), PodTarget("a", None)) == server.base + "/ns/a/metrics"
    assert source.sample(target(), 0.0) == 10
    assert source.sample(target(pods=("a", "gone")), 0.0) == 5
    assert source.sample(target(pods=("gone",)), 0.0) is None


def test_scrape_rps_is_the_counter_rate_between_scrapes(server: Server) -> None:
    source = ScrapeSource(server.base + "/{namespace}/{pod}{path}")
    rps = target(ScalingMetric.RPS)
    server.pages = {"/ns/a/metrics": EXPOSITION % 100, "/ns/b/metrics": EXPOSITION % 1000}
    assert source.sample(rps, 10.0) is None  # one scrape gives no rate yet
    server.pages = {"/ns/a/metrics": EXPOSITION % 120, "/ns/b/metrics": EXPOSITION % 1040}
    assert source.sample(rps, 12.0) == pytest.approx(10 + 20)
    server.pages = {"/ns/a/metrics": EXPOSITION % 4, "/ns/b/metrics": EXPOSITION % 1040}  # a restarted
    assert source.sample(rps, 14.0) == pytest.approx(2 + 0)
    source.forget("ns", "ranker")
    assert source.sample(rps, 16.0) is None


def test_default_template_needs_a_pod_ip() -> None:
    source = ScrapeSource()
    assert source.url(target(), PodTarget("a", "10.1.2.3")) == "http://10.1.2.3:8080/metrics"
    assert source.sample(Target("ns", "x", (PodTarget("a", None),)), 0.0) is None


def test_prometheus_instant_query_substitutes_and_sums(server: Server) -> None:
    server.prometheus = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"pod": "a"}, "value": [1.0, "4.5"]},
                {"metric": {"pod": "b"}, "value": [1.0, "1.5"]},
            ],
        },
    }
    source = PrometheusSource(server.base, 'sum(inflight{namespace="$namespace",service="$name"})')
    assert source.sample(target(), 0.0) == 6.0
    assert server.queries[-1] == 'sum(inflight{namespace="ns",service="ranker"})'
    server.prometheus = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "7"]}}
    assert source.sample(target(), 0.0) == 7.0
    server.prometheus = {"status": "success", "data": {"resultType": "vector", "result": []}}
    assert source.sample(target(), 0.0) is None
    assert PrometheusSource("http://127.0.0.1:9", "up").sample(target(), 0.0) is None


def _vector(*values: str) -> dict[str, object]:
    result = [{"metric": {"pod": str(i)}, "value": [1.0, v]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


UNUSABLE = [
    pytest.param(_vector("NaN"), "InvalidValue", "NaN", id="vector-nan"),
    pytest.param(_vector("3", "+Inf"), "InvalidValue", "+Inf", id="vector-inf"),
    pytest.param(_vector("-Inf"), "InvalidValue", "-Inf", id="vector-minus-inf"),
    pytest.param(
        {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "NaN"]}},
        "InvalidValue",
        "NaN",
        id="scalar-nan",
    ),
    pytest.param(_vector("lots"), "MalformedReply", "'lots'", id="value-not-a-number"),
    pytest.param(
        {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}},
        "MalformedReply",
        "value",
        id="sample-without-value",
    ),
    pytest.param(
        {"status": "success", "data": {"resultType": "vector", "result": [{"value": "4"}]}},
        "MalformedReply",
        "value",
        id="value-not-a-pair",
    ),
    pytest.param(
        {"status": "success", "data": {"resultType": "scalar", "result": "4"}},
        "MalformedReply",
        "scalar",
        id="scalar-not-a-pair",
    ),
    pytest.param(
        {"status": "success", "data": {"resultType": "vector", "result": {"a": 1}}},
        "MalformedReply",
        "list",
        id="result-not-a-list",
    ),
    pytest.param(
        {"status": "success", "data": {"resultType": "matrix", "result": []}},
        "MalformedReply",
        "matrix",
        id="range-vector",
    ),
    pytest.param({"status": "success"}, "MalformedReply", "data", id="no-data"),
    pytest.param(["not", "an", "object"], "MalformedReply", "JSON object", id="json-list"),
    pytest.param((200, "<html>proxy login</html>"), "MalformedReply", "not JSON", id="not-json"),
    pytest.param(
        (400, json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error at char 4"})),
        "QueryFailed",
        "bad_data: parse error at char 4",
        id="query-error-400",
    ),
    pytest.param(
        {"status": "error", "errorType": "timeout", "error": "query timed out"},
        "QueryFailed",
        "timeout: query timed out",
        id="query-error-200",
    ),
]


@pytest.mark.parametrize(("reply", "reason", "text"), UNUSABLE)
def test_prometheus_replies_the_autoscaler_cannot_use_are_named(
    server: Server, reply: object, reason: str, text: str
) -> None:
    server.prometheus = reply
    with pytest.raises(UnusableMetric) as raised:
        PrometheusSource(server.base, "q").sample(target(), 0.0)
    assert raised.value.reason == reason
    assert text in raised.value.message and server.base in raised.value.message, raised.value.message


def test_scrape_ignores_pods_reporting_values_that_are_not_numbers(server: Server) -> None:
    inf = "# TYPE loom_inflight_requests gauge\nloom_inflight_requests +Inf\n"
    server.pages = {"/ns/a/metrics": EXPOSITION % 0, "/ns/b/metrics": inf}
    source = ScrapeSource(server.base + "/{namespace}/{pod}{path}")
    assert source.sample(target(), 0.0) == 5
    with pytest.raises(UnusableMetric) as raised:
        source.sample(target(pods=("b",)), 0.0)
    assert raised.value.reason == "InvalidValue" and "+Inf" in raised.value.message
