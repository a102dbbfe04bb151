"""`loom features run` as a process: exit codes, the JSON summary last on stdout, termination log."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from loom.api.featurepipeline import FeaturePipeline
from loom.features.config import pipeline_json

LOOM = str(Path(sys.executable).with_name("loom"))
START, END = "2026-11-01T10:00:00Z", "2026-11-01T11:00:00Z"
T0 = dt.datetime(2026, 11, 1, 10, tzinfo=dt.UTC)


def events() -> pa.Table:
    return pa.Table.from_pylist(
        [{"user_id": u, "event_time": T0 + dt.timedelta(minutes=u), "dwell_ms": 1.0 * u} for u in range(5)]
    )


def write(pipeline: FeaturePipeline, tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    obj = {
        "apiVersion": "loom.ml/v1alpha1",
        "kind": "FeaturePipeline",
        **pipeline.model_dump(mode="json", exclude_none=True),
    }
    path.write_text(yaml.safe_dump(obj))
    return path


def loom(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [LOOM, "features", "run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no stdout; stderr: {proc.stderr}"
    return proc.returncode, json.loads(lines[-1]), proc.stderr


def test_run_prints_the_summary_last_and_writes_the_termination_log(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any, redis_db: Any, redis_url: str
) -> None:
    fp_events(events())
    path = write(fp_pipeline(redis_url=redis_url), tmp_path)
    log = tmp_path / "termination-log"
    rc, summary, _ = loom(
        "-f", str(path), "--start", START, "--end", END, env={"LOOM_TERMINATION_LOG": str(log)}
    )
    assert rc == 0
    assert {
        k: summary[k] for k in ("rows_in", "rows_out", "online_written", "offline_files", "watermark")
    } == {
        "rows_in": 5,
        "rows_out": 5,
        "online_written": 5,
        "offline_files": 1,
        "watermark": END,
    }
    assert summary["seconds"] >= 0 and summary["engine"] == "local"
    assert json.loads(log.read_text()) == summary
    assert redis_db.hget("user:3", "clicks") == b"1"


def test_pipeline_from_the_environment_as_the_controller_passes_it(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any
) -> None:
    fp_events(events())
    rc, summary, _ = loom("--start", START, "--end", END, env={"LOOM_PIPELINE": pipeline_json(fp_pipeline())})
    assert rc == 0 and summary["rows_out"] == 5


def test_bad_sql_exits_65_with_a_one_line_reason_and_no_traceback(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any
) -> None:
    fp_events(events())
    path = write(fp_pipeline(sql="SELEC user_id FROM source"), tmp_path)
    log = tmp_path / "termination-log"
    rc, summary, stderr = loom(
        "-f", str(path), "--start", START, "--end", END, env={"LOOM_TERMINATION_LOG": str(log)}
    )
    assert rc == 65
    assert summary["exit_code"] == 65
    assert summary["error"].startswith('transform SQL: Parser Error: syntax error at or near "SELEC"')
    assert summary["window"] == {"start": START, "end": END}
    assert "Traceback" not in stderr
    assert json.loads(log.read_text()) == summary
    assert not [p for p in tmp_path.joinpath("features").rglob("*") if p.is_file() and p.name != ".lock"]


def test_missing_source_exits_65(tmp_path: Path, fp_pipeline: Any) -> None:
    path = write(fp_pipeline(source=str(tmp_path / "none.parquet")), tmp_path)
    rc, summary, _ = loom("-f", str(path), "--start", START, "--end", END)
    assert rc == 65
    assert summary["error"] == f"source path {tmp_path / 'none.parquet'} does not exist"


def test_unreachable_redis_exits_69(tmp_path: Path, fp_pipeline: Any, fp_events: Any) -> None:
    fp_events(events())
    path = write(fp_pipeline(redis_url="redis://127.0.0.1:1/0"), tmp_path)
    rc, summary, _ = loom("-f", str(path), "--start", START, "--end", END)
    assert rc == 69
    assert summary["error"].startswith("redis redis://127.0.0.1:1/0 is unreachable")


def test_bad_window_and_bad_pipeline_file_exit_65(tmp_path: Path, fp_pipeline: Any) -> None:
    path = write(fp_pipeline(), tmp_path)
    rc, summary, _ = loom("-f", str(path), "--start", END, "--end", START)
    assert (rc, summary["error"]) == (65, f"window start {END} is not before its end {START}")
    rc, summary, _ = loom("-f", str(path), "--start", "2026-11-01T10:00:00", "--end", END)
    assert rc == 65 and "has no time zone" in summary["error"]
    (tmp_path / "broken.yaml").write_text("kind: FeaturePipeline\nspec: {source: {}}\n")
    rc, summary, _ = loom("-f", str(tmp_path / "broken.yaml"), "--start", START, "--end", END)
    assert rc == 65 and summary["error"].startswith(
        f"pipeline {tmp_path / 'broken.yaml'} is not a valid FeaturePipeline"
    )
    rc, summary, _ = loom("--start", START, "--end", END, env={"LOOM_PIPELINE": ""})
    assert rc == 65 and "LOOM_PIPELINE" in summary["error"]


def test_engines_not_built_yet_say_so(tmp_path: Path, fp_pipeline: Any, fp_events: Any) -> None:
    fp_events(events())
    path = write(fp_pipeline(), tmp_path)
    rc, summary, _ = loom("-f", str(path), "--start", START, "--end", END, "--engine", "spark")
    if rc == 0:  # the Spark adapter exists now
        assert summary["engine"] == "spark"
    else:
        assert (rc, summary["error"]) == (
            65,
            "engine spark is not built yet in this runtime; use --engine local",
        )


def test_the_operator_commands_do_not_load_the_data_libraries() -> None:
    code = (
        "import sys, loom.cli\n"
        "try:\n    loom.cli.main(['features', 'run', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyarrow', 'duckdb', 'redis')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]"


SLOW_TRANSFORM = """
import os, time
from pathlib import Path

def features(table):
    Path(os.environ["LOOM_TEST_MARKER"]).write_text("started")
    time.sleep(120)
    return table
"""


def test_sigterm_mid_run_leaves_the_dataset_as_it_was(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any
) -> None:
    fp_events(events())
    (tmp_path / "loom_test_slow.py").write_text(SLOW_TRANSFORM)
    path = write(fp_pipeline(sql="SELECT user_id, event_time FROM source"), tmp_path)
    assert loom("-f", str(path), "--start", START, "--end", END)[0] == 0
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "features").rglob("*.parquet"))
    path = write(fp_pipeline(python="loom_test_slow:features"), tmp_path)
    marker = tmp_path / "started"
    proc = subprocess.Popen(
        [LOOM, "features", "run", "-f", str(path), "--start", START, "--end", END],
        cwd=tmp_path,
        env={**os.environ, "LOOM_TEST_MARKER": str(marker)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for _ in range(600):
        if marker.exists() or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert marker.exists(), proc.communicate()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    after = sorted(p.relative_to(tmp_path) for p in (tmp_path / "features").rglob("*.parquet"))
    assert after == before
    staging = tmp_path / "features" / ".loom-staging"
    assert [p.name for p in staging.iterdir()] == [".lock"]
