"""The source of a batch window: Parquet files read for the window only, in bounded batches.

Rule: nothing here reads a whole source. `open_window` resolves the path (a file, a directory of Parquet
files with optional Hive partitions, or a glob such as `/data/*.parquet`; any pyarrow filesystem:
`s3://`, `gs://`, `file://`), checks the schema (timestampField and entityKeys exist, timestampField is a
timestamp) and returns the dataset filtered to `start <= ts < end`. The filter is pushed down: row groups
outside the window are skipped by their statistics. DuckDB scans that dataset by reference and pushes its
own projection and filters into it; `batches()` streams it for a Python transform. Naive timestamps are UTC.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from loom.api.featurepipeline import SourceSpec, Window
from loom.features.errors import bad_input, one_line, unavailable

GLOB_CHARS = frozenset("*?[")
BATCH_ROWS = 128 * 1024


@dataclass(frozen=True)
class WindowSource:
    """The window's rows of a Parquet source: `dataset` is `files` already filtered to the window (`filter`,
    for an engine that reads the files itself, e.g. Spark's `spark.read.parquet(...).where(...)`)."""

    path: str
    dataset: ds.Dataset
    schema: pa.Schema
    filter: ds.Expression
    files: ds.Dataset
    timestamp: str
    bounds: tuple[datetime, datetime]

    def count_rows(self) -> int:
        """Rows in the window (row-group statistics answer most of it; else only the ts column is read)."""
        try:
            return int(self.dataset.count_rows())
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise bad_input(f"source {self.path}: {one_line(str(exc))}") from exc
        except OSError as exc:
            raise unavailable(f"source {self.path} cannot be read: {one_line(str(exc))}") from exc

    def batches(self, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        try:
            yield from self.dataset.to_batches(batch_size=batch_rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise bad_input(f"source {self.path}: {one_line(str(exc))}") from exc
        except OSError as exc:
            raise unavailable(f"source {self.path} cannot be read: {one_line(str(exc))}") from exc

    def duckdb_view(self) -> str | None:
        """SQL reading the window with DuckDB's parallel Parquet reader, for local files; else None."""
        if not isinstance(self.files.filesystem, pafs.LocalFileSystem):
            return None
        files = ", ".join(_literal(f) for f in self.files.files)
        partitioning = self.files.partitioning
        hive = "true" if partitioning is not None and len(partitioning.schema) else "false"
        ts = '"' + self.timestamp.replace('"', '""') + '"'
        aware = self.schema.field(self.timestamp).type.tz is not None
        kind = "TIMESTAMPTZ" if aware else "TIMESTAMP"
        lo, hi = (_literal(f"{t:%Y-%m-%d %H:%M:%S.%f}" + ("+00" if aware else "")) for t in self.bounds)
        return (
            f"SELECT * FROM read_parquet([{files}], hive_partitioning = {hive}, union_by_name = true) "
            f"WHERE {ts} >= {kind} {lo} AND {ts} < {kind} {hi}"
        )

    def reader(self, batch_rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self.batches(batch_rows))


def open_window(spec: SourceSpec, window: Window) -> WindowSource:
    """The source's rows in [window.start, window.end), schema checked, nothing read yet but metadata."""
    if spec.parquet is None:
        raise bad_input("source has no parquet path: a batch run reads source.parquet")
    path = spec.parquet.path
    dataset = _dataset(path)
    check_schema(dataset.schema, spec, path)
    ts_type = dataset.schema.field(spec.timestampField).type
    start, end = (_scalar(t, ts_type) for t in (window.start, window.end))
    field = ds.field(spec.timestampField)
    expr = (field >= start) & (field < end)
    return WindowSource(
        path=path,
        dataset=dataset.filter(expr),
        schema=dataset.schema,
        filter=expr,
        files=dataset,
        timestamp=spec.timestampField,
        bounds=(window.start, window.end),
    )


def check_schema(schema: pa.Schema, spec: SourceSpec, where: str) -> None:
    """timestampField and entityKeys are columns of `schema`; timestampField is a timestamp."""
    for column in [spec.timestampField, *spec.entityKeys]:
        if schema.get_field_index(column) < 0:
            raise bad_input(
                f"column {column} is not in source {where}; its columns: {', '.join(schema.names)}"
            )
    ts_type = schema.field(spec.timestampField).type
    if not pa.types.is_timestamp(ts_type):
        raise bad_input(
            f"timestampField {spec.timestampField} of source {where} is {ts_type}, not a timestamp"
        )


def _scalar(value: datetime, ts_type: pa.DataType) -> pa.Scalar:
    """A window bound comparable with the column: same time zone handling (naive columns hold UTC)."""
    tz = ts_type.tz
    return pa.scalar(value if tz else value.replace(tzinfo=None), type=pa.timestamp("us", tz=tz))


def _dataset(path: str) -> ds.Dataset:
    fs, root = _filesystem(path)
    try:
        if any(c in GLOB_CHARS for c in root):
            files = _glob(fs, root, path)
            return ds.dataset(files, filesystem=fs, format="parquet")
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise bad_input(f"source path {path} does not exist")
        if info.type == pafs.FileType.Directory:
            dataset = ds.dataset(root, filesystem=fs, format="parquet", partitioning="hive")
            if not dataset.files:
                raise bad_input(f"source directory {path} holds no Parquet files")
            return dataset
        return ds.dataset(root, filesystem=fs, format="parquet")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise bad_input(f"source {path} is not readable Parquet: {one_line(str(exc))}") from exc
    except FileNotFoundError as exc:
        raise bad_input(f"source path {path} does not exist: {one_line(str(exc))}") from exc
    except OSError as exc:
        raise unavailable(f"source {path} cannot be listed: {one_line(str(exc))}") from exc


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of a URI (`s3://...`) or of a local path (relative to the working dir)."""
    if "://" not in path:
        return pafs.LocalFileSystem(), str(PurePosixPath(os.path.abspath(path)))
    try:
        fs, root = pafs.FileSystem.from_uri(path)
        return fs, str(root)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise bad_input(f"source path {path}: {one_line(str(exc))}") from exc


def _glob(fs: pafs.FileSystem, pattern: str, where: str) -> list[str]:
    """Files matching a glob (`*`, `?`, `[..]` within one path segment), sorted."""
    parts = PurePosixPath(pattern).parts
    fixed = next(i for i, p in enumerate(parts) if any(c in GLOB_CHARS for c in p))
    base = str(PurePosixPath(*parts[:fixed])) if fixed else ""
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        raise bad_input(f"source path {where}: directory {base} does not exist")
    selector = pafs.FileSelector(base, recursive=len(parts) - fixed > 1)
    files = sorted(
        info.path
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.File
        and PurePosixPath(info.path).match(pattern)
        and not _hidden(info.path[len(base) :])
    )
    if not files:
        raise bad_input(f"no files match source path {where}")
    return files


def _hidden(relative: str) -> bool:
    """Like pyarrow's discovery: names starting with `.` or `_` (staging, _SUCCESS) are not data."""
    return any(p.startswith((".", "_")) for p in PurePosixPath(relative).parts)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
