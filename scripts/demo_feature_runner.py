#!/usr/bin/env python3
"""The demo's kubelet for feature runs: KWOK runs no containers, so this runs them on the host.

`data DIR`: writes sample click events (Parquet, one file per day) for the clicks example.
`run --namespace NS`: watches the namespace's FeaturePipeline Job pods; for each Running one it runs the
pod's own command (`loom features run ...`) with the pod's env on this host, then hands the result to
the pod as a kubelet would: the exit code and the runtime's summary line as the container's termination
message (KWOK stages kwok.loom.ml/exit-code and kwok.loom.ml/termination-message). The operator reads
it from there, exactly as it does on a real cluster. A streaming pipeline's consumer pods (`loom features
stream`) get a host process each while the pod lives; their progress lines go to this runner's log.
`streaming-example FILE --redis URL`: the streaming example for the demo (SQL transform, local Redis).
`produce --redis URL --stream S --count N`: XADD N sample session events.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

LABEL = "loom.ml/featurepipeline"
EXIT_CODE = "kwok.loom.ml/exit-code"
MESSAGE = "kwok.loom.ml/termination-message"


def generate(directory: Path, *, days: int = 7, users: int = 2000, per_day: int = 20000) -> int:
    """Click events (user_id, event_time, dwell_ms): a day per file from 2026-11-01 on (the example's
    backfill), and the last 6 hours before now (what its hourly schedule picks up)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("clicks-*.parquet"):
        old.unlink()
    rng = np.random.default_rng(7)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    now = datetime.now(UTC).replace(microsecond=0)
    spans = [(start + timedelta(days=d), timedelta(days=1), per_day) for d in range(days)]
    spans.append((now - timedelta(hours=6), timedelta(hours=6), per_day // 4))
    total = 0
    for base, width, count in spans:
        micros = int(width.total_seconds() * 1_000_000)
        offsets = np.sort(rng.integers(0, micros, count))
        table = pa.table(
            {
                "user_id": pa.array(rng.integers(1, users + 1, count), pa.int64()),
                "event_time": pa.array(
                    int(base.timestamp() * 1_000_000) + offsets, pa.timestamp("us", tz="UTC")
                ),
                "dwell_ms": pa.array(rng.gamma(2.0, 900.0, count).round(1), pa.float64()),
            }
        )
        pq.write_table(table, directory / f"clicks-{base:%Y%m%dT%H%M}.parquet")
        total += count
    return total


def _kubectl(*args: str, input: str | None = None) -> str:
    kubectl = os.environ.get("KUBECTL", "kubectl")
    result = subprocess.run([kubectl, *args], capture_output=True, text=True, input=input, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:3])}: {result.stderr.strip()}")
    return result.stdout


def _env(pod: dict[str, Any], container: dict[str, Any], log: Path) -> dict[str, str]:
    env = dict(os.environ)
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[e["name"]] = pod["metadata"]["name"]
    env["LOOM_TERMINATION_LOG"] = str(log)  # the pod's /dev/termination-log
    return env


def run_pod(namespace: str, pod: dict[str, Any]) -> None:
    container = pod["spec"]["containers"][0]
    command = [*(container.get("command") or []), *(container.get("args") or [])]
    if command[:1] == ["loom"]:
        command = [sys.executable, "-m", "loom.cli", *command[1:]]
    with tempfile.TemporaryDirectory(prefix="loom-demo-run-") as tmp:
        log = Path(tmp) / "termination-log"
        started = time.monotonic()
        result = subprocess.run(command, env=_env(pod, container, log), capture_output=True, text=True)
        message = log.read_text() if log.exists() else (result.stdout.strip().splitlines() or [""])[-1]
    name = pod["metadata"]["name"]
    print(
        f"{datetime.now(UTC):%H:%M:%S} {name}: {' '.join(command[3:])} -> exit {result.returncode} "
        f"in {time.monotonic() - started:.1f} s: {message}",
        flush=True,
    )
    if result.returncode != 0 and result.stderr:
        print(result.stderr[-2000:], file=sys.stderr, flush=True)
    _kubectl(
        "annotate", "pod", "-n", namespace, name, "--overwrite",
        f"{EXIT_CODE}={result.returncode}", f"{MESSAGE}={message}",
    )  # fmt: skip


def start_consumer(pod: dict[str, Any]) -> subprocess.Popen[bytes]:
    """A stream consumer pod's process on this host, for as long as the pod lives (output to our log)."""
    container = pod["spec"]["containers"][0]
    command = [sys.executable, "-m", "loom.cli", *(container.get("args") or [])]
    env = _env(pod, container, Path(tempfile.mkdtemp(prefix="loom-demo-stream-")) / "termination-log")
    env["LOOM_STREAM_REPORT_EVERY"] = "5s"
    print(f"{datetime.now(UTC):%H:%M:%S} {pod['metadata']['name']}: loom features stream started", flush=True)
    return subprocess.Popen(command, env=env)


def watch(namespace: str, interval: float) -> None:
    """Run every Running feature-run pod once; keep a process for every live stream consumer pod."""
    done: set[str] = set()
    consumers: dict[str, subprocess.Popen[bytes]] = {}

    def stop(*_: Any) -> None:
        for proc in consumers.values():
            proc.terminate()  # a consumer stops cleanly on SIGTERM: its batch committed or given back
        for proc in consumers.values():
            proc.wait(timeout=30)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        items = json.loads(_kubectl("get", "pods", "-n", namespace, "-l", LABEL, "-o", "json"))["items"]
        live = {p["metadata"]["uid"] for p in items if not p["metadata"].get("deletionTimestamp")}
        for uid in [u for u in consumers if u not in live]:
            consumers.pop(uid).terminate()
        for pod in items:
            meta = pod["metadata"]
            args = pod["spec"]["containers"][0].get("args") or []
            if pod["status"].get("phase") != "Running" or meta["uid"] not in live:
                continue
            if args[:2] == ["features", "stream"] and meta["uid"] not in consumers:
                consumers[meta["uid"]] = start_consumer(pod)
            if (
                meta["uid"] in done
                or EXIT_CODE in (meta.get("annotations") or {})
                or args[:2] != ["features", "run"]
            ):
                continue
            done.add(meta["uid"])
            try:
                run_pod(namespace, pod)
            except (RuntimeError, OSError) as e:
                print(f"{meta['name']}: {e}", file=sys.stderr, flush=True)
        time.sleep(interval)


def streaming_example(path: Path, redis: str) -> str:
    """The streaming example for the demo: its source and sink on the demo's Redis, two consumers, and a
    SQL transform (the example's Python module is the user's own code, in their image)."""
    import yaml

    obj = yaml.safe_load(path.read_text())
    spec = obj["spec"]
    spec["source"]["redisStream"]["url"] = redis
    spec["sinks"]["online"]["redis"]["url"] = redis
    spec["streaming"]["consumers"] = 2
    spec["transform"] = {
        "sql": "SELECT session_id, ts, CAST(pages AS BIGINT) AS pages, CAST(dwell_ms AS DOUBLE) AS dwell_ms, "
        "country FROM source"
    }
    return str(yaml.safe_dump(obj, sort_keys=False))


def produce(redis: str, stream: str, count: int) -> None:
    """XADD `count` session events (session_id s-1..s-50, now-ish event times) to the stream."""
    import random

    import redis as redis_py

    client = redis_py.Redis.from_url(redis)
    rng = random.Random(7)
    now = datetime.now(UTC)
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        ts = now - timedelta(seconds=count - i)
        fields = {
            "session_id": f"s-{rng.randint(1, 50)}",
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "pages": str(rng.randint(1, 12)),
            "dwell_ms": f"{rng.gammavariate(2.0, 900.0):.1f}",
            "country": rng.choice(["de", "fr", "us", "jp"]),
        }
        pipe.xadd(stream, fields)  # type: ignore[arg-type]
    pipe.execute()
    print(f"{count} session events added to the Redis stream {stream}")


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="write sample click events")
    data.add_argument("directory", type=Path)
    run = commands.add_parser("run", help="play the kubelet for feature-run pods")
    run.add_argument("--namespace", "-n", required=True)
    run.add_argument("--interval", type=float, default=0.5)
    example = commands.add_parser("streaming-example", help="print the streaming example for the demo")
    example.add_argument("file", type=Path)
    example.add_argument("--redis", required=True)
    producer = commands.add_parser("produce", help="XADD sample session events")
    producer.add_argument("--redis", required=True)
    producer.add_argument("--stream", default="sessions")
    producer.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    if args.command == "data":
        print(f"{generate(args.directory)} click events in {args.directory}")
        return 0
    if args.command == "streaming-example":
        print(streaming_example(args.file, args.redis), end="")
        return 0
    if args.command == "produce":
        produce(args.redis, args.stream, args.count)
        return 0
    watch(args.namespace, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
