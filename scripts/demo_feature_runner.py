#!/usr/bin/env python3
"""The demo's kubelet for feature runs: KWOK runs no containers, so this runs them on the host.

`data DIR`: writes sample click events (Parquet, one file per day) for the clicks example.
`run --namespace NS`: watches the namespace's FeaturePipeline Job pods; for each Running one it runs the
pod's own command (`loom features run ...`) with the pod's env on this host, then hands the result to
the pod as a kubelet would: the exit code and the runtime's summary line as the container's termination
message (KWOK stages kwok.loom.ml/exit-code and kwok.loom.ml/termination-message). The operator reads
it from there, exactly as it does on a real cluster.
"""

from __future__ import annotations

import argparse
import json
import os
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


def watch(namespace: str, interval: float) -> None:
    """Run every Running feature-run pod once (streaming consumers are not runs: they are left alone)."""
    done: set[str] = set()
    while True:
        items = json.loads(_kubectl("get", "pods", "-n", namespace, "-l", LABEL, "-o", "json"))["items"]
        for pod in items:
            meta = pod["metadata"]
            args = pod["spec"]["containers"][0].get("args") or []
            if (
                meta["uid"] in done
                or pod["status"].get("phase") != "Running"
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


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="write sample click events")
    data.add_argument("directory", type=Path)
    run = commands.add_parser("run", help="play the kubelet for feature-run pods")
    run.add_argument("--namespace", "-n", required=True)
    run.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    if args.command == "data":
        print(f"{generate(args.directory)} click events in {args.directory}")
        return 0
    watch(args.namespace, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
