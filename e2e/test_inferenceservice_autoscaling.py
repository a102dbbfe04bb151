"""InferenceService autoscaling e2e: KWOK pods run no containers, so a loopback HTTP server the test
controls plays every pod's /metrics (through the operator's real scrape source, pointed at it with
LOOM_METRICS_URL_TEMPLATE) and a Prometheus /api/v1/query endpoint.

The test sets a total demand (in-flight requests) per service; each Ready pod reports its share.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from e2e.pools import Pool
from e2e.support import Operator, apply_yaml, core, free_port, get_cr
from e2e.test_inferenceservice import condition, events, isvc, status, wait_for

pytestmark = pytest.mark.timeout(120)


class LoadServer:
    """Per-pod Prometheus text at /<namespace>/<service>/<pod>/metrics, Prometheus' API at /api/v1/query."""

    def __init__(self) -> None:
        self.demand: dict[tuple[str, str], float] = {}
        self.ready: dict[tuple[str, str], int] = {}
        self.scrapes = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                parts = url.path.strip("/").split("/")
                if url.path == "/api/v1/query":
                    query = urllib.parse.parse_qs(url.query)["query"][0]
                    found = re.search(r'namespace="([^"]+)",service="([^"]+)"', query)
                    key = (found.group(1), found.group(2)) if found else ("", "")
                    value = outer.demand.get(key, 0.0)
                    result = [{"metric": {}, "value": [time.time(), str(value)]}]
                    body = json.dumps(
                        {"status": "success", "data": {"resultType": "vector", "result": result}}
                    )
                elif len(parts) == 4 and parts[3] == "metrics":
                    key = (parts[0], parts[1])
                    outer.scrapes += 1
                    share = outer.demand.get(key, 0.0) / max(1, outer.ready.get(key, 1))
                    body = f"# TYPE loom_inflight_requests gauge\nloom_inflight_requests {share}\n"
                else:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.template = f"http://127.0.0.1:{self.port}/{{namespace}}/{{name}}/{{pod}}/metrics"
        self._stop = threading.Event()
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        threading.Thread(target=self._count_ready, daemon=True).start()

    def _count_ready(self) -> None:
        """Keep each service's Ready pod count current, so the demand splits as a load balancer would."""
        while not self._stop.wait(0.2):
            for ns, name in list(self.demand):
                pods = core().list_namespaced_pod(ns, label_selector=f"loom.ml/inferenceservice={name}").items
                self.ready[(ns, name)] = sum(
                    1
                    for p in pods
                    if not p.metadata.deletion_timestamp
                    and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
                )

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def load(operator: Operator) -> Iterator[LoadServer]:
    server = LoadServer()
    if operator.extra_env.get("LOOM_METRICS_URL_TEMPLATE") != server.template:
        operator.extra_env["LOOM_METRICS_URL_TEMPLATE"] = server.template
        operator.restart()
    yield server
    server.stop()


def spec_replicas(ns: str, name: str) -> int | None:
    obj = get_cr("inferenceservices", ns, name) or {}
    value: int | None = obj.get("spec", {}).get("replicas")
    return value


def scaled(**scaling: Any) -> dict[str, Any]:
    base = {
        "autoscaler": "loom",
        "metric": "concurrency",
        "target": 10,
        "stableWindowSeconds": 6,
        "panicWindowSeconds": 2,
        "tolerance": 0.0,
    }
    return {**base, **scaling}


def test_load_step_scales_up_in_the_panic_window_and_down_after_the_stable_window(
    load: LoadServer, operator: Operator, namespace: str, pool: Pool
) -> None:
    key = (namespace, "ranker")
    load.demand[key] = 8.0
    apply_yaml(isvc("ranker", pool, replicas=1, minReplicas=1, maxReplicas=6, scaling=scaled()), namespace)
    wait_for(
        lambda: condition(namespace, "ranker", "ScalingActive").get("status") == "True", what="metrics flow"
    )
    time.sleep(2)
    assert spec_replicas(namespace, "ranker") == 1  # 8 in flight, target 10: one pod

    load.demand[key] = 80.0  # a 10x step
    step = time.monotonic()
    wait_for(
        lambda: (spec_replicas(namespace, "ranker") or 0) > 1, timeout=10, interval=0.05, what="scale-up"
    )
    up = time.monotonic() - step
    assert up <= 2 + 1.5, f"scale-up took {up:.1f}s: beyond the 2 s panic window plus a tick"
    wait_for(lambda: spec_replicas(namespace, "ranker") == 6, what="max replicas")
    wait_for(lambda: status(namespace, "ranker").get("readyReplicas") == 6, what="6 pods Ready")
    decision = status(namespace, "ranker")["autoscaling"]["lastDecision"]
    assert decision["mode"] == "panic" and decision["toReplicas"] == 6
    time.sleep(2)
    assert spec_replicas(namespace, "ranker") == 6  # demand wants 8: clamped to maxReplicas

    load.demand[key] = 0.0
    drop = time.monotonic()
    seen = [6]

    def at_min() -> bool:
        n = spec_replicas(namespace, "ranker") or 0
        if n != seen[-1]:
            seen.append(n)
        return n == 1

    wait_for(at_min, timeout=30, interval=0.1, what="scale-down to minReplicas")
    down = time.monotonic() - drop
    assert down >= 4.5, f"at min {down:.1f}s after the drop: before the 6 s stable window drained"
    assert all(b >= a // 2 for a, b in itertools.pairwise(seen)), f"faster than 2x per step: {seen}"
    time.sleep(3)
    assert spec_replicas(namespace, "ranker") == 1  # never below minReplicas
    reasons = [r for r, _ in events(namespace, "ranker")]
    assert "ScaledUp" in reasons and "ScaledDown" in reasons
    text = operator.metrics()
    assert (
        f'loom_autoscaler_decisions_total{{direction="up",mode="panic",name="ranker",namespace="{namespace}"}}'
        in text
    )
    assert f'loom_inferenceservice_replicas{{name="ranker",namespace="{namespace}",state="ready"}}' in text


def test_prometheus_source_scales_to_zero_and_back(
    load: LoadServer, operator: Operator, namespace: str, pool: Pool
) -> None:
    key = (namespace, "ranker")
    load.demand[key] = 0.0
    query = 'sum(loom_inflight_requests{namespace="$namespace",service="$name"})'
    scaling = scaled(
        prometheus={"url": f"http://127.0.0.1:{load.port}", "query": query}, scaleToZeroGracePeriodSeconds=2
    )
    apply_yaml(isvc("ranker", pool, replicas=1, minReplicas=0, maxReplicas=3, scaling=scaling), namespace)
    wait_for(lambda: spec_replicas(namespace, "ranker") == 0, timeout=30, what="scaled to zero")
    wait_for(
        lambda: condition(namespace, "ranker", "Ready").get("reason") == "ScaledToZero", what="ScaledToZero"
    )
    wait_for(lambda: status(namespace, "ranker").get("replicas") == 0, what="no pods")

    load.demand[key] = 25.0
    wait_for(lambda: spec_replicas(namespace, "ranker") == 3, timeout=15, what="scale from zero")
    wait_for(lambda: status(namespace, "ranker").get("readyReplicas") == 3, what="3 pods Ready")


def test_a_prometheus_value_that_is_not_a_number_holds_the_scale(
    load: LoadServer, operator: Operator, namespace: str, pool: Pool
) -> None:
    """Prometheus answers NaN for a rate over no samples or 0/0: that is no data, not zero load, so
    a service allowed to scale to zero keeps its replicas and says why."""
    key = (namespace, "ranker")
    load.demand[key] = float("nan")
    query = 'sum(loom_inflight_requests{namespace="$namespace",service="$name"})'
    scaling = scaled(
        prometheus={"url": f"http://127.0.0.1:{load.port}", "query": query}, scaleToZeroGracePeriodSeconds=1
    )
    apply_yaml(isvc("ranker", pool, replicas=2, minReplicas=0, maxReplicas=3, scaling=scaling), namespace)
    held = wait_for(
        lambda: (c := condition(namespace, "ranker", "ScalingActive")).get("reason") == "InvalidValue" and c,
        what="ScalingActive False for the NaN",
    )
    assert held["status"] == "False" and "NaN" in held["message"] and "holding 2 replicas" in held["message"]
    time.sleep(4)  # past the stable window and the scale-to-zero grace
    assert spec_replicas(namespace, "ranker") == 2
    assert "MetricUnusable" in [r for r, _ in events(namespace, "ranker")]
    labels = f'name="ranker",namespace="{namespace}",reason="InvalidValue"'
    assert f"loom_autoscaler_unusable_samples_total{{{labels}}}" in operator.metrics()

    load.demand[key] = 0.0  # real data again: a real zero scales to zero
    wait_for(lambda: spec_replicas(namespace, "ranker") == 0, timeout=30, what="scaled to zero on real data")
    assert condition(namespace, "ranker", "ScalingActive")["status"] == "True"
