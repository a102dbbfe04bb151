"""One window end to end on the local engine: real Parquet in, real Parquet and a real Redis out."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from loom.api.featurepipeline import FeaturePipeline
from loom.features import source as source_mod
from loom.features import transform
from loom.features.config import make_window
from loom.features.errors import EX_DATAERR, EX_UNAVAILABLE, PipelineError
from loom.features.run import run_window

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 1, 10, tzinfo=UTC)
WINDOW = make_window("2026-11-01T10:00:00Z", "2026-11-01T11:00:00Z")


def clicks(minutes_by_user: dict[int, list[float]], tz: str | None = "UTC") -> pa.Table:
    rows = [
        {
            "user_id": u,
            "event_time": T0 + dt.timedelta(minutes=m),
            "dwell_ms": 10.0 * (i + 1),
            "page": f"p{i}",
        }
        for u, ms in minutes_by_user.items()
        for i, m in enumerate(ms)
    ]
    t = pa.Table.from_pylist(rows)
    if tz is None:
        t = t.set_column(1, "event_time", pa.array([r["event_time"].replace(tzinfo=None) for r in rows]))
    return t


def offline_rows(tmp_path: Path) -> list[dict[str, Any]]:
    t = ds.dataset(tmp_path / "features", format="parquet", partitioning="hive").to_table()
    return sorted(t.to_pylist(), key=lambda r: (r["user_id"], r["event_time"]))


def offline_files(tmp_path: Path) -> list[str]:
    root = tmp_path / "features"
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet") if ".loom-staging" not in p.parts)


def test_sql_window_into_parquet_and_redis(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any, redis_db: Any, redis_url: str
) -> None:
    fp_events(clicks({1: [1, 2, 59.5], 2: [30], 3: [-1, 60, 61]}))  # user 3 only outside the window
    summary = run_window(fp_pipeline(redis_url=redis_url, ttl=600), WINDOW).to_dict()
    assert summary["rows_in"] == 4
    assert summary["rows_out"] == 2
    assert summary["online_written"] == 2
    assert summary["offline_files"] == 1
    assert summary["watermark"] == "2026-11-01T11:00:00Z"
    assert summary["newest_event"] == "2026-11-01T10:59:30Z"
    assert summary["window"] == {"start": "2026-11-01T10:00:00Z", "end": "2026-11-01T11:00:00Z"}
    assert summary["engine"] == "local"
    assert offline_files(tmp_path) == ["date=2026-11-01/w20261101T100000Z-20261101T110000Z-00000.parquet"]
    rows = offline_rows(tmp_path)
    assert [(r["user_id"], r["clicks"], r["dwell_ms_avg"], r["date"]) for r in rows] == [
        (1, 3, 20.0, "2026-11-01"),
        (2, 1, 10.0, "2026-11-01"),
    ]
    assert redis_db.hgetall("user:1") == {
        b"_ts:clicks": str(int((T0 + dt.timedelta(minutes=59.5)).timestamp() * 1e6)).encode(),
        b"clicks": b"3",
        b"dwell_ms_avg": b"20",
    }
    assert 590 <= redis_db.ttl("user:1") <= 600
    assert not redis_db.exists("user:3")


def test_rerun_is_idempotent_and_late_data_lands(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any, redis_db: Any, redis_url: str
) -> None:
    pipeline = fp_pipeline(redis_url=redis_url)
    fp_events(clicks({1: [1, 2]}))
    run_window(pipeline, WINDOW)
    fp_events(clicks({1: [5]}), name="late.parquet")  # an event that reached the source late
    summary = run_window(pipeline, WINDOW)
    assert summary.online_written == 1
    assert [r["clicks"] for r in offline_rows(tmp_path)] == [3]
    assert len(offline_files(tmp_path)) == 1
    assert redis_db.hget("user:1", "clicks") == b"3"


def test_naive_timestamps_are_utc_and_sources_by_directory_glob_or_file(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any
) -> None:
    path = fp_events(clicks({1: [1], 2: [2]}, tz=None))
    for src in (str(tmp_path / "events"), str(tmp_path / "events" / "*.parquet"), str(path)):
        summary = run_window(fp_pipeline(source=src), WINDOW)
        assert (summary.rows_in, summary.rows_out) == (2, 2), src
    assert offline_rows(tmp_path)[0]["event_time"] == (T0 + dt.timedelta(minutes=1)).replace(tzinfo=None)


def test_hive_partitioned_source_directory(tmp_path: Path, fp_pipeline: Any) -> None:
    table = clicks({1: [1], 2: [2]}).append_column("region", pa.array(["eu", "us"]))
    ds.write_dataset(
        table, tmp_path / "events", format="parquet", partitioning=["region"], partitioning_flavor="hive"
    )
    sql = "SELECT user_id, event_time, region FROM source"
    run_window(fp_pipeline(sql=sql), WINDOW)
    assert [r["region"] for r in offline_rows(tmp_path)] == ["eu", "us"]


PY_TRANSFORM = """
import pyarrow as pa
import pyarrow.compute as pc

CALLS = []

def features(table: pa.Table) -> pa.Table:
    CALLS.append(table.num_rows)
    out = table.group_by("user_id").aggregate([("event_time", "max"), ("dwell_ms", "sum")])
    return out.rename_columns(["user_id", "event_time", "dwell_total"])

def broken(table):
    raise ValueError("no good")

def not_a_table(table):
    return {"user_id": [1]}
"""


@pytest.fixture
def py_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "loom_test_features.py").write_text(textwrap.dedent(PY_TRANSFORM))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import loom_test_features  # type: ignore[import-not-found]

    return importlib.reload(loom_test_features)


def test_python_transform_small_window_is_one_call(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any, py_module: Any, redis_db: Any, redis_url: str
) -> None:
    fp_events(clicks({1: [1, 2], 2: [3]}))
    summary = run_window(fp_pipeline(python="loom_test_features:features", redis_url=redis_url), WINDOW)
    assert py_module.CALLS == [3]
    assert (summary.rows_in, summary.rows_out, summary.online_written) == (3, 2, 2)
    assert redis_db.hget("user:1", "dwell_total") == b"30"


def test_python_transform_on_a_large_window_runs_per_entity_bucket_with_the_same_rows(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any, py_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp_events(clicks({u: [u % 50, (u * 7) % 60] for u in range(400)}))
    pipeline = fp_pipeline(python="loom_test_features:features")
    run_window(pipeline, WINDOW)
    whole = offline_rows(tmp_path)
    assert py_module.CALLS == [800]
    py_module.CALLS.clear()
    monkeypatch.setenv("LOOM_PARTITION_ROWS", "100")
    summary = run_window(pipeline, WINDOW)
    assert len(py_module.CALLS) == 8
    assert max(py_module.CALLS) < 200  # bounded by the bucket size, not the window
    assert sum(py_module.CALLS) == summary.rows_in == 800
    assert offline_rows(tmp_path) == whole
    assert summary.offline_files == len(offline_files(tmp_path)) == 8


# --- bad input: exit 65, nothing written -----------------------------------------------------


def bad(pipeline: FeaturePipeline, tmp_path: Path, redis_db: Any | None = None) -> str:
    with pytest.raises(PipelineError) as err:
        run_window(pipeline, WINDOW)
    assert err.value.exit_code == EX_DATAERR, err.value.message
    assert "\n" not in err.value.message
    assert offline_files(tmp_path) == []
    staging = tmp_path / "features" / ".loom-staging"
    assert not staging.exists() or [p.name for p in staging.iterdir()] in ([], [".lock"])
    if redis_db is not None:
        assert redis_db.dbsize() == 0
    return err.value.message


def test_missing_column_in_the_source(tmp_path: Path, fp_pipeline: Any, fp_events: Any) -> None:
    fp_events(clicks({1: [1]}))
    message = bad(fp_pipeline(keys=("account_id",)), tmp_path)
    assert message.startswith("column account_id is not in source ")
    assert "its columns: user_id, event_time, dwell_ms, page" in message


def test_missing_column_in_the_sql(tmp_path: Path, fp_pipeline: Any, fp_events: Any) -> None:
    fp_events(clicks({1: [1]}))
    message = bad(fp_pipeline(sql="SELECT user_id, event_time, clicks FROM source"), tmp_path)
    assert message.startswith("transform SQL: Binder Error: Referenced column")
    assert '"clicks"' in message
    assert "(at line 1, column 29:" in message


def test_sql_that_does_not_parse_names_the_position(tmp_path: Path, fp_pipeline: Any, fp_events: Any) -> None:
    fp_events(clicks({1: [1]}))
    message = bad(fp_pipeline(sql="SELECT user_id,\n  event_time FORM source"), tmp_path)
    assert message.startswith("transform SQL: Parser Error: syntax error at or near")
    assert "(at line 2, column 19:" in message


def test_null_entity_key_counts_rows_and_shows_one(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any, redis_db: Any, redis_url: str
) -> None:
    fp_events(clicks({1: [1, 2], 2: [3]}))
    sql = "SELECT CASE WHEN user_id = 1 THEN NULL ELSE user_id END AS user_id, event_time, page FROM source"
    message = bad(fp_pipeline(sql=sql, redis_url=redis_url), tmp_path, redis_db)
    assert message.startswith("2 rows of the output with null user_id, e.g. {")
    assert '"user_id":null' in message and '"page":"p0"' in message


def test_null_entity_keys_are_counted_across_batches(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp_events(clicks({u: [1] for u in range(1000)}))
    monkeypatch.setattr(transform, "BATCH_ROWS", 64)
    sql = "SELECT CASE WHEN user_id % 10 = 0 THEN NULL ELSE user_id END AS user_id, event_time FROM source"
    assert bad(fp_pipeline(sql=sql), tmp_path).startswith("100 rows of the output with null user_id")


def test_timestamp_field_not_a_timestamp_in_the_source(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any
) -> None:
    fp_events([{"user_id": 1, "event_time": "2026-11-01T10:00:00Z"}])
    message = bad(fp_pipeline(), tmp_path)
    assert message.startswith("timestampField event_time of source ")
    assert message.endswith(" is string, not a timestamp")


def test_timestamp_field_not_a_timestamp_in_the_output(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any
) -> None:
    fp_events(clicks({1: [1]}))
    message = bad(
        fp_pipeline(sql="SELECT user_id, CAST(event_time AS VARCHAR) AS event_time FROM source"), tmp_path
    )
    assert message.startswith("transform output column event_time is string, not a timestamp")


def test_output_without_the_entity_key(tmp_path: Path, fp_pipeline: Any, fp_events: Any) -> None:
    fp_events(clicks({1: [1]}))
    message = bad(fp_pipeline(sql="SELECT max(event_time) AS event_time FROM source"), tmp_path)
    assert message == "transform output has no column user_id; its columns: event_time"


def test_output_outside_the_window(tmp_path: Path, fp_pipeline: Any, fp_events: Any) -> None:
    fp_events(clicks({1: [1]}))
    sql = "SELECT user_id, event_time + INTERVAL 2 HOUR AS event_time FROM source"
    message = bad(fp_pipeline(sql=sql), tmp_path)
    assert message.startswith(
        "1 row of the output with event_time outside the window [2026-11-01T10:00:00+00:00"
    )


def test_python_function_that_cannot_be_imported(tmp_path: Path, fp_pipeline: Any, fp_events: Any) -> None:
    fp_events(clicks({1: [1]}))
    message = bad(fp_pipeline(python="no_such_module_here:features"), tmp_path)
    assert message == (
        "python transform no_such_module_here:features cannot be imported: "
        "ModuleNotFoundError: No module named 'no_such_module_here'"
    )


def test_python_function_missing_failing_or_returning_junk(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any, py_module: Any
) -> None:
    fp_events(clicks({1: [1]}))
    assert bad(fp_pipeline(python="loom_test_features:nope"), tmp_path) == (
        "python transform loom_test_features:nope: module loom_test_features has no function nope"
    )
    assert bad(fp_pipeline(python="loom_test_features:broken"), tmp_path) == (
        "python transform loom_test_features:broken failed: ValueError: no good"
    )
    assert "returned dict, not a pyarrow Table" in bad(
        fp_pipeline(python="loom_test_features:not_a_table"), tmp_path
    )


def test_source_path_that_does_not_exist(tmp_path: Path, fp_pipeline: Any) -> None:
    missing = tmp_path / "nowhere" / "events.parquet"
    assert bad(fp_pipeline(source=str(missing)), tmp_path) == f"source path {missing} does not exist"
    assert "does not exist" in bad(fp_pipeline(source=str(tmp_path / "nowhere" / "*.parquet")), tmp_path)


def test_glob_matching_nothing_and_a_file_that_is_not_parquet(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any
) -> None:
    fp_events(clicks({1: [1]}))
    assert bad(fp_pipeline(source=str(tmp_path / "events" / "*.csv")), tmp_path).startswith("no files match")
    (tmp_path / "events" / "junk.parquet").write_text("not parquet")
    assert "is not readable Parquet" in bad(
        fp_pipeline(source=str(tmp_path / "events" / "junk.parquet")), tmp_path
    )


def test_partition_by_column_missing(tmp_path: Path, fp_pipeline: Any, fp_events: Any) -> None:
    fp_events(clicks({1: [1]}))
    message = bad(fp_pipeline(partition_by=("country", "date")), tmp_path)
    assert message.startswith("partitionBy column country is not a transform output column; its columns: ")


def test_redis_unreachable_is_unavailable_and_reads_nothing(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any
) -> None:
    fp_events(clicks({1: [1]}))
    with pytest.raises(PipelineError) as err:
        run_window(fp_pipeline(redis_url="redis://127.0.0.1:1/0"), WINDOW)
    assert err.value.exit_code == EX_UNAVAILABLE
    assert err.value.message.startswith("redis redis://127.0.0.1:1/0 is unreachable")
    assert offline_files(tmp_path) == []


# --- bounded memory ------------------------------------------------------------------------------


def test_source_batches_are_bounded_whatever_the_file(
    tmp_path: Path, fp_pipeline: Any, fp_events: Any
) -> None:
    n = 50_000
    table = pa.table(
        {
            "user_id": pa.array(range(n), pa.int64()),
            "event_time": pa.array(
                [T0 + dt.timedelta(milliseconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    fp_events(table, row_group_size=n)  # one row group holding everything
    window = source_mod.open_window(fp_pipeline().spec.source, WINDOW)
    sizes = [b.num_rows for b in window.batches(batch_rows=4096)]
    assert sum(sizes) == n and max(sizes) <= 4096
    out = transform.sql_reader("SELECT user_id, event_time FROM source", window.dataset, batch_rows=4096)
    sizes = [b.num_rows for b in out]
    assert sum(sizes) == n and max(sizes) <= 4096


def test_window_filter_is_pushed_down_to_row_groups(tmp_path: Path, fp_pipeline: Any, fp_events: Any) -> None:
    hours = [T0 + dt.timedelta(hours=h, minutes=m) for h in (-5, 0, 5) for m in range(10)]
    table = pa.table(
        {"user_id": list(range(30)), "event_time": pa.array(hours, pa.timestamp("us", tz="UTC"))}
    )
    fp_events(table, row_group_size=10)
    window = source_mod.open_window(fp_pipeline().spec.source, WINDOW)
    groups = [
        g.row_groups[0].id for f in window.files.get_fragments() for g in f.split_by_row_group(window.filter)
    ]
    assert groups == [1]  # the row groups before and after the window are skipped by their statistics
    assert window.count_rows() == 10
