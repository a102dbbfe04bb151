"""`make bench-features`: the FeaturePipeline runtime against its baselines, one run, this machine.

Generated events (>= 10 M rows, 1 M entities, one day, a handful of columns) are written once with numpy
and pyarrow into Parquet under $LOOM_HOME/bench/features (default ~/.cache/loom) and reused. One
redis-server of our own (no persistence) serves every Redis measurement. Each measured thing runs as its
own child process, timed from outside, its peak RSS sampled over its whole process tree (psutil, every
0.1 s, and the kernel's ru_maxrss of the child): so Loom, DuckDB, Feast, Spark and Ray are measured alike.

Measured (targets of issues 8 and 9):
1. offline: `loom features run` (engine local) into Parquet vs a bare DuckDB `COPY (<same SQL>) TO ...`
   over the same files and window (rows/s of input; target >= 0.8x).
2. online, Loom's layout: `loom features run` into Redis (entities/s over the whole run, and of its online
   phase) vs redis-benchmark's pipelined HSET on the same server (target >= 40 %).
3. online, Feast's layout: `loom features run` with `format: feast` vs Feast's own `feast materialize`
   (after `feast apply` of the repository `loom features feast-repo` writes; local engine, same Redis, its
   FileSource the same feature rows; both timed as processes, wall clock) (target >= 15x),
   peak RSS of each, and the hashes of a sample of entities compared byte for byte.
4. Spark local[*] and Ray local mode (`--engine spark|ray`) rows/s on the same data.
5. the encoding cost behind 3 (Feast's per-value protobufs vs Loom's vectorized encoder).
Peak RSS: target Loom <= 2 GB at 10 M rows. Not part of `make test`. Env: LOOM_BENCH_ROWS (10000000),
LOOM_BENCH_ENTITIES (1000000), LOOM_BENCH_FEAST_ROWS (all: Feast on a subset of entities when set),
LOOM_BENCH_TIMEOUT (seconds per measurement, 900), LOOM_BENCH_SKIP (comma list: spark,ray,feast).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOOM = str(BIN / "loom")
HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("LOOM_HOME", Path.home() / ".cache" / "loom")) / "bench" / "features"
ROWS = int(os.environ.get("LOOM_BENCH_ROWS", 10_000_000))
ENTITIES = int(os.environ.get("LOOM_BENCH_ENTITIES", 1_000_000))
FEAST_ROWS = int(os.environ.get("LOOM_BENCH_FEAST_ROWS", 0)) or None
TIMEOUT = int(os.environ.get("LOOM_BENCH_TIMEOUT", 900))
SKIP = {s for s in os.environ.get("LOOM_BENCH_SKIP", "").split(",") if s}
FILES = 10
DAY = "2026-11-01"
START, END = f"{DAY}T00:00:00Z", "2026-11-02T00:00:00Z"
SQL = """SELECT user_id,
       max(event_time) AS event_time,
       count(*) AS events,
       CAST(sum(CAST(dwell_ms AS BIGINT)) AS DOUBLE) / count(*) AS dwell_avg,
       max(price) AS price_max,
       max(country) AS country,
       bool_or(clicked) AS clicked_any
FROM source
GROUP BY user_id"""
COUNTRIES = ["us", "de", "fr", "jp", "br", "in", "gb", "ca", "es", "it", "mx", "kr", "au", "nl", "se"]
SAMPLE = 2000
# Every feature is deterministic (an integer sum, not avg() of doubles, whose parallel summation order
# changes the last bit from run to run), so that Loom's run and the DuckDB run Feast reads give the same rows.


# ----------------------------------------------------------------------------------------------- data


def events() -> Path:
    """ROWS events over ENTITIES users in one day (each user ROWS/ENTITIES times), cached as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = CACHE / f"events-{ROWS}-{ENTITIES}"
    if (root / "_COMPLETE").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(8)
    users = rng.permutation(np.arange(ROWS, dtype=np.int64) % ENTITIES)
    day = np.datetime64(f"{DAY}T00:00:00", "us").astype(np.int64)
    per = -(-ROWS // FILES)
    print(f"generating {ROWS:,} events for {ENTITIES:,} users into {root} ...", flush=True)
    for i in range(FILES):
        lo, hi = i * per, min(ROWS, (i + 1) * per)
        n = hi - lo
        price = rng.gamma(2.0, 15.0, n).astype(np.float32)
        table = pa.table(
            {
                "user_id": users[lo:hi],
                "event_time": pa.array(
                    day + rng.integers(0, 86_400_000_000, n), pa.timestamp("us", tz="UTC")
                ),
                "dwell_ms": rng.lognormal(7.0, 1.0, n),
                "price": pa.array(price, mask=rng.random(n) < 0.05),
                "country": pa.array(np.array(COUNTRIES)[rng.integers(0, len(COUNTRIES), n)]),
                "clicked": pa.array(rng.random(n) < 0.1, mask=rng.random(n) < 0.02),
                "item_id": rng.integers(0, 50_000, n).astype(np.int32),
            }
        )
        pq.write_table(table, root / f"part-{i:02d}.parquet", row_group_size=256 * 1024)
    (root / "_COMPLETE").write_text(f"{ROWS} {ENTITIES}\n")
    return root


# ------------------------------------------------------------------------------------------ processes


@dataclass
class Measured:
    seconds: float = 0.0
    rss: int = 0  # bytes, peak of the process tree
    cpu: float = 0.0  # seconds of CPU (user + system) of the child and its waited-for children
    code: int = 0
    out: str = ""
    err: str = ""
    timed_out: bool = False
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == 0 and not self.timed_out

    def why(self) -> str:
        if self.timed_out:
            return f"timed out after {TIMEOUT} s"
        tail = (self.err or self.out).strip().splitlines()[-3:]
        return f"exit {self.code}: {' | '.join(t.strip() for t in tail)[:300]}"


def measure(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Measured:
    """Run `cmd`, timing it and sampling its process tree's RSS; the last stdout line parsed as JSON."""

    with tempfile.TemporaryFile(mode="w+") as out_f, tempfile.TemporaryFile(mode="w+") as err_f:
        return _measure(cmd, env, cwd, out_f, err_f)


def _measure(
    cmd: list[str], env: dict[str, str] | None, cwd: Path | None, out_f: Any, err_f: Any
) -> Measured:
    import psutil

    began = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=out_f, stderr=err_f, env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not done.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
            except psutil.Error:
                pass
            peak = max(peak, total)
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    m = Measured()
    try:
        _, status, usage = _wait4(proc, began + TIMEOUT)
        m.code = os.waitstatus_to_exitcode(status)
        peak = max(peak, usage.ru_maxrss * 1024)
        m.cpu = usage.ru_utime + usage.ru_stime
    except TimeoutError:
        m.timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    m.seconds = time.monotonic() - began
    done.set()
    sampler.join()
    m.rss = peak
    out_f.seek(0)
    err_f.seek(0)
    m.out, m.err = out_f.read(), err_f.read()
    lines = m.out.strip().splitlines()
    if lines:
        with contextlib.suppress(json.JSONDecodeError):
            m.result = json.loads(lines[-1])
    return m


def _wait4(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, int, Any]:
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return pid, status, usage
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------- redis


class Redis:
    """Our own redis-server on a free port, no persistence."""

    def __init__(self, workdir: Path) -> None:
        server = shutil.which("redis-server")
        if not server or not shutil.which("redis-benchmark"):
            sys.exit("redis-server / redis-benchmark are not installed: run `make deps`")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--databases",
                "16",
            ],
            stdout=subprocess.DEVNULL,
        )
        import redis

        self.client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def db(self, db: int) -> Any:
        import redis

        return redis.Redis(port=self.port, db=db)

    def cpu(self) -> float:
        """Seconds of CPU the server has used (user + system)."""
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def redis_note(r: Redis, cpu0: float, n: int, phase: float) -> str:
    """How busy the server was: its CPU per entity, and its share of one core over the online phase."""
    used = r.cpu() - cpu0
    return (
        f"Redis used {used / max(n, 1) * 1e6:.1f} us CPU/entity, {used / phase:.0%} of a core in that phase"
    )


def hset_ceiling(r: Redis) -> tuple[float, str]:
    """redis-benchmark's pipelined HSET (-P 64, 50 clients, 1M random fields) on the same server."""
    cmd = [
        "redis-benchmark",
        "-p",
        str(r.port),
        "--dbnum",
        "15",
        "-t",
        "hset",
        "-n",
        "2000000",
        "-P",
        "64",
        "-r",
        "1000000",
        "-q",
        "--csv",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    row = next(line for line in out.splitlines() if line.startswith('"HSET"'))
    rps = float(row.split(",")[1].strip('"'))
    r.db(15).flushdb()
    return rps, " ".join(cmd[3:])


# ------------------------------------------------------------------------------------------ pipelines


def pipeline(
    name: str, source: Path, *, offline: Path | None, redis: dict[str, Any] | None
) -> dict[str, Any]:
    sinks: dict[str, Any] = {}
    if offline is not None:
        sinks["offline"] = {"path": str(offline), "partitionBy": ["date"]}
    if redis is not None:
        sinks["online"] = {"redis": redis}
    return {
        "apiVersion": "loom.ml/v1alpha1",
        "kind": "FeaturePipeline",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "source": {
                "parquet": {"path": str(source)},
                "timestampField": "event_time",
                "entityKeys": ["user_id"],
            },
            "transform": {"sql": SQL},
            "schedule": "0 0 * * *",
            "sinks": sinks,
        },
    }


def write_pipeline(path: Path, obj: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def loom_run(path: Path, engine: str = "local", env: dict[str, str] | None = None) -> Measured:
    return measure(
        [LOOM, "features", "run", "-f", str(path), "--start", START, "--end", END, "--engine", engine],
        env=env,
    )


# ------------------------------------------------------------------------------------------- the table


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, value: str, rss: str = "", note: str = "") -> None:
        self.rows.append((what, value, rss, note))
        print(f"  {what}: {value}  {rss}  {note}", flush=True)

    def print(self) -> None:
        w = [
            max(len(r[i]) for r in [*self.rows, ("measurement", "figure", "peak RSS", "")]) for i in range(3)
        ]
        head = ("measurement", "figure", "peak RSS", "ratio / target / note")
        print()
        print(f"{head[0]:<{w[0]}}  {head[1]:>{w[1]}}  {head[2]:>{w[2]}}  {head[3]}")
        print("-" * (w[0] + w[1] + w[2] + 40))
        for what, value, rss, note in self.rows:
            print(f"{what:<{w[0]}}  {value:>{w[1]}}  {rss:>{w[2]}}  {note}")


def gb(n: int) -> str:
    return f"{n / 2**30:.2f} GB"


def verdict(ratio: float, target: float) -> str:
    return "MET" if ratio >= target else "MISSED"


# ---------------------------------------------------------------------------------------------- main


def main() -> int:
    import psutil

    began = time.monotonic()
    print(
        f"bench-features: {ROWS:,} rows, {ENTITIES:,} entities; {os.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    source = events()
    work = Path(tempfile.mkdtemp(prefix="loom-bench-features-"))
    r = Redis(work)
    table = Table()
    results: dict[str, Any] = {}
    try:
        run_all(source, work, r, table, results)
    finally:
        r.stop()
        if not os.environ.get("LOOM_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    table.print()
    print(
        f"\nwall {time.monotonic() - began:.0f} s; load average at the end {os.getloadavg()[0]:.1f} "
        "(other work on this machine shares its CPUs)"
    )
    (CACHE / "last-results.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


def run_all(source: Path, work: Path, r: Redis, table: Table, results: dict[str, Any]) -> None:
    glob = str(source / "*.parquet")
    sql_file = work / "features.sql"
    sql_file.write_text(SQL)

    # 1. offline: Loom vs bare DuckDB
    print("1. offline: Loom local engine vs bare DuckDB COPY", flush=True)
    duck_out = work / "duckdb-features.parquet"
    duck = measure(
        [sys.executable, str(HERE / "duckdb_copy.py"), glob, START, END, str(sql_file), str(duck_out)]
    )
    offline_p = write_pipeline(
        work / "offline.yaml", pipeline("offline", source, offline=work / "offline", redis=None)
    )
    loom_off = loom_run(offline_p)
    results["duckdb"], results["loom_offline"] = vars(duck), vars(loom_off)
    if duck.ok:
        table.add(
            "bare DuckDB COPY -> Parquet (rows/s)",
            f"{ROWS / duck.seconds:,.0f}",
            gb(duck.rss),
            f"{duck.seconds:.1f} s, {duck.result.get('rows_out', 0):,} feature rows",
        )
    else:
        table.add("bare DuckDB COPY -> Parquet", "failed", "", duck.why())
    if loom_off.ok and duck.ok:
        ratio = duck.seconds / loom_off.seconds
        inner_loom = float(loom_off.result.get("seconds", 0))
        inner_duck = float(duck.result.get("seconds", 0))
        table.add(
            "Loom local -> Parquet (rows/s)",
            f"{ROWS / loom_off.seconds:,.0f}",
            gb(loom_off.rss),
            f"{ratio:.2f}x DuckDB (target >= 0.8x: {verdict(ratio, 0.8)}); {loom_off.seconds:.1f} s; "
            f"in-process (after imports) {inner_loom:.1f} s vs DuckDB's {inner_duck:.1f} s: "
            f"{inner_duck / max(inner_loom, 1e-9):.2f}x",
        )
    else:
        table.add("Loom local -> Parquet", "failed", "", loom_off.why())

    # 2. online, Loom layout, and the HSET ceiling
    print("2. online (loom layout) vs redis-benchmark HSET", flush=True)
    ceiling, bench_cmd = hset_ceiling(r)
    table.add("redis-benchmark HSET ceiling (ops/s)", f"{ceiling:,.0f}", "", bench_cmd)
    r.db(0).flushdb()
    cpu0 = r.cpu()
    online_p = write_pipeline(
        work / "online.yaml",
        pipeline("online", source, offline=None, redis={"url": r.url(0), "keyPrefix": "user:"}),
    )
    loom_on = loom_run(online_p)
    results["loom_online"] = vars(loom_on)
    if loom_on.ok:
        n = loom_on.result["online_written"]
        phase = loom_on.result.get("phases", {}).get("online") or loom_on.seconds
        server = redis_note(r, cpu0, n, phase)
        table.add(
            "Loom local -> Redis, loom layout (entities/s)",
            f"{n / loom_on.seconds:,.0f}",
            gb(loom_on.rss),
            f"whole run {loom_on.seconds:.1f} s for {n:,} entities ({ROWS:,} rows in)",
        )
        ratio = n / phase / ceiling
        table.add(
            "  its online phase (entities/s)",
            f"{n / phase:,.0f}",
            "",
            f"{ratio:.0%} of the HSET ceiling (target >= 40 %: {verdict(ratio, 0.4)}); "
            f"{phase:.1f} s; {server}",
        )
    else:
        table.add("Loom local -> Redis, loom layout", "failed", "", loom_on.why())
    r.db(0).flushdb()

    # 3. Feast layout: Loom vs Feast's own materialize
    print("3. Feast layout: Loom vs Feast materialize", flush=True)
    run_feast(source, work, r, table, results, duck_out if duck.ok else None)

    # 4. Spark and Ray
    for engine in ("spark", "ray"):
        print(f"4. engine {engine}", flush=True)
        if engine in SKIP:
            table.add(f"Loom --engine {engine} -> Parquet", "not measured", "", "skipped (LOOM_BENCH_SKIP)")
            continue
        p = write_pipeline(
            work / f"{engine}.yaml",
            pipeline(f"off-{engine}", source, offline=work / f"offline-{engine}", redis=None),
        )
        m = loom_run(p, engine)
        results[engine] = vars(m)
        if m.ok:
            note = f"{m.seconds:.1f} s"
            if loom_off.ok:
                note += f"; {loom_off.seconds / m.seconds:.2f}x Loom local"
            rows_out = m.result.get("rows_out")
            if rows_out is not None and rows_out != (
                loom_off.result.get("rows_out") if loom_off.ok else rows_out
            ):
                note += f"; rows_out {rows_out} differs from local"
            table.add(
                f"Loom --engine {engine} -> Parquet (rows/s)", f"{ROWS / m.seconds:,.0f}", gb(m.rss), note
            )
        else:
            table.add(f"Loom --engine {engine} -> Parquet", "not measured", "", m.why())

    # 5. encoders
    if duck.ok:
        print("5. encoders", flush=True)
        enc = measure([sys.executable, str(HERE / "encoders.py"), str(duck_out), "200000"])
        results["encoders"] = vars(enc)
        if enc.ok:
            e = enc.result
            table.add(
                "encode, Feast materialization path (us/entity)",
                f"{e['feast_materialization_us']:.1f}",
                "",
                "_convert_arrow_to_proto + _redis_key + SerializeToString, 200k entities",
            )
            table.add(
                "encode, one Value_pb2 per value (us/entity)",
                f"{e['protobuf_per_value_us']:.1f}",
                "",
                "generated protobuf (upb), Loom's keys/timestamps",
            )
            table.add(
                "encode, Loom vectorized (us/entity)",
                f"{e['loom_vectorized_us']:.1f}",
                "",
                f"{e['protobuf_per_value_us'] / e['loom_vectorized_us']:.0f}x faster than Value_pb2 per "
                "value; bytes proved identical by test_features_feast.py",
            )
        else:
            table.add("encoders", "failed", "", enc.why())
    peaks = [
        m["rss"] for k, m in results.items() if k.startswith("loom") and isinstance(m, dict) and m.get("rss")
    ]
    if peaks:
        table.add(
            "peak RSS of Loom's local runs",
            gb(max(peaks)),
            "",
            f"target <= 2 GB at {ROWS:,} rows: {'MET' if max(peaks) <= 2 * 2**30 else 'MISSED'}",
        )


def run_feast(
    source: Path, work: Path, r: Redis, table: Table, results: dict[str, Any], features: Path | None
) -> None:
    import pyarrow.parquet as pq

    feast_redis = {
        "url": r.url(1),
        "format": "feast",
        "feast": {"project": "bench", "featureView": "user_stats"},
    }
    p = write_pipeline(work / "feast.yaml", pipeline("feast", source, offline=None, redis=feast_redis))
    r.db(1).flushdb()
    cpu0 = r.cpu()
    loom_f = loom_run(p)
    results["loom_feast"] = vars(loom_f)
    if not loom_f.ok:
        table.add("Loom local -> Redis, feast layout", "failed", "", loom_f.why())
        return
    n = loom_f.result["online_written"]
    phase = loom_f.result.get("phases", {}).get("online") or loom_f.seconds
    server = redis_note(r, cpu0, n, phase)
    table.add(
        "Loom local -> Redis, feast layout (entities/s)",
        f"{n / loom_f.seconds:,.0f}",
        gb(loom_f.rss),
        f"whole run {loom_f.seconds:.1f} s (computes the features from {ROWS:,} rows)",
    )
    table.add(
        "  its online phase (entities/s)",
        f"{n / phase:,.0f}",
        "",
        f"{phase:.1f} s; {server}",
    )
    if "feast" in SKIP or features is None:
        table.add(
            "Feast materialize",
            "not measured",
            "",
            "skipped" if features else "no feature rows (DuckDB failed)",
        )
        return

    # Feast reads the same feature rows (the DuckDB COPY output of the same SQL), optionally a subset
    feast_rows = work / "feast-source.parquet"
    rows = pq.read_table(features)
    if FEAST_ROWS:
        rows = rows.sort_by("user_id").slice(0, FEAST_ROWS)
    pq.write_table(rows, feast_rows)
    obj = pipeline("feast", source, offline=work / "feast-offline", redis={**feast_redis, "url": r.url(2)})
    repo_p = write_pipeline(work / "feast-repo.yaml", obj)
    repo = work / "feast-repo"
    gen = measure([LOOM, "features", "feast-repo", "-f", str(repo_p), "--out", str(repo)])
    if not gen.ok:
        table.add("loom features feast-repo", "failed", "", gen.why())
        return
    text = (
        (repo / "features.py").read_text().replace(repr(str(work / "feast-offline")), repr(str(feast_rows)))
    )
    (repo / "features.py").write_text(text)
    # Loom over exactly the rows Feast reads (`SELECT *` of the same Parquet), into its own database
    same_p = pipeline("feast-rows", feast_rows, offline=None, redis={**feast_redis, "url": r.url(3)})
    same_p["spec"]["transform"] = {"sql": "SELECT * FROM source"}
    r.db(3).flushdb()
    cpu0 = r.cpu()
    loom_same = loom_run(write_pipeline(work / "feast-rows.yaml", same_p))
    results["loom_feast_rows"] = vars(loom_same)
    if loom_same.ok:
        same_n = loom_same.result["online_written"]
        same_phase = loom_same.result.get("phases", {}).get("online") or loom_same.seconds
        server = redis_note(r, cpu0, same_n, same_phase)
        table.add(
            "Loom feast layout, Feast's input rows (entities/s)",
            f"{same_n / loom_same.seconds:,.0f}",
            gb(loom_same.rss),
            f"whole run {loom_same.seconds:.1f} s: the Parquet feature rows Feast materializes, SELECT *; "
            f"online phase {same_phase:.1f} s ({same_n / same_phase:,.0f}/s); {server}; "
            f"Loom's process used {loom_same.cpu / max(same_n, 1) * 1e6:.1f} us CPU/entity",
        )
    else:
        table.add("Loom feast layout, Feast's input rows", "failed", "", loom_same.why())
    r.db(3).flushdb()
    r.db(2).flushdb()
    feast_cli = str(BIN / "feast")
    applied = measure([feast_cli, "apply"], cwd=repo)
    if not applied.ok:
        table.add("feast apply", "failed", "", applied.why())
        return
    fm = measure([feast_cli, "materialize", "2026-10-31T00:00:00", "2026-11-03T00:00:00"], cwd=repo)
    results["feast"] = vars(fm)
    if not fm.ok:
        table.add("Feast materialize", "not measured", "", fm.why())
        return
    written = r.db(2).dbsize()
    seconds = fm.seconds
    subset = f" (subset: first {FEAST_ROWS:,} entities)" if FEAST_ROWS else ""
    table.add(
        "Feast materialize -> Redis (entities/s)",
        f"{written / seconds:,.0f}",
        gb(fm.rss),
        f"`feast materialize` {seconds:.1f} s for {written:,} entities{subset} "
        f"({fm.cpu / max(written, 1) * 1e6:.0f} us CPU/entity), local engine "
        f"(after `feast apply` of loom features feast-repo's repository, {applied.seconds:.1f} s)",
    )
    feast_rate = written / seconds
    if loom_same.ok:
        same_ratio = (same_n / loom_same.seconds) / feast_rate
        table.add(
            "  Loom / Feast, same input rows",
            f"{same_ratio:.1f}x",
            "",
            f"target >= 15x: {verdict(same_ratio, 15)}; peak RSS {gb(loom_same.rss)} vs {gb(fm.rss)}",
        )
    whole = (n / loom_f.seconds) / feast_rate
    write = (n / phase) / feast_rate
    table.add(
        "  Loom from raw events / Feast",
        f"{whole:.1f}x",
        "",
        f"Loom's whole run also computes the features from {ROWS:,} events; its online phase alone "
        f"{write:.1f}x; peak RSS {gb(loom_f.rss)} vs {gb(fm.rss)}",
    )
    same, total = compare_hashes(r, rows.column("user_id").to_numpy())
    table.add(
        "  byte-identical hashes (sample)",
        f"{same}/{total}",
        "",
        "HGETALL of the same entity keys in Loom's db and Feast's db" + ("" if same == total else ": DIFFER"),
    )
    results["hashes"] = {"same": same, "total": total}


def compare_hashes(r: Redis, users: np.ndarray[Any, Any]) -> tuple[int, int]:
    import pyarrow as pa

    from loom.api.featurepipeline import FeastLayout
    from loom.features import feast as F

    rng = np.random.default_rng(9)
    sample = rng.choice(users, size=min(SAMPLE, len(users)), replace=False)
    batch = pa.record_batch(
        {
            "user_id": pa.array(sample, pa.int64()),
            "event_time": pa.nulls(len(sample), pa.timestamp("us")),
            "x": pa.nulls(len(sample), pa.float64()),
        }
    )
    schema = F.feast_schema(
        batch.schema, ["user_id"], "event_time", FeastLayout(project="bench", featureView="v")
    )
    keys = F.entity_keys(batch, schema, "bench").to_pylist()
    ours, theirs = r.db(1), r.db(2)
    same, shown = 0, False
    for key in keys:
        a, b = ours.hgetall(key), theirs.hgetall(key)
        same += int(bool(a) and a == b)
        if a != b and not shown:
            shown = True
            print(f"  first difference, key {key!r}:\n    loom  {a}\n    feast {b}", flush=True)
    return same, len(keys)


if __name__ == "__main__":
    sys.exit(main())
