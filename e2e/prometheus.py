"""A real Prometheus server for tests: Debian's `prometheus` (installed by scripts/install-deps.sh) on a
free loopback port, scraping the given targets every second, optionally with rule files.

Used by the unit tests of the autoscaler's Prometheus source (operator/tests/test_prometheus_source.py)
and by the e2e suites that check the operator's and the GPU agent's series by PromQL. Never skips: a
missing binary fails with how to install it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get_json(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as r:
        return json.loads(r.read())


class PrometheusError(AssertionError):
    pass


class Prometheus:
    """`jobs`: job name -> scrape targets (host:port); `rule_files`: Prometheus rule files to load."""

    def __init__(
        self,
        workdir: Path,
        jobs: Mapping[str, Sequence[str]],
        *,
        rule_files: Sequence[Path] = (),
        interval: str = "1s",
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(targets)}]}
                for job, targets in jobs.items()
            ],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready: str | None = None, timeout: float = 60) -> Prometheus:
        """Start, and wait until it answers (and, with `ready`, until that query has a result)."""
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            raise PrometheusError(
                "no prometheus binary: install Debian's prometheus package (scripts/install-deps.sh)"
            )
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.wait(lambda: self._answers(ready), timeout, f"prometheus up{f' with {ready}' if ready else ''}")
        return self

    def _answers(self, query: str | None) -> bool:
        try:
            reply = _get_json(f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": query or "1"}))
        except OSError:
            return False
        return bool(reply["data"]["result"]) if query else reply.get("status") == "success"

    def wait(self, ready: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.process.returncode}:\n{self.logs()}")
            found = ready()
            if found:
                return found
            if time.monotonic() > deadline:
                raise PrometheusError(
                    f"timed out after {timeout}s waiting for {what}:\n{self.logs()[-3000:]}"
                )
            time.sleep(0.2)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """The instant vector (or scalar as one sample) a query gives now (or at `at`)."""
        params = {"query": promql, **({"time": str(at)} if at is not None else {})}
        reply = _get_json(f"{self.base}/api/v1/query?" + urllib.parse.urlencode(params))
        if reply.get("status") != "success":
            raise PrometheusError(f"query {promql!r}: {reply}")
        data = reply["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single value a query gives, or None without a series; two series are an error."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"query {promql!r} gave {len(result)} series, not one: {result}")
        return float(result[0]["value"][1])

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        params = {"query": promql, "start": str(start), "end": str(end), "step": str(step)}
        reply = _get_json(f"{self.base}/api/v1/query_range?" + urllib.parse.urlencode(params))
        if reply.get("status") != "success":
            raise PrometheusError(f"query_range {promql!r}: {reply}")
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = _get_json(f"{self.base}/api/v1/targets")["data"]["activeTargets"]
        return active

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
