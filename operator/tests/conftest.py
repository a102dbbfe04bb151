"""Fixtures shared by the unit tests: the sidecar binary under test, a tmpfs dir, a real redis-server."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def binary() -> str:
    """The loom-sidecar under test (LOOM_SIDECAR_BIN, else a release build); never skips."""
    env = os.environ.get("LOOM_SIDECAR_BIN")
    if env:
        if not os.access(env, os.X_OK):
            pytest.fail(f"LOOM_SIDECAR_BIN={env} is not an executable file")
        return env
    build = subprocess.run(
        [str(REPO / "sidecar_native/scripts/build.sh"), "release"],
        capture_output=True,
        text=True,
        check=False,
    )
    if build.returncode != 0:
        pytest.fail(f"building loom-sidecar failed:\n{build.stderr[-3000:]}")
    return build.stdout.strip().splitlines()[-1]


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A fresh directory on /dev/shm (tmpfs, like the pod's memory emptyDir)."""
    d = Path(tempfile.mkdtemp(prefix="loom-test-", dir="/dev/shm"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port for the session (no persistence): its URL, db 0.

    Debian's redis-server, installed by `make deps` (scripts/install-deps.sh); never skips.
    """
    import time

    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed: run `make deps` (scripts/install-deps.sh)")
    workdir = tmp_path_factory.mktemp("redis")
    port = _free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=open(workdir / "redis.log", "w"),  # noqa: SIM115 - the server's log lives as long as it
        stderr=subprocess.STDOUT,
    )
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redis-server did not start: {(workdir / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[Any]:
    """A redis.Redis client on the session's server, its database flushed before the test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


CLICKS_SQL = (
    "SELECT user_id, max(event_time) AS event_time, count(*) AS clicks, avg(dwell_ms) AS dwell_ms_avg "
    "FROM source GROUP BY user_id"
)


@pytest.fixture
def fp_pipeline(tmp_path: Path) -> Any:
    """Factory of FeaturePipelines over `tmp_path/events` into `tmp_path/features` (and Redis when given)."""
    from loom.api.featurepipeline import FeaturePipeline

    def make(
        *,
        sql: str | None = CLICKS_SQL,
        python: str | None = None,
        source: str | None = None,
        keys: tuple[str, ...] = ("user_id",),
        timestamp: str = "event_time",
        offline: bool = True,
        partition_by: tuple[str, ...] = ("date",),
        redis_url: str | None = None,
        prefix: str = "user:",
        ttl: int | None = None,
        name: str = "clicks",
    ) -> FeaturePipeline:
        sinks: dict[str, Any] = {}
        if offline:
            sinks["offline"] = {"path": str(tmp_path / "features"), "partitionBy": list(partition_by)}
        if redis_url:
            redis: dict[str, Any] = {"url": redis_url, "keyPrefix": prefix}
            if ttl:
                redis["ttlSeconds"] = ttl
            sinks["online"] = {"redis": redis}
        transform = {"python": python} if python else {"sql": sql}
        return FeaturePipeline.model_validate(
            {
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "source": {
                        "parquet": {"path": source or str(tmp_path / "events")},
                        "timestampField": timestamp,
                        "entityKeys": list(keys),
                    },
                    "transform": transform,
                    "schedule": "0 * * * *",
                    "sinks": sinks,
                },
            }
        )

    return make


@pytest.fixture
def fp_events(tmp_path: Path) -> Any:
    """Writes a pyarrow Table (or rows) as Parquet file `name` under `tmp_path/events`; returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(data: Any, name: str = "part-0.parquet", row_group_size: int | None = None) -> Path:
        table = data if isinstance(data, pa.Table) else pa.Table.from_pylist(data)
        path = tmp_path / "events" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=row_group_size)
        return path

    return write
