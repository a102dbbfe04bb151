"""The offline store: pure commit planning, and staged, journaled commits on real Parquet files."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from loom.api.featurepipeline import OfflineSink, Window
from loom.features.offline import JOURNAL, STAGING, OfflineStore, Trim, file_name, parse_file, plan_commit

UTC = dt.UTC


def at(hour: int, day: int = 1) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, tzinfo=UTC)


def win(a: int, b: int) -> Window:
    return Window(start=at(a), end=at(b))


def name(a: int, b: int, part: int = 0, directory: str = "date=2026-11-01") -> str:
    return f"{directory}/{file_name(at(a), at(b), part)}"


# --- pure planning ----------------------------------------------------------------------------


def test_file_names_round_trip() -> None:
    f = parse_file(name(1, 2, 7))
    assert f is not None
    assert (f.start, f.end, f.part, f.dir) == (at(1), at(2), 7, "date=2026-11-01")
    assert name(1, 2, 7).endswith("w20261101T010000Z-20261101T020000Z-00007.parquet")
    assert parse_file("date=2026-11-01/part-0.parquet") is None


@pytest.mark.parametrize(
    ("existing", "window", "remove", "trims"),
    [
        pytest.param([name(0, 1)], win(1, 2), [], [], id="disjoint-stays"),
        pytest.param([name(1, 2)], win(1, 2), [], [], id="same-window-replaced-by-move"),
        pytest.param([name(1, 2, 0), name(1, 2, 1)], win(1, 2), [name(1, 2, 1)], [], id="extra-part-removed"),
        pytest.param(
            [name(0, 2)], win(1, 3), [name(0, 2)], [Trim(name(0, 2), name(0, 1), None)], id="overlap-before"
        ),
        pytest.param(
            [name(2, 4)], win(1, 3), [name(2, 4)], [Trim(name(2, 4), None, name(3, 4))], id="overlap-after"
        ),
        pytest.param(
            [name(0, 4)],
            win(1, 2),
            [name(0, 4)],
            [Trim(name(0, 4), name(0, 1), name(2, 4))],
            id="window-inside",
        ),
        pytest.param(
            [name(1, 2, directory="date=2026-10-31")],
            win(0, 3),
            [name(1, 2, directory="date=2026-10-31")],
            [],
            id="other-partition-inside",
        ),
        pytest.param(["date=2026-11-01/foreign.parquet"], win(0, 3), [], [], id="foreign-files-stay"),
    ],
)
def test_plan_commit(existing: list[str], window: Window, remove: list[str], trims: list[Trim]) -> None:
    plan = plan_commit(existing, ["p00000/date=2026-11-01/part-0.parquet"], window)
    assert plan.moves == [
        ("p00000/date=2026-11-01/part-0.parquet", f"date=2026-11-01/{file_name(window.start, window.end, 0)}")
    ]
    assert plan.remove == remove
    assert plan.trims == trims


def test_plan_numbers_new_files_per_partition_dir_across_parts() -> None:
    staged = [
        "p00001/date=2026-11-01/part-0.parquet",
        "p00000/date=2026-11-01/part-0.parquet",
        "p00000/date=2026-11-02/part-0.parquet",
    ]
    plan = plan_commit([], staged, win(0, 1))
    assert [dst for _, dst in plan.moves] == [
        f"date=2026-11-01/{file_name(at(0), at(1), 0)}",
        f"date=2026-11-02/{file_name(at(0), at(1), 0)}",
        f"date=2026-11-01/{file_name(at(0), at(1), 1)}",
    ]


def test_plan_without_partitions_puts_files_at_the_root() -> None:
    plan = plan_commit([], ["p00000/part-0.parquet"], win(0, 1))
    assert plan.moves == [("p00000/part-0.parquet", file_name(at(0), at(1), 0))]


# --- real files ---------------------------------------------------------------------------------


def events(hours: list[float], tag: str) -> pa.Table:
    times = [at(0) + dt.timedelta(hours=h) for h in hours]
    return pa.table(
        {
            "user_id": pa.array(range(len(hours)), pa.int64()),
            "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
            "tag": [tag] * len(hours),
        }
    )


def store(tmp_path: Path, partition_by: tuple[str, ...] = ("date",)) -> OfflineStore:
    return OfflineStore(OfflineSink(path=str(tmp_path / "out"), partitionBy=list(partition_by)), "event_time")


def run(s: OfflineStore, window: Window, table: pa.Table, run_id: str) -> int:
    staged = s.stage(run_id, "p00000", table.schema, table.to_batches(max_chunksize=2))
    return len(s.commit(run_id, window, staged))


def read(tmp_path: Path) -> list[tuple[float, str]]:
    t = ds.dataset(tmp_path / "out", format="parquet", partitioning="hive").to_table()
    rows = [((r["event_time"] - at(0)).total_seconds() / 3600, r["tag"]) for r in t.to_pylist()]
    return sorted(rows)


def test_stage_is_invisible_until_the_commit(tmp_path: Path) -> None:
    s = store(tmp_path)
    (tmp_path / "out").mkdir()
    table = events([0.5, 1.5], "a")
    staged = s.stage("r1", "p00000", table.schema, table.to_batches())
    assert staged == ["p00000/date=2026-11-01/part-0.parquet"]
    assert ds.dataset(tmp_path / "out", format="parquet").files == []
    assert len(s.commit("r1", win(0, 2), staged)) == 1
    assert read(tmp_path) == [(0.5, "a"), (1.5, "a")]
    assert not (tmp_path / "out" / STAGING / "r1").exists()
    assert s.list_files() == [name(0, 2)]


def test_date_partitions_are_utc_days(tmp_path: Path) -> None:
    s = store(tmp_path)
    run(s, Window(start=at(22), end=at(2, day=2)), events([22.5, 24.5], "a"), "r1")
    assert s.list_files() == [
        f"date=2026-11-01/{file_name(at(22), at(2, 2), 0)}",
        f"date=2026-11-02/{file_name(at(22), at(2, 2), 0)}",
    ]


def test_rerun_of_a_window_replaces_its_rows(tmp_path: Path) -> None:
    s = store(tmp_path)
    run(s, win(0, 2), events([0.5, 1.5], "old"), "r1")
    run(s, win(2, 3), events([2.5], "next"), "r2")
    run(s, win(0, 2), events([0.25], "new"), "r3")
    assert read(tmp_path) == [(0.25, "new"), (2.5, "next")]


def test_rerun_with_no_rows_clears_the_window(tmp_path: Path) -> None:
    s = store(tmp_path)
    run(s, win(0, 2), events([0.5], "old"), "r1")
    run(s, win(0, 2), events([], "none"), "r2")
    assert read(tmp_path) == []


def test_overlapping_window_trims_the_earlier_files(tmp_path: Path) -> None:
    s = store(tmp_path)
    run(s, win(0, 2), events([0.5, 1.5], "first"), "r1")
    run(s, win(1, 3), events([1.25, 2.5], "late"), "r2")  # allowedLateness 1h
    assert read(tmp_path) == [(0.5, "first"), (1.25, "late"), (2.5, "late")]
    assert s.list_files() == [name(0, 1), name(1, 3)]
    run(s, win(0, 4), events([3.5], "wide"), "r3")
    run(s, Window(start=at(1), end=at(2)), events([1.5], "inside"), "r4")
    assert read(tmp_path) == [(1.5, "inside"), (3.5, "wide")]
    assert s.list_files() == [name(1, 2), name(2, 4)]  # [0, 1) kept no rows: no file


def test_failed_stage_leaves_the_dataset_as_it_was(tmp_path: Path) -> None:
    s = store(tmp_path)
    run(s, win(0, 2), events([0.5], "kept"), "r1")
    before = s.list_files()

    def failing() -> object:
        yield events([1.0], "x").to_batches()[0]
        raise RuntimeError("transform failed mid-way")

    with pytest.raises(Exception, match="transform failed mid-way"):
        s.stage("r2", "p00000", events([], "x").schema, failing())  # type: ignore[arg-type]
    s.abort("r2")
    assert s.list_files() == before
    assert read(tmp_path) == [(0.5, "kept")]
    assert not (tmp_path / "out" / STAGING / "r2").exists()


def test_an_interrupted_commit_is_finished_by_the_next_run(tmp_path: Path) -> None:
    s = store(tmp_path)
    run(s, win(0, 2), events([0.5], "old"), "r1")
    table = events([1.5], "journaled")
    staged = s.stage("r2", "p00000", table.schema, table.to_batches())
    staging = tmp_path / "out" / STAGING / "r2"
    old = tmp_path / "out" / name(0, 2)
    journal = {"moves": [[str(staging / staged[0]), str(tmp_path / "out" / name(0, 2, 0))]], "remove": []}
    (staging / JOURNAL).write_text(json.dumps(journal))  # the process died right after its commit point
    assert old.exists()
    run(s, win(5, 6), events([5.5], "other"), "r3")
    assert read(tmp_path) == [(1.5, "journaled"), (5.5, "other")]
    assert not staging.exists()


def test_unjournaled_staging_of_a_running_run_is_left_alone(tmp_path: Path) -> None:
    s = store(tmp_path)
    table = events([0.5], "a")
    s.stage("running", "p00000", table.schema, table.to_batches())
    run(s, win(5, 6), events([5.5], "b"), "r2")
    assert (tmp_path / "out" / STAGING / "running" / "p00000").exists()
    assert read(tmp_path) == [(5.5, "b")]


def test_restaging_a_part_replaces_the_earlier_attempt(tmp_path: Path) -> None:
    s = store(tmp_path)
    first = events([0.1, 0.2, 0.3, 0.4], "attempt1")
    s.stage("r1", "p00000", first.schema, first.to_batches(max_chunksize=1))
    second = events([0.5], "attempt2")
    staged = s.stage("r1", "p00000", second.schema, second.to_batches())
    s.commit("r1", win(0, 1), staged)
    assert read(tmp_path) == [(0.5, "attempt2")]


def test_no_partition_columns(tmp_path: Path) -> None:
    s = store(tmp_path, partition_by=())
    run(s, win(0, 1), events([0.5], "a"), "r1")
    assert s.list_files() == [file_name(at(0), at(1), 0)]


def test_partition_by_an_output_column(tmp_path: Path) -> None:
    s = store(tmp_path, partition_by=("tag", "date"))
    run(s, win(0, 1), events([0.5], "a"), "r1")
    assert s.list_files() == [f"tag=a/date=2026-11-01/{file_name(at(0), at(1), 0)}"]


def test_a_filesystem_other_than_local_stages_through_a_local_copy(tmp_path: Path) -> None:
    """An object store (here any pyarrow filesystem that is not LocalFileSystem): DuckDB writes to TMPDIR,
    the files are uploaded into the staging, the commit moves them with the filesystem's own calls."""
    import pyarrow.fs as pafs

    s = store(tmp_path)
    s.fs = pafs.SubTreeFileSystem("/", pafs.LocalFileSystem())
    s.root = str(tmp_path / "out").lstrip("/")
    table = events([0.5, 1.5], "remote")
    target = s.target("r1", "p00000")
    assert not target.startswith(str(tmp_path))
    staged = s.stage("r1", "p00000", table.schema, table.to_batches())
    assert (tmp_path / "out" / STAGING / "r1" / staged[0]).exists()
    s.commit("r1", win(0, 2), staged)
    assert read(tmp_path) == [(0.5, "remote"), (1.5, "remote")]
    assert not (tmp_path / "out" / STAGING / "r1").exists()
