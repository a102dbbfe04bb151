"""The offline sink: a Hive-partitioned Parquet dataset whose files own disjoint event-time ranges.

Layout: `<path>/<col>=<value>/.../w<start>-<end>-<part>.parquet` (times `%Y%m%dT%H%M%SZ`, part 5 digits);
`date` (YYYY-MM-DD of the timestamp, UTC) is derived when the output has no such column; the partition
columns live in the path, not in the files. A file's name is the event-time window that produced it.

Rule: a run owns its window [start, end). DuckDB writes its files (`COPY ... PARTITION_BY`, in parallel)
under `<path>/.loom-staging/<run-id>/<part>/` (written locally and uploaded on object stores; pyarrow's
dataset discovery and Loom's own source listing skip `.` names, so readers never see them). The commit
point is the journal `<run-id>/COMMIT`, written atomically once every file is staged: it lists the moves
(staged -> final name) and the removals (files inside the window, and files overlapping it, which were
first rewritten without the window's rows into staged files named for what is left of their range).
Rolling a journal forward is idempotent, so an interrupted commit is finished by the next run on the
dataset; a run that fails before its journal removes its staging and the dataset is as it was.
Re-running a window replaces its files and never duplicates rows. Commits on a local filesystem hold an
flock; on object stores one writer per dataset at a time is the caller's promise (the controller's
windows of one pipeline do not overlap in flight). `plan_commit` is the pure decision; the rest does the
I/O with pyarrow.fs and DuckDB.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, TypedDict

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from loom.api.featurepipeline import OfflineSink, Window
from loom.features.errors import bad_input, one_line, unavailable

STAGING = ".loom-staging"
JOURNAL = "COMMIT"
TRIM = "trim"
DATE = "date"
TIME_FORMAT = "%Y%m%dT%H%M%SZ"
NAME = re.compile(r"^w(\d{8}T\d{6}Z)-(\d{8}T\d{6}Z)-(\d{5,})\.parquet$")
STALE_STAGING_SECONDS = 24 * 3600


class Journal(TypedDict):
    """The commit point's content: (staged, final) moves, then removals; absolute filesystem paths."""

    moves: list[tuple[str, str]]
    remove: list[str]


@dataclass(frozen=True)
class DataFile:
    """A file of the dataset, from its name: partition dir, event-time range, part number."""

    path: str
    dir: str
    start: datetime
    end: datetime
    part: int


@dataclass(frozen=True)
class Trim:
    """Rewrite `source` keeping rows before `window.start` (into `before`) and after `window.end`."""

    source: str
    before: str | None
    after: str | None


@dataclass
class Plan:
    """The commit of one run: staged -> final moves, trims to rewrite first, then files to remove."""

    moves: list[tuple[str, str]] = field(default_factory=list)
    trims: list[Trim] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


def file_name(start: datetime, end: datetime, part: int) -> str:
    return f"w{start.astimezone(UTC):{TIME_FORMAT}}-{end.astimezone(UTC):{TIME_FORMAT}}-{part:05d}.parquet"


def parse_file(path: str) -> DataFile | None:
    """A dataset file from its relative path; None for files Loom did not name (they are left alone)."""
    p = PurePosixPath(path)
    match = NAME.match(p.name)
    if not match:
        return None
    start, end = (datetime.strptime(t, TIME_FORMAT).replace(tzinfo=UTC) for t in match.group(1, 2))
    return DataFile(path=path, dir=str(p.parent), start=start, end=end, part=int(match.group(3)))


def plan_commit(existing: Sequence[str], staged: Sequence[str], window: Window) -> Plan:
    """Pure: which files move in, which are trimmed, which go. `staged` paths are `<part>/<dirs>/<file>`.

    New files are numbered per partition dir in the order of their staged paths. Files inside the window go;
    files overlapping it are trimmed to what lies outside and then go; all other files stay.
    """
    plan = Plan()
    numbered: dict[str, int] = {}
    for path in sorted(staged):
        parts = PurePosixPath(path).parts
        directory = str(PurePosixPath(*parts[1:-1])) if len(parts) > 2 else "."
        n = numbered.get(directory, 0)
        numbered[directory] = n + 1
        plan.moves.append((path, _join(directory, file_name(window.start, window.end, n))))
    destinations = {dst for _, dst in plan.moves}
    for path in sorted(existing):
        f = parse_file(path)
        if f is None or f.end <= window.start or f.start >= window.end:
            continue
        if not (window.start <= f.start and f.end <= window.end):
            before = (
                _join(f.dir, file_name(f.start, window.start, f.part)) if f.start < window.start else None
            )
            after = _join(f.dir, file_name(window.end, f.end, f.part)) if window.end < f.end else None
            plan.trims.append(Trim(source=path, before=before, after=after))
        if path not in destinations:
            plan.remove.append(path)
    return plan


def _join(directory: str, name: str) -> str:
    return name if directory in ("", ".") else f"{directory}/{name}"


class OfflineStore:
    """The dataset at `sink.path` on its pyarrow filesystem."""

    def __init__(self, sink: OfflineSink, timestamp: str) -> None:
        self.sink = sink
        self.timestamp = timestamp
        self.url = sink.path
        if "://" in sink.path:
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(sink.path)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise bad_input(f"offline path {sink.path}: {one_line(str(exc))}") from exc
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(sink.path)
        self.root = self.root.rstrip("/")

    def staging(self, run_id: str) -> str:
        return f"{self.root}/{STAGING}/{run_id}"

    # --- staging (per partition; runs on executors too) ---------------------------------------

    def target(self, run_id: str, part: str) -> str:
        """A fresh local directory the part's files are written into: the staging itself on a local
        filesystem, else a TMPDIR directory whose files `publish` uploads into the staging."""
        if isinstance(self.fs, pafs.LocalFileSystem):
            path = f"{self.staging(run_id)}/{part}"
            with self._io("stage files under"):
                self.fs.create_dir(path, recursive=True)
                self.fs.delete_dir_contents(path, missing_dir_ok=True)
            return path
        return tempfile.mkdtemp(prefix=f"loom-stage-{part}-")

    def copy(self, con: Any, query: str, schema: pa.Schema, target: str) -> list[str]:
        """DuckDB writes the rows of `query` (columns `schema`) as Hive-partitioned Parquet under `target`,
        in parallel; the files written (absolute local paths, sorted)."""
        columns = self.sink.partitionBy
        derive = DATE in columns and schema.get_field_index(DATE) < 0
        date = f", CAST({_ident(self.timestamp)} AS DATE) AS {_ident(DATE)}" if derive else ""
        select = f"SELECT *{date} FROM ({query})"
        if columns:
            partition = ", ".join(_ident(c) for c in columns)
            options = (
                f"FORMAT parquet, PARTITION_BY ({partition}), "
                + "FILENAME_PATTERN 'part-{i}', OVERWRITE_OR_IGNORE"
            )
            to = _literal(target)
        else:
            options, to = "FORMAT parquet", _literal(f"{target}/part-0.parquet")
        con.execute(f"COPY ({select}) TO {to} ({options})")
        return sorted(str(p) for p in Path(target).rglob("*.parquet"))

    def publish(self, run_id: str, part: str, target: str, files: Sequence[str]) -> list[str]:
        """The staged relative paths (`<part>/<dirs>/<file>`) of `files`, uploaded first when `target` is
        a local copy of a remote staging."""
        staged = [f"{part}/{Path(f).relative_to(target).as_posix()}" for f in files]
        if not isinstance(self.fs, pafs.LocalFileSystem):
            with self._io("stage files under"):
                base = f"{self.staging(run_id)}/{part}"
                self.fs.delete_dir_contents(base, missing_dir_ok=True)
                pafs.copy_files(
                    target, base, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs
                )
        return staged

    def stage(
        self, run_id: str, part: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch]
    ) -> list[str]:
        """Stage record batches as the files of one part; the staged relative paths (no validation)."""
        from loom.features.transform import connect

        con = connect()
        try:
            con.register("loom_batches", pa.RecordBatchReader.from_batches(schema, iter(batches)))
            target = self.target(run_id, part)
            files = self.copy(con, "SELECT * FROM loom_batches", schema, target)
            staged = self.publish(run_id, part, target, files)
        finally:
            con.close()
        if not isinstance(self.fs, pafs.LocalFileSystem):
            shutil.rmtree(target, ignore_errors=True)
        return staged

    # --- commit (once, on the driver) -----------------------------------------------------------

    def commit(self, run_id: str, window: Window, staged: Sequence[str]) -> dict[str, str]:
        """Move the staged files in and replace the window's old rows; staged relative path -> final path."""
        with self._lock(), self._io("commit to"):
            self.recover(exclude=run_id)
            plan = plan_commit(self.list_files(), staged, window)
            staging = self.staging(run_id)
            moves = [(f"{staging}/{src}", f"{self.root}/{dst}") for src, dst in plan.moves]
            for trim in plan.trims:
                moves += self._trim(run_id, trim, window)
            journal: Journal = {"moves": moves, "remove": [f"{self.root}/{p}" for p in plan.remove]}
            tmp = f"{staging}/{JOURNAL}.tmp"
            self.fs.create_dir(staging, recursive=True)
            with self.fs.open_output_stream(tmp) as out:
                out.write(json.dumps(journal).encode())
            self.fs.move(tmp, f"{staging}/{JOURNAL}")  # the commit point
            self._roll_forward(run_id, journal)
        return {src: f"{self.root}/{dst}" for src, dst in plan.moves}

    def remove_part(self, run_id: str, part: str) -> None:
        """Remove one part's staged files (its partition failed)."""
        with contextlib.suppress(OSError):
            self.fs.delete_dir(f"{self.staging(run_id)}/{part}")

    def abort(self, run_id: str) -> None:
        """Remove a failed run's staging (before its journal: the dataset is untouched)."""
        with contextlib.suppress(OSError):
            self.fs.delete_dir(self.staging(run_id))

    def recover(self, exclude: str = "") -> None:
        """Finish every journaled commit left by an interrupted run; drop day-old unjournaled staging."""
        base = f"{self.root}/{STAGING}"
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return
        for info in self.fs.get_file_info(pafs.FileSelector(base)):
            run_id = PurePosixPath(info.path).name
            if info.type != pafs.FileType.Directory or run_id == exclude:
                continue
            journal = f"{info.path}/{JOURNAL}"
            if self.fs.get_file_info(journal).type == pafs.FileType.File:
                with self.fs.open_input_stream(journal) as f:
                    content = json.loads(f.read())
                self._roll_forward(run_id, {"moves": content["moves"], "remove": content["remove"]})
            elif info.mtime is not None and time.time() - info.mtime.timestamp() > STALE_STAGING_SECONDS:
                self.abort(run_id)

    def list_files(self) -> list[str]:
        """Relative paths of the dataset's data files (staging and hidden files excluded)."""
        if self.fs.get_file_info(self.root).type == pafs.FileType.NotFound:
            return []
        prefix = self.root + "/"
        out = []
        for info in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True)):
            rel = info.path[len(prefix) :]
            if info.type == pafs.FileType.File and not any(
                p.startswith((".", "_")) for p in PurePosixPath(rel).parts
            ):
                out.append(rel)
        return sorted(out)

    def _trim(self, run_id: str, trim: Trim, window: Window) -> list[tuple[str, str]]:
        """Rewrite one overlapping file into staged files holding only its rows outside the window."""
        moves = []
        source = pq.ParquetFile(f"{self.root}/{trim.source}", filesystem=self.fs)
        ts = ds.field(self.timestamp)
        for dst, keep in ((trim.before, "before"), (trim.after, "after")):
            if dst is None:
                continue
            staged = f"{self.staging(run_id)}/{TRIM}/{dst}"
            self.fs.create_dir(str(PurePosixPath(staged).parent), recursive=True)
            bound = _bound(
                window.start if keep == "before" else window.end, source.schema_arrow, self.timestamp
            )
            expr = ts < bound if keep == "before" else ts >= bound
            rows = 0
            with pq.ParquetWriter(staged, source.schema_arrow, filesystem=self.fs) as writer:
                for batch in source.iter_batches():
                    kept = pa.Table.from_batches([batch]).filter(expr)
                    rows += kept.num_rows
                    writer.write_table(kept)
            if rows:
                moves.append((staged, f"{self.root}/{dst}"))
        return moves

    def _roll_forward(self, run_id: str, journal: Journal) -> None:
        for src, dst in journal["moves"]:
            if self.fs.get_file_info(src).type == pafs.FileType.File:
                self.fs.create_dir(str(PurePosixPath(dst).parent), recursive=True)
                self.fs.move(src, dst)
        for path in journal["remove"]:
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(path)
        self.abort(run_id)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        if not isinstance(self.fs, pafs.LocalFileSystem):
            yield
            return
        import fcntl

        os.makedirs(f"{self.root}/{STAGING}", exist_ok=True)
        with open(f"{self.root}/{STAGING}/.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @contextlib.contextmanager
    def _io(self, what: str) -> Iterator[None]:
        try:
            yield
        except PermissionError as exc:
            raise bad_input(f"offline store {self.url}: cannot {what} it: {one_line(str(exc))}") from exc
        except OSError as exc:
            raise unavailable(f"offline store {self.url}: cannot {what} it: {one_line(str(exc))}") from exc


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _bound(value: datetime, schema: pa.Schema, column: str) -> pa.Scalar:
    tz = schema.field(column).type.tz
    return pa.scalar(value if tz else value.replace(tzinfo=None), type=pa.timestamp("us", tz=tz))
