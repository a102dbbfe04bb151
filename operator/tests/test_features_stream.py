"""`loom features stream` against a real redis-server: consumers of one group share a stream, a killed one's
entries are claimed by the others, poison entries are dead-lettered, SIGTERM exits cleanly, a commit cut
short is rolled forward. At the end the online store equals the state computed from the events alone, and
the offline files hold every event exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import yaml

from loom.api.featurepipeline import FeaturePipeline
from loom.builders.featurepipeline import Images, desired_stream
from loom.features.offline import OfflineStore
from loom.features.stream import serve
from loom.features.stream_batch import Sinks, run_batch
from loom.features.stream_commit import Committer, journal_key
from loom.features.stream_decode import decode

STREAM, GROUP = "events", "loom"
T0 = datetime(2026, 11, 1, 10, tzinfo=UTC)
ROWWISE_SQL = (
    "SELECT user_id, event_time, CAST(event_id AS BIGINT) AS event_id, CAST(clicks AS BIGINT) AS clicks, "
    "CAST(dwell_ms AS DOUBLE) AS dwell_ms, country FROM source"
)
FAST = {"LOOM_STREAM_CLAIM_IDLE": "2s", "LOOM_STREAM_REPORT_EVERY": "1s", "LOOM_DUCKDB_THREADS": "1"}


def pipeline(
    tmp_path: Path,
    redis_url: str,
    *,
    batch_size: int = 250,
    max_latency: str = "100ms",
    offline: bool = True,
) -> FeaturePipeline:
    sinks: dict[str, Any] = {"online": {"redis": {"url": redis_url, "keyPrefix": "user:"}}}
    if offline:
        sinks["offline"] = {"path": str(tmp_path / "features"), "partitionBy": ["date"]}
    return FeaturePipeline.model_validate(
        {
            "metadata": {"name": "clicks", "namespace": "default"},
            "spec": {
                "mode": "streaming",
                "source": {
                    "redisStream": {"url": redis_url, "stream": STREAM, "group": GROUP},
                    "timestampField": "event_time",
                    "entityKeys": ["user_id"],
                },
                "transform": {"sql": ROWWISE_SQL},
                "streaming": {"consumers": 3, "batchSize": batch_size, "maxLatency": max_latency},
                "sinks": sinks,
            },
        }
    )


def write(p: FeaturePipeline, tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    body = {"apiVersion": "loom.ml/v1alpha1", "kind": "FeaturePipeline"}
    path.write_text(yaml.safe_dump({**body, **p.model_dump(mode="json", exclude_none=True)}))
    return path


def events(n: int, entities: int, *, seed: int = 7, first_id: int = 0) -> list[dict[str, str]]:
    """n events over `entities` users; event times unique, about 10% out of order; half of them RFC 3339,
    half epoch milliseconds."""
    rng = random.Random(seed)
    times = [T0 + timedelta(milliseconds=7 * i) for i in range(n)]
    for i in range(n):
        if rng.random() < 0.1:
            j = max(0, i - rng.randint(1, 300))
            times[i], times[j] = times[j], times[i]
    out = []
    for i, t in enumerate(times):
        stamp = t.isoformat().replace("+00:00", "Z") if i % 2 else str(int(t.timestamp() * 1000))
        out.append(
            {
                "event_id": str(first_id + i),
                "user_id": f"u{rng.randrange(entities)}",
                "event_time": stamp,
                "clicks": str(rng.randrange(100)),
                "dwell_ms": str(rng.randrange(4000) / 4),
                "country": rng.choice(["fr", "de", "jp", "br"]),
            }
        )
    return out


def event_time(e: dict[str, str]) -> datetime:
    text = e["event_time"]
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    return datetime.fromisoformat(text)


def expected_online(evs: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    """Per entity, the values of its latest event, computed from the events alone."""
    latest: dict[str, dict[str, str]] = {}
    for e in evs:
        if e["user_id"] not in latest or event_time(e) > event_time(latest[e["user_id"]]):
            latest[e["user_id"]] = e
    features = ("event_id", "clicks", "dwell_ms", "country")
    return {u: {f: e[f] for f in features} for u, e in latest.items()}


def online_state(client: Any) -> dict[str, dict[str, str]]:
    out = {}
    for key in client.scan_iter(match="user:*"):
        h = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
        assert int(h.pop("_ts:clicks")) > 0
        h["dwell_ms"] = str(float(h["dwell_ms"]))
        out[key.decode().removeprefix("user:")] = h
    return out


def offline_event_ids(tmp_path: Path) -> list[int]:
    dataset = ds.dataset(tmp_path / "features", format="parquet", partitioning="hive")
    if not dataset.files:
        return []
    return sorted(dataset.to_table(columns=["event_id"])["event_id"].to_pylist())


def produce(client: Any, evs: list[dict[str, str]], *, chunk: int = 500, pause: float = 0.0) -> None:
    for i in range(0, len(evs), chunk):
        pipe = client.pipeline(transaction=False)
        for e in evs[i : i + chunk]:
            pipe.xadd(STREAM, e)
        pipe.execute()
        time.sleep(pause)


def group_info(client: Any) -> dict[str, Any]:
    if not client.exists(STREAM):
        return {}
    for g in client.xinfo_groups(STREAM):
        if g["name"] == GROUP.encode():
            return dict(g)
    return {}


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def drained(client: Any, total: int) -> Callable[[], bool]:
    def check() -> bool:
        g = group_info(client)
        return bool(g) and g["entries-read"] == total and g["pending"] == 0

    return check


def pending_of(client: Any, consumer: str) -> int:
    return len(client.xpending_range(STREAM, GROUP, "-", "+", 100_000, consumername=consumer))


class Consumer:
    """`python -m loom.cli features stream -f P` as the pod runs it (POD_NAME names the consumer)."""

    def __init__(
        self, path: Path, name: str, env: dict[str, str] | None = None, argv: list[str] | None = None
    ) -> None:
        self.name = name
        self.out = path.parent / f"{name}.out"
        self.err = path.parent / f"{name}.err"
        self.proc = subprocess.Popen(
            argv or [sys.executable, "-m", "loom.cli", "features", "stream", "-f", str(path)],
            stdout=open(self.out, "w"),  # noqa: SIM115 - the child owns it
            stderr=open(self.err, "w"),  # noqa: SIM115
            env={**os.environ, **FAST, "POD_NAME": name, **(env or {})},
            cwd=path.parent,
        )

    def stop(self, timeout: float = 20) -> dict[str, Any]:
        """SIGTERM; exit code 0 and the summary, the last stdout line."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        assert rc == 0, f"{self.name} exited {rc}: {self.err.read_text()[-3000:]}"
        summary: dict[str, Any] = json.loads(self.out.read_text().strip().splitlines()[-1])
        assert "progress" not in summary
        return summary

    def progress(self) -> dict[str, Any]:
        """Its latest progress line (nothing yet: {})."""
        lines = self.out.read_text().splitlines()
        return json.loads(lines[-1]) if lines and lines[-1].endswith("}") else {}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def consumers() -> Iterator[list[Consumer]]:
    started: list[Consumer] = []
    yield started
    for c in started:
        c.kill()


def kill_holding_entries(client: Any, c: Consumer, timeout: float = 20) -> int:
    """SIGKILL `c` at a moment it holds delivered, unacked entries; how many it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c.proc.send_signal(signal.SIGSTOP)
        held = pending_of(client, c.name)
        if held:
            c.kill()
            return held
        c.proc.send_signal(signal.SIGCONT)
        time.sleep(0.03)
    pytest.fail(f"{c.name} never held pending entries")


def test_consumers_share_the_stream_and_the_entries_of_a_killed_one_are_claimed(
    tmp_path: Path, redis_db: Any, redis_url: str, consumers: list[Consumer]
) -> None:
    evs = events(20_000, 500)
    path = write(pipeline(tmp_path, redis_url, batch_size=500), tmp_path)
    consumers += [Consumer(path, name) for name in ("c1", "c2", "c3")]
    producer = threading.Thread(target=produce, args=(redis_db, evs), kwargs={"pause": 0.1})
    producer.start()
    wait_for("c1 to commit micro-batches", lambda: consumers[0].progress().get("batches", 0) >= 2, 30)
    held = kill_holding_entries(redis_db, consumers[0])
    producer.join()
    wait_for("every entry to be processed", drained(redis_db, len(evs)), 40)
    summaries = [c.stop() for c in consumers[1:]]

    assert held > 0 and pending_of(redis_db, "c1") == 0
    assert sum(s["claimed"] for s in summaries) >= held
    assert all(s["consumer"] in ("c2", "c3") and s["rows_in"] > 0 for s in summaries)
    assert online_state(redis_db) == expected_online(evs)
    assert offline_event_ids(tmp_path) == list(range(len(evs)))  # every event once: exactly-once offline
    assert redis_db.hlen(journal_key(STREAM, GROUP)) == 0
    assert redis_db.xlen(f"{STREAM}:dead") == 0
    assert not list((tmp_path / "features" / ".loom-staging").glob("stream-*"))


def test_the_deployments_consumer_exits_0_on_sigterm_with_its_micro_batch_acked(
    tmp_path: Path, redis_db: Any, redis_url: str, consumers: list[Consumer]
) -> None:
    port = _free_port()
    log = tmp_path / "termination-log"
    # The container of the controller's Deployment: its command, args and env (POD_NAME from the pod).
    p = pipeline(tmp_path, redis_url, batch_size=100)
    p.metadata["uid"] = "0b5e1c9e-0000-4000-8000-000000000001"  # as the API server sets it
    container = desired_stream(p, Images())["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", "solo") for e in container["env"]}
    assert env["POD_NAME"] == "solo" and "LOOM_PIPELINE" in env
    env |= {"LOOM_METRICS_PORT": str(port), "LOOM_TERMINATION_LOG": str(log)}  # not /dev/termination-log
    argv = [str(Path(sys.executable).with_name(container["command"][0])), *container["args"]]
    consumers.append(Consumer(tmp_path / "pipeline.yaml", "solo", env=env, argv=argv))
    evs = events(4000, 50)
    producer = threading.Thread(target=produce, args=(redis_db, evs), kwargs={"chunk": 100, "pause": 0.05})
    producer.start()
    wait_for("500 entries read", lambda: group_info(redis_db).get("entries-read", 0) >= 500, 30)
    metrics = _scrape(port)
    wait_for("a progress line", lambda: bool(consumers[0].out.read_text()), 10)
    summary = consumers[0].stop()
    producer.join()

    assert json.loads(log.read_text()) == summary
    assert pending_of(redis_db, "solo") == 0  # what it had read was finished and acked
    assert summary["rows_in"] == summary["rows_out"] == group_info(redis_db)["entries-read"]
    assert 0 < summary["rows_in"] < len(evs)  # stopped mid-stream
    assert summary["newest_event"] and summary["freshness_seconds"] is not None
    assert len(offline_event_ids(tmp_path)) == summary["rows_out"]
    labels = '{name="clicks",namespace="default"}'
    assert float(metrics[f"loom_feature_rows_written_total{labels}"]) > 0
    assert f"loom_feature_freshness_seconds{labels}" in metrics
    progress = [json.loads(line) for line in consumers[0].out.read_text().splitlines()[:-1]]
    assert progress and all(p["progress"] and "lag" in p and "pending" in p for p in progress)


def test_poison_entries_are_dead_lettered_with_their_reason_and_the_rest_is_written(
    tmp_path: Path, redis_db: Any, redis_url: str
) -> None:
    good = events(400, 30)
    stamp = good[0]["event_time"]
    poison = {
        "no key": {"event_id": "900001", "event_time": stamp, "clicks": "1", "country": "fr"},
        "empty key": {"event_id": "900002", "user_id": "", "event_time": stamp, "clicks": "1"},
        "bad time": {"event_id": "900003", "user_id": "u1", "event_time": "yesterday", "clicks": "1"},
        "no time": {"event_id": "900004", "user_id": "u1", "clicks": "1"},
        "bad cast": {"event_id": "900005", "user_id": "u1", "event_time": stamp, "clicks": "lots"},
        "not utf8": {"event_id": "900006", "user_id": "u1", "event_time": stamp, "country": b"\xff\xfe"},
    }
    reasons = {
        "no key": "entry has no entity key field user_id",
        "empty key": "entry has an empty entity key user_id",
        "bad time": "field event_time is neither an RFC 3339 time",
        "no time": "entry has no timestamp field event_time",
        "bad cast": "Could not convert string 'lots' to INT64",
        "not utf8": "field country is not UTF-8 text",
        "redelivered": "delivered 7 times without an ack",
    }
    # An entry a consumer died on again and again: delivered 6 times before anyone here reads it.
    redis_db.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    crashed = redis_db.xadd(STREAM, {**good[0], "event_id": "900007"})
    redis_db.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=1)
    for _ in range(5):
        redis_db.xclaim(STREAM, GROUP, "ghost", 0, [crashed])
    ids = {"redelivered": crashed}
    produce(redis_db, good[:200])
    for what, entry in poison.items():
        ids[what] = redis_db.xadd(STREAM, entry)
    produce(redis_db, good[200:])

    summary = _serve_until(pipeline(tmp_path, redis_url), drained(redis_db, len(good) + len(poison) + 1))

    dead = {e[b"_loom_id"]: e for _, e in redis_db.xrange(f"{STREAM}:dead")}
    assert set(dead) == set(ids.values())
    for what, entry_id in ids.items():
        assert reasons[what] in dead[entry_id][b"_loom_reason"].decode(), what
        assert dead[entry_id][b"_loom_group"] == GROUP.encode()
    assert dead[ids["not utf8"]][b"country"] == b"\xff\xfe"  # the entry as it was, to replay
    assert summary["dead_letters"] == 7 and summary["rows_out"] == len(good)
    assert online_state(redis_db) == expected_online(good)
    assert offline_event_ids(tmp_path) == list(range(len(good)))
    assert group_info(redis_db)["pending"] == 0


def test_a_restarted_consumer_first_finishes_its_own_pending_entries(
    tmp_path: Path, redis_db: Any, redis_url: str
) -> None:
    evs = events(120, 10)
    redis_db.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    produce(redis_db, evs)
    redis_db.xreadgroup(GROUP, "pod-a", {STREAM: ">"}, count=len(evs))  # read, then the pod died
    assert pending_of(redis_db, "pod-a") == len(evs)

    env = {"POD_NAME": "pod-a", "LOOM_STREAM_CLAIM_IDLE": "1h"}  # no claims: only ID 0 can find them
    summary = _serve_until(pipeline(tmp_path, redis_url), drained(redis_db, len(evs)), env=env)

    assert summary["consumer"] == "pod-a" and summary["claimed"] == 0
    assert summary["rows_in"] == len(evs)
    assert online_state(redis_db) == expected_online(evs)
    assert offline_event_ids(tmp_path) == list(range(len(evs)))


def test_a_commit_cut_short_before_its_renames_is_rolled_forward_by_the_next_consumer(
    tmp_path: Path, redis_db: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    evs = events(150, 10)
    produce(redis_db, evs)
    p = pipeline(tmp_path, redis_url, batch_size=1000)

    def die(self: Committer, token: str, record: Any) -> int:
        raise SystemExit("killed between the commit point and the renames")

    with monkeypatch.context() as m:
        m.setattr(Committer, "roll_forward", die)
        with pytest.raises(SystemExit):
            serve(p, consumer="a", env=FAST)
    assert group_info(redis_db)["pending"] == 0  # acked: the commit point was passed
    assert redis_db.hlen(journal_key(STREAM, GROUP)) == 1
    assert not (tmp_path / "features").exists() or offline_event_ids(tmp_path) == []

    summary = _serve_until(p, lambda: redis_db.hlen(journal_key(STREAM, GROUP)) == 0, consumer="b")

    assert summary["rows_in"] == 0  # nothing left to read: b only finished a's commit
    assert offline_event_ids(tmp_path) == list(range(len(evs)))
    assert not list((tmp_path / "features" / ".loom-staging").glob("stream-*"))


def test_a_micro_batch_with_an_entry_claimed_away_meanwhile_is_not_committed(
    tmp_path: Path, redis_db: Any, redis_url: str
) -> None:
    p = pipeline(tmp_path, redis_url)
    redis_db.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    produce(redis_db, events(10, 3))
    entries = redis_db.xreadgroup(GROUP, "slow", {STREAM: ">"}, count=10)[0][1]
    redis_db.xclaim(STREAM, GROUP, "fast", 0, [entries[3][0]])  # "slow" took too long: "fast" claimed one
    assert p.spec.sinks.offline is not None
    store = OfflineStore(p.spec.sinks.offline, "event_time")
    committer = Committer(
        redis_db, stream=STREAM, group=GROUP, consumer="slow", pipeline="clicks", store=store
    )

    result = run_batch(entries, pipeline=p, sinks=Sinks(store=store, writer=None, committer=committer))

    assert not result.committed
    assert pending_of(redis_db, "slow") == 9 and pending_of(redis_db, "fast") == 1  # nothing acked
    assert offline_event_ids(tmp_path) == []  # the entries' rows come from whoever commits them
    assert not list((tmp_path / "features" / ".loom-staging").glob("stream-*"))
    assert redis_db.hlen(journal_key(STREAM, GROUP)) == 0 and redis_db.xlen(f"{STREAM}:dead") == 0


def test_an_online_only_pipeline_writes_redis_and_acks(tmp_path: Path, redis_db: Any, redis_url: str) -> None:
    evs = events(300, 40)
    produce(redis_db, evs)

    summary = _serve_until(pipeline(tmp_path, redis_url, offline=False), drained(redis_db, len(evs)))

    assert summary["rows_out"] == len(evs) and summary["offline_files"] == 0
    assert online_state(redis_db) == expected_online(evs)
    assert not (tmp_path / "features").exists()


@pytest.mark.parametrize(
    ("change", "exit_code", "message"),
    [
        pytest.param(
            {"source": {"parquet": {"path": "/data"}, "timestampField": "event_time", "entityKeys": ["u"]}},
            65,
            "loom features stream reads source.redisStream",
            id="a-batch-pipeline",
        ),
        pytest.param({"transform": {"sql": "SELEC user_id FROM source"}}, 65, "syntax error", id="bad-sql"),
        pytest.param({"url": "redis://127.0.0.1:1/0"}, 69, "unreachable", id="redis-down"),
    ],
)
def test_what_cannot_run_exits_before_reading_with_the_reason(
    tmp_path: Path, redis_url: str, change: dict[str, Any], exit_code: int, message: str
) -> None:
    spec = pipeline(tmp_path, redis_url).model_dump(mode="json", exclude_none=True)
    if "url" in change:
        spec["spec"]["source"]["redisStream"]["url"] = change["url"]
    else:
        spec["spec"].update(change)
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, "-m", "loom.cli", "features", "stream", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == exit_code, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["exit_code"] == exit_code and message in summary["error"]


def test_entries_decode_to_typed_rows_vectorized() -> None:
    entries = [
        {b"user_id": b"1", b"event_time": b"2026-11-01T10:00:00Z", b"x": b"a"},
        {b"user_id": b"2", b"event_time": b"1793527200250"},
        {b"user_id": b"3", b"event_time": b"2026-11-01T12:00:00.123456789+02:00"},
        {b"user_id": b"4", b"event_time": b"2026-11-01 10:00:00"},
    ]
    out = decode(entries, ["user_id"], "event_time")

    assert out.index.tolist() == [0, 1, 2]
    assert out.refused == {3: out.refused[3]} and "RFC 3339" in out.refused[3]
    assert str(out.table.schema.field("event_time").type) == "timestamp[us, tz=UTC]"
    assert out.table.schema.field("x").type == "string"
    rows = out.table.to_pylist()
    assert [r["event_time"] for r in rows] == [
        T0,
        datetime.fromtimestamp(1793527200.25, UTC),
        T0 + timedelta(microseconds=123456),
    ]
    assert rows[1]["x"] is None


def _serve_until(
    p: FeaturePipeline,
    done: Callable[[], bool],
    *,
    consumer: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> dict[str, Any]:
    """serve() in a thread until `done`; its summary."""
    stop = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["summary"] = serve(p, consumer=consumer, stop=stop, env={**FAST, **(env or {})})
        except BaseException as exc:  # reported below
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for("the consumer to finish", lambda: done() or "error" in result, timeout)
    finally:
        stop.set()
        thread.join(timeout=30)
    if "error" in result:
        raise result["error"]
    summary: dict[str, Any] = result["summary"]
    return summary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _scrape(port: int) -> dict[str, str]:
    """The consumer's metrics, once rows were written: sample name with labels -> value."""
    deadline = time.monotonic() + 20
    while True:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            text = ""
        samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        written = [v for k, v in samples.items() if k.startswith("loom_feature_rows_written_total")]
        if written and float(written[0]) > 0:
            return samples
        if time.monotonic() > deadline:
            pytest.fail(f"no rows written in the metrics on port {port}: {text[-2000:]}")
        time.sleep(0.1)
