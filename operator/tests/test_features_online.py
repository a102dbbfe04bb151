"""The online writer against a real redis-server: Loom's layout, compare-and-write by event time, ttl."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from loom.api.featurepipeline import RedisSink
from loom.features import online
from loom.features.errors import EX_DATAERR, EX_UNAVAILABLE, PipelineError
from loom.features.online import RedisWriter

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
T0_MICROS = int(T0.timestamp()) * 1_000_000


def writer(url: str, **sink: Any) -> RedisWriter:
    keys = sink.pop("keys", ["user_id"])
    return RedisWriter(RedisSink(url=url, **sink), "clicks", keys, "event_time")


def table(rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def ts(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_text_forms_of_every_type(redis_db: Any, redis_url: str) -> None:
    schema = pa.schema(
        [
            ("user_id", pa.int64()),
            ("event_time", pa.timestamp("us", tz="UTC")),
            ("i", pa.int32()),
            ("f", pa.float64()),
            ("f32", pa.float32()),
            ("b", pa.bool_()),
            ("s", pa.string()),
            ("t", pa.timestamp("ms")),
            ("d", pa.date32()),
            ("dec", pa.decimal128(6, 2)),
            ("raw", pa.binary()),
            ("cat", pa.dictionary(pa.int8(), pa.string())),
        ]
    )
    row = {
        "user_id": 7,
        "event_time": ts(0),
        "i": -3,
        "f": 0.1,
        "f32": 0.1,
        "b": True,
        "s": "é:x",
        "t": dt.datetime(2026, 1, 2, 3, 4, 5, 678000),
        "d": dt.date(2026, 1, 2),
        "dec": Decimal("12.50"),
        "raw": b"\x00\xff",
        "cat": "red",
    }
    with writer(redis_url, keyPrefix="user:") as w:
        assert w.write(table([row], schema)) == 1
    assert redis_db.hgetall("user:7") == {
        b"_ts:clicks": str(T0_MICROS).encode(),
        b"i": b"-3",
        b"f": b"0.1",
        b"f32": b"0.1",
        b"b": b"true",
        b"s": "é:x".encode(),
        b"t": b"2026-01-02T03:04:05.678Z",
        b"d": b"2026-01-02",
        b"dec": b"12.50",
        b"raw": b"\x00\xff",
        b"cat": b"red",
    }


def test_floats_are_shortest_round_trip(redis_db: Any, redis_url: str) -> None:
    values = [1e20, 1.5e-7, 123456789.125, 1 / 3, float("inf")]
    rows = [{"user_id": i, "event_time": ts(0), "x": v} for i, v in enumerate(values)]
    with writer(redis_url) as w:
        w.write(table(rows))
    for i, v in enumerate(values):
        assert float(redis_db.hget(str(i), "x")) == v


def test_key_joins_entity_keys_in_order_after_the_prefix(redis_db: Any, redis_url: str) -> None:
    rows = [{"country": "de", "user_id": 42, "event_time": ts(0), "n": 1}]
    with writer(redis_url, keyPrefix="geo:", keys=["country", "user_id"]) as w:
        w.write(table(rows))
    assert redis_db.keys("*") == [b"geo:de:42"]
    assert redis_db.hget("geo:de:42", "n") == b"1"


def test_older_never_overwrites_equal_and_newer_do(redis_db: Any, redis_url: str) -> None:
    with writer(redis_url) as w:
        assert w.write(table([{"user_id": 1, "event_time": ts(10), "v": "first"}])) == 1
        assert w.write(table([{"user_id": 1, "event_time": ts(5), "v": "older"}])) == 0
        assert redis_db.hget("1", "v") == b"first"
        assert w.write(table([{"user_id": 1, "event_time": ts(10), "v": "corrected"}])) == 1
        assert redis_db.hget("1", "v") == b"corrected"
        assert w.write(table([{"user_id": 1, "event_time": ts(11), "v": "newer"}])) == 1
    assert redis_db.hget("1", "v") == b"newer"
    assert redis_db.hget("1", "_ts:clicks") == str(T0_MICROS + 11 * 60_000_000).encode()


def test_rows_of_one_entity_in_one_batch_end_at_the_newest(redis_db: Any, redis_url: str) -> None:
    rows = [{"user_id": 1, "event_time": ts(m), "v": m} for m in (3, 9, 1, 9, 4)]
    rows[3]["v"] = 99  # the later of two equal times wins
    with writer(redis_url) as w:
        assert w.write(table(rows)) == 3
    assert redis_db.hget("1", "v") == b"99"


def test_a_null_removes_the_field(redis_db: Any, redis_url: str) -> None:
    schema = pa.schema([("user_id", pa.int64()), ("event_time", pa.timestamp("us")), ("a", pa.int64())])
    with writer(redis_url) as w:
        w.write(table([{"user_id": 1, "event_time": ts(0).replace(tzinfo=None), "a": 5}], schema))
        w.write(table([{"user_id": 1, "event_time": ts(1).replace(tzinfo=None), "a": None}], schema))
    assert redis_db.hgetall("1") == {b"_ts:clicks": str(T0_MICROS + 60_000_000).encode()}


def test_ttl_is_set_on_each_key_written(redis_db: Any, redis_url: str) -> None:
    with writer(redis_url, ttlSeconds=3600) as w:
        w.write(table([{"user_id": u, "event_time": ts(0), "a": 1} for u in range(3)]))
    for u in range(3):
        assert 3590 <= redis_db.ttl(str(u)) <= 3600


def test_other_pipelines_fields_and_timestamps_are_left_alone(redis_db: Any, redis_url: str) -> None:
    redis_db.hset("1", mapping={"_ts:other": 999, "other_feature": "x"})
    with writer(redis_url) as w:
        w.write(table([{"user_id": 1, "event_time": ts(0), "a": 1}]))
    assert redis_db.hgetall("1")[b"other_feature"] == b"x"
    assert redis_db.hgetall("1")[b"_ts:other"] == b"999"


def test_many_chunks_and_batches_pipelined(redis_db: Any, redis_url: str) -> None:
    n = online.CHUNK_ENTITIES * (online.MAX_IN_FLIGHT + 5) + 17
    base = np.datetime64(T0.replace(tzinfo=None), "us").astype(np.int64)
    data = pa.table(
        {
            "user_id": pa.array(np.arange(n)),
            "event_time": pa.array(base + np.arange(n), pa.timestamp("us", tz="UTC")),
            "a": pa.array(np.arange(n) * 2),
            "maybe": pa.array([None if i % 3 else f"s{i}" for i in range(n)]),
        }
    )
    with writer(redis_url) as w:
        assert w.write(data.to_batches(max_chunksize=5000)) == n
    assert redis_db.dbsize() == n
    for i in (0, 1, n // 2, n - 1):
        expected = {b"_ts:clicks": str(T0_MICROS + i).encode(), b"a": str(2 * i).encode()}
        if i % 3 == 0:
            expected[b"maybe"] = f"s{i}".encode()
        assert redis_db.hgetall(str(i)) == expected


def test_a_column_without_text_form_is_bad_input() -> None:
    schema = pa.schema(
        [("user_id", pa.int64()), ("event_time", pa.timestamp("us")), ("xs", pa.list_(pa.int64()))]
    )
    with pytest.raises(PipelineError) as err:
        online.check_encodable(schema, ["user_id", "event_time"])
    assert err.value.exit_code == EX_DATAERR
    assert "column xs is list<item: int64>" in err.value.message


def test_a_key_of_another_type_is_bad_input_naming_redis(redis_db: Any, redis_url: str) -> None:
    redis_db.set("1", "a string")
    with writer(redis_url) as w, pytest.raises(PipelineError) as err:
        w.write(table([{"user_id": 1, "event_time": ts(0), "a": 1}]))
    assert err.value.exit_code == EX_DATAERR
    assert "WRONGTYPE" in err.value.message


def test_unreachable_redis_is_unavailable_without_the_password() -> None:
    w = writer("redis://:secret@127.0.0.1:1/0")
    with pytest.raises(PipelineError) as err:
        w.connect()
    assert err.value.exit_code == EX_UNAVAILABLE
    assert "redis://127.0.0.1:1/0 is unreachable" in err.value.message
    assert "secret" not in err.value.message


def test_encoding_builds_one_evalsha_per_chunk() -> None:
    layout = online.Layout(prefix="u:", keys=("user_id",), timestamp="event_time", pipeline="p", ttl_ms=5)
    batch = table([{"user_id": i, "event_time": ts(0), "a": i, "b": None} for i in range(5)]).to_batches()[0]
    chunks = [
        b"".join(bytes(x) for x in c)
        for c in online.commands(online.encode(batch, layout), "0" * 40, layout, 2)
    ]
    assert len(chunks) == 3
    # EVALSHA sha numkeys, 2 keys, tsfield ttl, per entity: ts nset ndel a <value> b
    assert chunks[0].startswith(b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n" % (3 + 2 + 2 + 2 * 6))
    assert b"$3\r\nu:0\r\n$3\r\nu:1\r\n$5\r\n_ts:p\r\n$1\r\n5\r\n" in chunks[0]
    assert chunks[2].count(b"u:") == 1


def test_encoding_works_on_bounded_slices_of_any_batch() -> None:
    n = 3 * online.ENCODE_ROWS + 5
    big = pa.record_batch([pa.array(np.arange(n))], names=["user_id"])
    sizes = [b.num_rows for b in online._bounded([big, big.slice(0, 0)])]
    assert sum(sizes) == n and max(sizes) == online.ENCODE_ROWS
