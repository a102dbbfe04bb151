"""Same features on every engine: one pipeline on local, PySpark local[2] and Ray local mode, row for row.

Generated events (a few hundred thousand rows over three days, many entities, late rows that reach the source
after the first run) go through the same SQL aggregate and the same Python transform on each engine; the
offline datasets (read back with pyarrow, sorted) and the online stores (every Redis hash) must be equal.
Bad input gives the same exit code and the same one-line reason on every engine and leaves the offline store
as it was. One SparkSession and one Ray instance serve the whole module (start-up is the expensive part).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from loom.api.featurepipeline import FeaturePipeline, Window
from loom.features.config import make_window, rfc3339
from loom.features.errors import EX_DATAERR, PipelineError
from loom.features.run import run_window

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

ENGINES = ("local", "spark", "ray")
DAY0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
ROWS_PER_DAY = 100_000
LATE_ROWS = 20_000
USERS = 20_000
COUNTRIES = ("de", "fr", "jp", "us", "br")
FIRST = make_window("2026-11-01T00:00:00Z", "2026-11-03T00:00:00Z")
# The next scheduled window with one day of allowedLateness: it overlaps the first one.
SECOND = make_window("2026-11-02T00:00:00Z", "2026-11-04T00:00:00Z")
SQL = (
    "SELECT user_id, max(event_time) AS event_time, count(*) AS events, sum(clicks) AS clicks, "
    "sum(amount) AS amount, avg(amount) AS amount_avg, max(country) AS country "
    "FROM source GROUP BY user_id"
)
PYTHON_MODULE = "loom_test_engine_transforms"
PYTHON = f"{PYTHON_MODULE}:per_country_user"
PYTHON_SOURCE = '''
import pyarrow as pa
import pyarrow.compute as pc


def per_country_user(table: pa.Table) -> pa.Table:
    """Features of each (country, user_id) from its rows: a group-by in pyarrow."""
    g = table.group_by(["country", "user_id"]).aggregate(
        [("event_time", "max"), ("amount", "sum"), ("clicks", "count"), ("clicks", "max")]
    )
    return pa.table(
        {
            "country": g["country"],
            "user_id": g["user_id"],
            "event_time": g["event_time_max"],
            "spent": g["amount_sum"],
            "visits": g["clicks_count"],
            "top_clicks": g["clicks_max"],
            "big": pc.greater(g["amount_sum"], 2000.0),
        }
    )
'''


# --- data ------------------------------------------------------------------------------------------------


def events(rng: np.random.Generator, start: dt.datetime, seconds: int, rows: int) -> pa.Table:
    micros = int(start.timestamp() * 1_000_000) + rng.integers(0, seconds * 1_000_000, rows)
    return pa.table(
        {
            "user_id": pa.array(rng.integers(0, USERS, rows), pa.int64()),
            "country": pa.array(np.asarray(COUNTRIES)[rng.integers(0, len(COUNTRIES), rows)]),
            "event_time": pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "clicks": pa.array(rng.integers(0, 20, rows), pa.int32()),
            # quarters: every sum is exact in a double, so no engine's row order can change a bit
            "amount": pa.array(rng.integers(0, 4000, rows) * 0.25, pa.float64()),
        }
    )


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`early`: one file per day for three days; `all`: the same files and a late file that arrived after the
    first run (events of Nov 2, written days later)."""
    root = tmp_path_factory.mktemp("engines-events")
    rng = np.random.default_rng(8)
    early, full = root / "early", root / "all"
    early.mkdir()
    full.mkdir()
    for day in range(3):
        table = events(rng, DAY0 + dt.timedelta(days=day), 86400, ROWS_PER_DAY)
        for d in (early, full):
            pq.write_table(table, d / f"day-{day}.parquet", row_group_size=25_000)
    late = events(rng, DAY0 + dt.timedelta(days=1), 86400, LATE_ROWS)
    pq.write_table(late, full / "late-0.parquet", row_group_size=25_000)
    return {"early": early, "all": full}


# --- engines, once per module ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transforms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The Python transform as a module that the test process, Spark's workers and Ray's workers import
    (PYTHONPATH set before either engine starts, so their workers inherit it)."""
    d = tmp_path_factory.mktemp("engines-transforms")
    (d / f"{PYTHON_MODULE}.py").write_text(textwrap.dedent(PYTHON_SOURCE))
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(d), *([before] if before else [])])
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))
    if before is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = before


@pytest.fixture(scope="module")
def spark(transforms: Path) -> Iterator[Any]:
    """One small local SparkSession: 2 cores, no UI, few shuffle partitions."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("loom-test-engines")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def ray_local(transforms: Path) -> Iterator[None]:
    """One local Ray: 2 CPUs, a small object store."""
    import ray

    ray.init(num_cpus=2, object_store_memory=150 * 1024 * 1024, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture
def engine_ready(request: pytest.FixtureRequest) -> Any:
    """`engine_ready(name)`: start that engine's module fixture (local needs none)."""

    def ready(engine: str) -> None:
        if engine == "spark":
            request.getfixturevalue("spark")
        elif engine == "ray":
            request.getfixturevalue("ray_local")

    return ready


@pytest.fixture
def small_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several hash partitions per window on Spark and Ray, entity-key buckets for local Python transforms."""
    monkeypatch.setenv("LOOM_PARTITION_ROWS", "100000")


# --- pipelines and reading the sinks back ----------------------------------------------------------------


def pipeline(
    name: str,
    source: Path,
    offline: Path,
    redis_url: str | None,
    *,
    sql: str | None = None,
    python: str | None = None,
    keys: tuple[str, ...] = ("user_id",),
    prefix: str = "u:",
) -> FeaturePipeline:
    sinks: dict[str, Any] = {"offline": {"path": str(offline), "partitionBy": ["date"]}}
    if redis_url:
        sinks["online"] = {"redis": {"url": redis_url, "keyPrefix": prefix}}
    return FeaturePipeline.model_validate(
        {
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "source": {
                    "parquet": {"path": str(source)},
                    "timestampField": "event_time",
                    "entityKeys": list(keys),
                },
                "transform": {"python": python} if python else {"sql": sql},
                "schedule": "0 0 * * *",
                "allowedLateness": "24h",
                "sinks": sinks,
            },
        }
    )


def db_url(redis_url: str, db: int) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{db}"


def offline_rows(path: Path, keys: tuple[str, ...]) -> tuple[pa.Schema, list[dict[str, Any]]]:
    table = ds.dataset(path, format="parquet", partitioning="hive").to_table()
    table = table.sort_by([(k, "ascending") for k in (*keys, "event_time")])
    return table.schema, table.to_pylist()


def online_hashes(url: str, prefix: str) -> dict[bytes, dict[bytes, bytes]]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = sorted(client.scan_iter(match=f"{prefix}*", count=5000))
        pipe = client.pipeline(transaction=False)
        for k in keys:
            pipe.hgetall(k)
        return dict(zip(keys, pipe.execute(), strict=True))
    finally:
        client.close()


def flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def snapshot(path: Path) -> dict[str, str]:
    """Every file of an offline store (staging included) and a hash of its bytes."""
    return {
        str(p.relative_to(path)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def rows_in(source: Path, window: Window) -> int:
    data = ds.dataset(source, format="parquet")
    f = ds.field("event_time")
    return int(data.count_rows(filter=(f >= pa.scalar(window.start)) & (f < pa.scalar(window.end))))


# --- the identical-output tests --------------------------------------------------------------------------


def test_sql_aggregate_gives_the_same_offline_and_online_rows_on_local_spark_and_ray(
    tmp_path: Path,
    sources: dict[str, Path],
    redis_url: str,
    engine_ready: Any,
    small_partitions: None,
) -> None:
    outputs: dict[str, Any] = {}
    for db, engine in enumerate(ENGINES, start=1):
        engine_ready(engine)
        url = db_url(redis_url, db)
        flush(url)
        offline = tmp_path / f"features-{engine}"
        first = run_window(pipeline("clicks", sources["early"], offline, url, sql=SQL), FIRST, engine=engine)
        # the late file reached the source; the next window overlaps the first (allowedLateness)
        second = run_window(pipeline("clicks", sources["all"], offline, url, sql=SQL), SECOND, engine=engine)
        for summary, source, window in ((first, "early", FIRST), (second, "all", SECOND)):
            s = summary.to_dict()
            assert s["engine"] == engine
            assert s["rows_in"] == rows_in(sources[source], window)
            assert s["rows_out"] == s["online_written"] > USERS * 0.99
            assert s["watermark"] == rfc3339(window.end)
        outputs[engine] = (offline_rows(offline, ("user_id",)), online_hashes(url, "u:"))

    (schema, rows), online = outputs["local"]
    # the second window's rows count every event of Nov 2-3, the late ones included
    assert sum(r["events"] for r in rows if r["event_time"] >= SECOND.start) == rows_in(
        sources["all"], SECOND
    )
    assert len(online) == USERS and all(b"_ts:clicks" in h for h in online.values())
    for engine in ("spark", "ray"):
        (e_schema, e_rows), e_online = outputs[engine]
        assert e_schema == schema, engine
        assert len(e_rows) == len(rows), engine
        for got, want in zip(e_rows, rows, strict=True):
            assert got == want, engine
        assert e_online == online, engine


def test_python_transform_gives_the_same_rows_on_local_spark_and_ray(
    tmp_path: Path,
    sources: dict[str, Path],
    redis_url: str,
    transforms: Path,
    engine_ready: Any,
    small_partitions: None,
) -> None:
    keys = ("country", "user_id")
    outputs: dict[str, Any] = {}
    for db, engine in enumerate(ENGINES, start=4):
        engine_ready(engine)
        url = db_url(redis_url, db)
        flush(url)
        offline = tmp_path / f"features-{engine}"
        p = pipeline("spend", sources["all"], offline, url, python=PYTHON, keys=keys, prefix="cu:")
        summary = run_window(p, FIRST, engine=engine).to_dict()
        assert summary["engine"] == engine
        assert summary["rows_in"] == rows_in(sources["all"], FIRST)
        outputs[engine] = (offline_rows(offline, keys), online_hashes(url, "cu:"))

    (schema, rows), online = outputs["local"]
    assert sum(r["visits"] for r in rows) == rows_in(sources["all"], FIRST)
    assert online[b"cu:de:0"][b"big"] in (b"true", b"false")
    for engine in ("spark", "ray"):
        (e_schema, e_rows), e_online = outputs[engine]
        assert e_schema == schema, engine
        assert e_rows == rows, engine
        assert e_online == online, engine


# --- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["spark", "ray"])
def test_a_missing_column_is_bad_input_with_the_same_reason_and_the_offline_store_untouched(
    tmp_path: Path, sources: dict[str, Path], redis_url: str, engine: str, engine_ready: Any
) -> None:
    offline = tmp_path / "features"
    url = db_url(redis_url, 7)
    good = pipeline("clicks", sources["early"], offline, None, sql=SQL)
    run_window(good, make_window("2026-11-01T00:00:00Z", "2026-11-01T06:00:00Z"))
    before = snapshot(offline)
    bad_sql = SQL.replace("sum(clicks)", "sum(click_count)")
    bad = pipeline("clicks", sources["early"], offline, url, sql=bad_sql)
    with pytest.raises(PipelineError) as local:
        run_window(bad, FIRST)
    engine_ready(engine)
    with pytest.raises(PipelineError) as err:
        run_window(bad, FIRST, engine=engine)
    assert err.value.exit_code == local.value.exit_code == EX_DATAERR
    assert "click_count" in err.value.message
    assert err.value.message == local.value.message
    assert snapshot(offline) == before


def null_key_events(path: Path) -> None:
    """Rows of 50 users, 40 of them with no user_id (all alike, so every engine's example row is the same)."""
    rows = [
        {"user_id": u, "event_time": DAY0 + dt.timedelta(minutes=u), "clicks": 1, "amount": 1.0}
        for u in range(50)
    ] + [{"user_id": None, "event_time": DAY0 + dt.timedelta(hours=1), "clicks": 2, "amount": 0.5}] * 40
    table = pa.Table.from_pylist(rows).cast(
        pa.schema(
            [
                ("user_id", pa.int64()),
                ("event_time", pa.timestamp("us", tz="UTC")),
                ("clicks", pa.int32()),
                ("amount", pa.float64()),
            ]
        )
    )
    path.mkdir(parents=True)
    pq.write_table(table, path / "part-0.parquet")


@pytest.mark.parametrize("engine", ["spark", "ray"])
def test_a_bad_row_found_on_an_executor_ends_the_cli_with_65_and_the_same_one_line_reason(
    tmp_path: Path, redis_url: str, engine: str
) -> None:
    """The executor/actor side of errors, through `loom features run --engine ...` as a pod runs it."""
    source, offline = tmp_path / "events", tmp_path / "features"
    null_key_events(source)
    p = pipeline(
        "rows", source, offline, db_url(redis_url, 8), sql="SELECT user_id, event_time, clicks FROM source"
    )
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"apiVersion": "loom.ml/v1alpha1", "kind": "FeaturePipeline", **p.model_dump(mode="json")}
        )
    )
    env = {
        **os.environ,
        "PYSPARK_SUBMIT_ARGS": "--master local[2] --conf spark.ui.enabled=false "
        "--conf spark.ui.showConsoleProgress=false pyspark-shell",
        "RAY_ADDRESS": "",
    }
    loom = str(Path(sys.executable).with_name("loom"))
    results = {}
    for e in ("local", engine):
        args = ["features", "run", "-f", str(spec), "--start", "2026-11-01T00:00:00Z"]
        proc = subprocess.run(
            [loom, *args, "--end", "2026-11-02T00:00:00Z", "--engine", e],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            check=False,
        )
        last = json.loads(proc.stdout.strip().splitlines()[-1])
        results[e] = (proc.returncode, last, proc.stderr)
    code, summary, stderr = results[engine]
    assert code == results["local"][0] == EX_DATAERR, stderr[-3000:]
    assert summary["exit_code"] == EX_DATAERR
    assert "40 rows of the output with null user_id" in summary["error"]
    assert summary["error"] == results["local"][1]["error"]
    assert f"loom features run: {summary['error']}" in stderr
    assert not offline.exists() or snapshot(offline) == {}
