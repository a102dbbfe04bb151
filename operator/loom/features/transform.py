"""The transform: DuckDB SQL over the table `source`, or a Python `module:function` on a pyarrow Table.

Rule (the transform contract): a transform computes each entity's features from that entity's rows in the
window (row-wise maps, or aggregates GROUP BY the entity keys), so running it on the whole window (local)
or on each hash partition of the window by entity key (Spark, Ray, and local Python on large windows)
gives the same rows. SQL streams: the input (a pyarrow Dataset, Table or RecordBatchReader) is registered
in DuckDB by reference, DuckDB pushes its projection and filters into a Dataset, and the result comes back
as bounded record batches. A Python function gets one pa.Table (one partition) and returns one.
Errors are bad input naming the data: DuckDB's message with the line and column, the import that failed.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow as pa
import pyarrow.dataset as ds

from loom.api.featurepipeline import TransformSpec
from loom.features.errors import bad_input, one_line, unavailable

if TYPE_CHECKING:
    from loom.features.source import WindowSource

TransformInput: TypeAlias = "WindowSource | ds.Dataset | pa.Table | pa.RecordBatchReader"
PythonTransform = Callable[[pa.Table], pa.Table]

BATCH_ROWS = 128 * 1024
ENV_MEMORY_LIMIT = "LOOM_DUCKDB_MEMORY_LIMIT"
ENV_THREADS = "LOOM_DUCKDB_THREADS"
DEFAULT_MEMORY_LIMIT = "1GB"


def apply(spec: TransformSpec, data: TransformInput, *, batch_rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
    """The transform's output as a stream of bounded record batches (a fresh DuckDB per call)."""
    import duckdb

    con = connect()
    relation = output(con, spec, data)
    try:
        reader = relation.to_arrow_reader(batch_rows)
    except duckdb.Error as exc:
        con.close()
        raise sql_error(exc) from exc

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except duckdb.Error as exc:
            raise sql_error(exc) from exc
        finally:
            con.close()

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def sql_reader(sql: str, data: TransformInput, *, batch_rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
    """Run `sql` over `data` as the table `source`; the result streams."""
    return apply(TransformSpec(sql=sql), data, batch_rows=batch_rows)


def output(con: Any, spec: TransformSpec, data: TransformInput) -> Any:
    """The transform's output as a DuckDB relation on `con` (nothing runs until it is read or copied).

    SQL: `data` is the table `source`. Python: the function runs now on `data` as one Table, and its result
    is the relation. Both are also the view `loom_output`.
    """
    import duckdb

    if spec.sql is not None:
        register_source(con, data)
        sql = spec.sql.strip().rstrip(";")
        try:
            relation = con.sql(sql)
        except duckdb.Error as exc:
            raise sql_error(_with_position(con, sql, exc)) from exc
        if relation is None:
            raise bad_input("transform SQL must be a query (SELECT ...) over the table `source`")
    elif spec.python is not None:
        fn = load_python(spec.python)
        table = call_python(spec.python, fn, as_table(data))
        con.register("loom_python_output", table)
        relation = con.sql("SELECT * FROM loom_python_output")
    else:
        raise bad_input("transform must set exactly one of sql, python")
    relation.create_view("loom_output", replace=True)
    return relation


def register_source(con: Any, data: TransformInput) -> None:
    """Make `data` the table `source`: local Parquet files of a window are read by DuckDB's own parallel
    reader with the window filter pushed into it; anything else (other filesystems, Arrow data) is
    scanned by reference through Arrow."""
    from loom.features.source import WindowSource

    if isinstance(data, WindowSource):
        view = data.duckdb_view()
        if view is not None:
            con.execute(f"CREATE OR REPLACE TEMP VIEW source AS {view}")
            return
        data = data.dataset
    con.register("source", data)


def _with_position(con: Any, sql: str, exc: Exception) -> Exception:
    """DuckDB's relation API leaves the `LINE n:` caret out of binder errors; a prepared run has it."""
    import duckdb

    if "LINE " in str(exc):
        return exc
    try:
        con.execute(sql)
    except duckdb.Error as again:
        return again if type(again) is type(exc) else exc
    return exc


def connect() -> Any:
    """A DuckDB connection for one transform: UTC, bounded memory, spilling to TMPDIR."""
    import duckdb

    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": os.environ.get(ENV_MEMORY_LIMIT, DEFAULT_MEMORY_LIMIT),
        "preserve_insertion_order": "false",
        "temp_directory": os.path.join(tempfile.gettempdir(), f"loom-duckdb-{os.getpid()}"),
    }
    if os.environ.get(ENV_THREADS):
        config["threads"] = os.environ[ENV_THREADS]
    con = duckdb.connect(config=config)
    con.execute("SET TimeZone = 'UTC'")
    return con


def sql_error(exc: Exception) -> Exception:
    """DuckDB's message as one line, with its `LINE n:` caret turned into a line and column."""
    import duckdb

    text = str(exc).split(" Detail: Python exception:")[0]  # a Python reader's own failure, traceback cut
    lines = text.splitlines()
    head = one_line("\n".join(line for line in lines if not line.startswith("LINE ") and "^" not in line))
    where = ""
    for i, line in enumerate(lines):
        match = re.match(r"LINE (\d+): ", line)
        if match and i + 1 < len(lines) and "^" in lines[i + 1]:
            column = lines[i + 1].index("^") - match.end() + 1
            where = f" (at line {match.group(1)}, column {column}: {line[match.end() :].strip()[:120]!r})"
    message = f"transform SQL: {head}{where}"
    if isinstance(exc, duckdb.IOException | duckdb.HTTPException):
        return unavailable(message)
    return bad_input(message)


def load_python(ref: str) -> PythonTransform:
    """The function named `module:function` (the working directory is on the import path)."""
    module_name, _, attr = ref.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise bad_input(f"python transform {ref} cannot be imported: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise bad_input(f"python transform {ref}: module {module_name} has no function {attr}")
    result: PythonTransform = fn
    return result


def call_python(ref: str, fn: PythonTransform, table: pa.Table) -> pa.Table:
    """fn(table), which must return a pa.Table; its own failure is bad input, its traceback on stderr."""
    try:
        out = fn(table)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        raise bad_input(f"python transform {ref} failed: {type(exc).__name__}: {exc}") from exc
    if isinstance(out, pa.RecordBatch):
        out = pa.Table.from_batches([out])
    if not isinstance(out, pa.Table):
        raise bad_input(f"python transform {ref} returned {type(out).__name__}, not a pyarrow Table")
    return out


def as_table(data: TransformInput) -> pa.Table:
    """One partition's rows as a Table (a Python transform takes a Table; the caller bounds its size)."""
    from loom.features.source import WindowSource

    if isinstance(data, WindowSource):
        return pa.Table.from_batches(list(data.batches()), schema=data.schema)
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    return data.to_table()
