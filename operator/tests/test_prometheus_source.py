"""PrometheusSource against a real Prometheus server (Debian's `prometheus`, installed by
scripts/install-deps.sh) on a free loopback port, scraping a small exporter this test serves."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from loom.autoscaling.sources import PodTarget, PrometheusSource, Target, UnusableMetric

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
        self.port = _free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Exporter]]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail("no prometheus binary: install Debian's prometheus package (scripts/install-deps.sh)")
    exporter = Exporter()
    exporter.inflight.labels("ns", "ranker", "a").set(3)
    exporter.inflight.labels("ns", "ranker", "b").set(4.5)
    exporter.inflight.labels("ns", "idle", "c").set(0)
    work = tmp_path_factory.mktemp("prometheus")
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"- job_name: pods\n  static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]\n"
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # up, and the exporter scraped at least once
            if proc.poll() is not None:
                pytest.fail(
                    f"prometheus exited with {proc.returncode}:\n{(work / 'prometheus.log').read_text()}"
                )
            try:
                reply = _get_json(f"{base}/api/v1/query?query=count(loom_inflight_requests)")
                if isinstance(reply, dict) and reply["data"]["result"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"prometheus never scraped the exporter:\n{(work / 'prometheus.log').read_text()}"
                )
            time.sleep(0.2)
        yield base, exporter
    finally:
        proc.terminate()
        proc.wait(20)
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
