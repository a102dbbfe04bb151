"""The bare-DuckDB baseline: the pipeline's SQL over the window of the same Parquet files, COPY to Parquet.

`duckdb_copy.py GLOB START END SQL_FILE OUT` (a child of features_bench.py, so its RSS is DuckDB's own).
DuckDB's defaults (all cores, its own memory limit), its native Parquet reader. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    import duckdb

    glob, start, end, sql_file, out = sys.argv[1:6]
    with open(sql_file) as f:
        sql = f.read()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    began = time.monotonic()
    con.execute(
        f"CREATE VIEW source AS SELECT * FROM read_parquet('{glob}') "
        f"WHERE event_time >= TIMESTAMPTZ '{start}' AND event_time < TIMESTAMPTZ '{end}'"
    )
    con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet)")
    seconds = time.monotonic() - began
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()
    print(json.dumps({"seconds": seconds, "rows_out": rows[0] if rows else 0}))


if __name__ == "__main__":
    main()
