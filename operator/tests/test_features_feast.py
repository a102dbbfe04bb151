"""`format: feast`: Loom writes exactly what Feast's Redis online store writes, and Feast reads it.

Against the real Feast package (the `test` extra pins it) and a real redis-server. The encoder is Loom's own
vectorized protobuf wire format (see loom/features/feast.py for why): these tests are its proof, byte for
byte, against Feast's serialization (`_convert_arrow_to_proto` + `Value.SerializeToString`,
`serialize_entity_key`, `Timestamp.FromDatetime`, `_mmh3`) over every type it writes, with nulls.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom.api.featurepipeline import FeastLayout, FeaturePipeline, RedisSink
from loom.features import feast as F
from loom.features import feast_wire as W
from loom.features.config import make_window
from loom.features.online import RedisWriter

warnings.filterwarnings("ignore", module="feast")

import feast  # noqa: E402
from feast import types as ft  # noqa: E402
from feast.infra.key_encoding_utils import serialize_entity_key  # noqa: E402
from feast.infra.online_stores.helpers import _mmh3, _redis_key  # noqa: E402
from feast.infra.online_stores.redis import RedisOnlineStoreConfig  # noqa: E402
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto  # noqa: E402
from feast.protos.feast.types.Value_pb2 import Value as ValueProto  # noqa: E402
from feast.protos.feast.types.Value_pb2 import ValueType as ValueTypeProto  # noqa: E402
from feast.utils import _convert_arrow_to_proto  # noqa: E402
from google.protobuf.descriptor import FieldDescriptor  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

LOOM = str(Path(sys.executable).with_name("loom"))
FEAST = str(Path(sys.executable).with_name("feast"))
UTC = dt.UTC
T0 = dt.datetime(2026, 11, 1, 10, tzinfo=UTC)
START, END = "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"
DTYPES = {
    "Bool": ft.Bool,
    "Int32": ft.Int32,
    "Int64": ft.Int64,
    "Float32": ft.Float32,
    "Float64": ft.Float64,
    "String": ft.String,
    "Bytes": ft.Bytes,
    "UnixTimestamp": ft.UnixTimestamp,
}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------ helpers


def feast_view(
    name: str, keys: dict[str, W.ValueField], schema: pa.Schema, timestamp: str = "ts"
) -> tuple[list[feast.Entity], feast.FeatureView]:
    """The Entities and FeatureView Feast would have for an output schema (types as feast.py gives them)."""
    entities = [
        feast.Entity(name=k, join_keys=[k], value_type=feast.ValueType[f.enum]) for k, f in keys.items()
    ]
    fields = [feast.Field(name=k, dtype=DTYPES[f.feast_dtype]) for k, f in keys.items()]
    fields += [
        feast.Field(name=c.name, dtype=DTYPES[F.feature_field(c.name, c.type).feast_dtype])
        for c in schema
        if c.name not in keys and c.name != timestamp
    ]
    source = feast.FileSource(name=f"{name}_source", path=f"{name}.parquet", timestamp_field=timestamp)
    view = feast.FeatureView(name=name, entities=entities, schema=fields, source=source)
    return entities, view


def feast_rows(table: pa.Table, keys: dict[str, W.ValueField], view: feast.FeatureView) -> list[Any]:
    join_keys = {k: feast.ValueType[f.enum] for k, f in keys.items()}
    return _convert_arrow_to_proto(table, view, join_keys)


def feast_ts(value: dt.datetime) -> bytes:
    ts = Timestamp()
    ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return ts.SerializeToString()


def store(tmp_path: Path, redis_url: str, project: str, db: int = 0) -> feast.FeatureStore:
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    config = feast.RepoConfig(
        project=project,
        provider="local",
        registry=str(tmp_path / f"registry-{project}-{db}.db"),
        online_store=RedisOnlineStoreConfig(connection_string=f"127.0.0.1:{port},db={db}"),
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
    )
    return feast.FeatureStore(config=config)


def pipeline(
    tmp_path: Path,
    redis_url: str,
    *,
    sql: str,
    keys: tuple[str, ...] = ("user_id",),
    entity_types: dict[str, str] | None = None,
    project: str = "ranking",
    view: str = "user_stats",
    offline: bool = True,
    ttl: int | None = None,
) -> FeaturePipeline:
    redis: dict[str, Any] = {
        "url": redis_url,
        "format": "feast",
        "feast": {"project": project, "featureView": view, "entityTypes": entity_types or {}},
    }
    if ttl:
        redis["ttlSeconds"] = ttl
    sinks: dict[str, Any] = {"online": {"redis": redis}}
    if offline:
        sinks["offline"] = {"path": str(tmp_path / "features")}
    return FeaturePipeline.model_validate(
        {
            "metadata": {"name": "user-stats", "namespace": "default"},
            "spec": {
                "source": {
                    "parquet": {"path": str(tmp_path / "events")},
                    "timestampField": "event_time",
                    "entityKeys": list(keys),
                },
                "transform": {"sql": sql},
                "schedule": "0 * * * *",
                "sinks": sinks,
            },
        }
    )


def write_events(tmp_path: Path, table: pa.Table, name: str = "part-0.parquet") -> None:
    path = tmp_path / "events" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def run(p: FeaturePipeline, start: str = START, end: str = END) -> Any:
    from loom.features.run import run_window

    return run_window(p, make_window(start, end))


def write_yaml(p: FeaturePipeline, path: Path) -> Path:
    obj = {"apiVersion": "loom.ml/v1alpha1", "kind": "FeaturePipeline", **p.model_dump(mode="json")}
    path.write_text(yaml.safe_dump(obj))
    return path


def cli(*args: str, cwd: Path | None = None) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [LOOM, "features", *args], capture_output=True, text=True, timeout=180, check=False, cwd=cwd
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no stdout; stderr: {proc.stderr}"
    return proc.returncode, json.loads(lines[-1]), proc.stderr


def hashes(client: Any) -> dict[bytes, dict[bytes, bytes]]:
    return {k: client.hgetall(k) for k in client.scan_iter(count=1000)}


# -------------------------------------------------------------------- Feast's own unit-test vectors


def test_feasts_field_vectors() -> None:
    """sdk/python/tests/unit/infra/online_store/test_redis.py: test_generate_hset_keys_for_features*."""
    assert W.field_name("feature_view_1", "feature_10") == b"&m_9"
    assert W.field_name("feature_view_1", "feature_11") == b"\xc37\x9a\xbf"
    assert W.field_name("feature_view_1", "feature_12") == b"wr\xb5d"
    assert W.field_name("feature_view_1", "my-feature-view:feature1") == b"Si\x86J"
    assert F.ts_field("feature_view_1") == "_ts:feature_view_1"


def test_feasts_key_vectors() -> None:
    """test_redis.py: test_generate_entity_redis_keys; test_key_encoding_utils.py: test_serialize_value."""
    batch = pa.record_batch({"entity": pa.array([1], pa.int32()), "ts": pa.array([T0]), "x": [1.0]})
    schema = F.feast_schema(batch.schema, ["entity"], "ts", FeastLayout(project="test", featureView="v"))
    assert F.entity_keys(batch, schema, "test").to_pylist() == [
        b"\x01\x00\x00\x00\x02\x00\x00\x00\x06\x00\x00\x00entity"
        b"\x03\x00\x00\x00\x04\x00\x00\x00\x01\x00\x00\x00test"
    ]
    # _serialize_val: string b"test", int32 b"\x01\x00\x00\x00", int64 8 bytes (version 3)
    for column, declared, raw in [
        (pa.array(["test"]), "string", b"test"),
        (pa.array([b"test"]), "bytes", b"test"),
        (pa.array([1], pa.int32()), "int32", b"\x01\x00\x00\x00"),
        (pa.array([1], pa.int64()), "int64", b"\x01\x00\x00\x00\x00\x00\x00\x00"),
    ]:
        batch = pa.record_batch({"user": column, "ts": pa.array([T0]), "x": [1.0]})
        layout = FeastLayout(project="p", featureView="v", entityTypes={"user": declared})
        key = F.entity_keys(batch, F.feast_schema(batch.schema, ["user"], "ts", layout), "p").to_pylist()[0]
        assert key.endswith(raw + b"p")


def test_value_fields_are_feasts_value_proto() -> None:
    wire = {
        FieldDescriptor.TYPE_BYTES: W.Wire.LEN,
        FieldDescriptor.TYPE_STRING: W.Wire.LEN,
        FieldDescriptor.TYPE_INT32: W.Wire.VARINT,
        FieldDescriptor.TYPE_INT64: W.Wire.VARINT,
        FieldDescriptor.TYPE_BOOL: W.Wire.VARINT,
        FieldDescriptor.TYPE_DOUBLE: W.Wire.FIXED64,
        FieldDescriptor.TYPE_FLOAT: W.Wire.FIXED32,
    }
    for field in W.VALUE_FIELDS:
        descriptor = ValueProto.DESCRIPTOR.fields_by_name[field.name]
        assert descriptor.number == field.number
        assert descriptor.containing_oneof.name == "val"
        assert wire[descriptor.type] == field.wire
        assert ValueTypeProto.Enum.Value(field.enum) == field.value_type
        assert field.feast_dtype in DTYPES
    stamp = Timestamp.DESCRIPTOR.fields_by_name
    assert (stamp["seconds"].number << 3) == W.TS_SECONDS_TAG
    assert (stamp["nanos"].number << 3) == W.TS_NANOS_TAG


@SETTINGS
@given(st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
def test_murmur3_is_mmh3(text: str) -> None:
    import mmh3

    assert W.murmur3_32(text.encode()) == mmh3.hash(text, signed=False)
    assert W.field_name("fv", text) == _mmh3(f"fv:{text}")


# ------------------------------------------------------------ byte identity with Feast's serialization

INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
EXACT = st.integers(-(2**53), 2**53)  # Feast goes through float64 when an int column has nulls
F64 = st.floats(allow_nan=True, allow_infinity=True)
F32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
TIMES = st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(UTC)
)


def _column(values: st.SearchStrategy[Any], t: pa.DataType) -> st.SearchStrategy[pa.Array]:
    return st.lists(st.one_of(st.none(), values), min_size=1, max_size=30).map(lambda v: pa.array(v, t))


COLUMNS = {
    "b": _column(st.booleans(), pa.bool_()),
    "i8": _column(st.integers(-128, 127), pa.int8()),
    "i16": _column(st.integers(-(2**15), 2**15 - 1), pa.int16()),
    "i32": _column(INT32, pa.int32()),
    "u16": _column(st.integers(0, 2**16 - 1), pa.uint16()),
    "u32": _column(st.integers(0, 2**32 - 1), pa.uint32()),
    "i64": _column(EXACT, pa.int64()),
    "f32": _column(F32, pa.float32()),
    "f64": _column(F64, pa.float64()),
    "s": _column(st.text(max_size=20), pa.string()),
    "ls": _column(st.text(max_size=20), pa.large_string()),
    # b"" alone: Feast's batch type inference skips empty bytes, so a batch whose only bytes are b"" is
    # written as all null by Feast; Loom writes Value(bytes_val=b"") (test_values_are_value_protos)
    "y": _column(st.binary(min_size=1, max_size=20), pa.binary()),
    "t_us": _column(TIMES, pa.timestamp("us", tz="UTC")),
    "t_ms": _column(
        TIMES.map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)), pa.timestamp("ms")
    ),
}


@SETTINGS
@given(st.fixed_dictionaries(COLUMNS), st.data())
def test_values_are_byte_identical_to_feasts_materialization(columns: dict[str, pa.Array], data: Any) -> None:
    """Every column type, with nulls, NaN, infinities, -0.0, negatives, unicode: the bytes Feast's own
    conversion (`_convert_arrow_to_proto`, then `SerializeToString`) writes for each field."""
    n = min(len(c) for c in columns.values())
    cols = {k: v.slice(0, n) for k, v in columns.items()}
    ids = data.draw(st.lists(INT64, min_size=n, max_size=n, unique=True))
    times = data.draw(st.lists(TIMES, min_size=n, max_size=n))
    table = pa.table({"uid": pa.array(ids, pa.int64()), "ts": pa.array(times, pa.timestamp("us")), **cols})
    layout = FeastLayout(project="p", featureView="fv")
    schema = F.feast_schema(table.schema, ["uid"], "ts", layout)
    keys = dict(schema.entities)
    _, view = feast_view("fv", keys, table.schema)
    expected = feast_rows(table, keys, view)
    batch = table.to_batches()[0]
    got = {name: W.value_bytes(batch.column(name), field).to_pylist() for name, field in schema.features}
    stamps = W.timestamp_bytes(W.micros_floor(batch.column("ts"))).to_pylist()
    key_bytes = F.entity_keys(batch, schema, "p").to_pylist()
    for row, (entity, values, ts, _) in enumerate(expected):
        assert key_bytes[row] == _redis_key("p", entity, 3)
        assert stamps[row] == feast_ts(ts)
        for name, value in values.items():
            assert got[name][row] == value.SerializeToString(), (name, row, table.column(name)[row])


@SETTINGS
@given(INT64, INT32, F64, F32, st.text(), st.binary(), st.booleans())
def test_values_are_value_protos(
    i64: int, i32: int, f64: float, f32: float, text: str, raw: bytes, flag: bool
) -> None:
    """Full ranges (Feast's materialization rounds int64 beyond 2**53 when the column has nulls; Loom
    writes the exact value, as `Value(int64_val=...)` serializes it)."""
    cases = [
        (pa.array([i64, None], pa.int64()), W.INT64, ValueProto(int64_val=i64)),
        (pa.array([i32, None], pa.int32()), W.INT32, ValueProto(int32_val=i32)),
        (pa.array([f64, None], pa.float64()), W.DOUBLE, ValueProto(double_val=f64)),
        (pa.array([f32, None], pa.float32()), W.FLOAT, ValueProto(float_val=f32)),
        (pa.array([text, None], pa.string()), W.STRING, ValueProto(string_val=text)),
        (pa.array([raw, None], pa.binary()), W.BYTES, ValueProto(bytes_val=raw)),
        (pa.array([flag, None], pa.bool_()), W.BOOL, ValueProto(bool_val=flag)),
    ]
    for column, field, proto in cases:
        got = W.value_bytes(column, field).to_pylist()
        nan = field in (W.FLOAT, W.DOUBLE) and math.isnan(column[0].as_py())
        assert got == [b"" if nan else proto.SerializeToString(), b""]


@SETTINGS
@given(
    st.lists(st.integers(-(2**52), 2**52), min_size=1, max_size=50), st.sampled_from(["s", "ms", "us", "ns"])
)
def test_event_times_are_feasts_timestamps(raw: list[int], unit: str) -> None:
    """`_ts:<view>`: Timestamp.FromDatetime of the (microsecond, floor) datetime Feast makes of the time."""
    per_us = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1}[unit]
    values = [v // per_us if unit != "ns" else v * 1000 + v % 997 for v in raw]
    column = pa.array(values, pa.int64()).cast(pa.timestamp(unit))
    got = W.timestamp_bytes(W.micros_floor(column)).to_pylist()
    epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)
    for value, stamp in zip(values, got, strict=True):
        micros = value * per_us if unit != "ns" else value // 1000
        assert stamp == feast_ts(epoch + dt.timedelta(microseconds=micros))


KEY_VALUES = {
    "int64": (INT64, pa.int64(), "int64_val"),
    "int32": (INT32, pa.int32(), "int32_val"),
    "string": (st.text(max_size=12), pa.string(), "string_val"),
    "bytes": (st.binary(max_size=12), pa.binary(), "bytes_val"),
}


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.text(alphabet="abcdefgXYZ_é", min_size=1, max_size=8), st.sampled_from(sorted(KEY_VALUES))
        ),
        min_size=1,
        max_size=3,
        unique_by=lambda kv: kv[0],
    ),
    st.text(alphabet="abcxyz-_0123", min_size=1, max_size=10),
    st.data(),
)
def test_entity_keys_are_feasts(keys: list[tuple[str, str]], project: str, data: Any) -> None:
    """Join keys in any order and of every entity type: `serialize_entity_key(v3) + project`."""
    n = data.draw(st.integers(1, 8))
    columns = {}
    for name, kind in keys:
        strategy, t, _ = KEY_VALUES[kind]
        columns[name] = pa.array(data.draw(st.lists(strategy, min_size=n, max_size=n)), t)
    batch = pa.record_batch({**columns, "ts": pa.array([T0] * n)})
    layout = FeastLayout(project=project, featureView="v", entityTypes={k: kind for k, kind in keys})
    schema = F.FeastSchema(
        entities=F.feast_schema(
            pa.schema([*batch.schema, pa.field("x", pa.int64())]), [k for k, _ in keys], "ts", layout
        ).entities,
        features=(),
        timestamp="ts",
    )
    got = F.entity_keys(batch, schema, project).to_pylist()
    for row in range(n):
        proto = EntityKeyProto(
            join_keys=[k for k, _ in keys],
            entity_values=[ValueProto(**{KEY_VALUES[kind][2]: columns[k][row].as_py()}) for k, kind in keys],
        )
        assert got[row] == serialize_entity_key(proto, entity_key_serialization_version=3) + project.encode()


# ------------------------------------------------------------------- Feast reads what Loom writes

ROWS_SQL = "SELECT * FROM source"
FEATURES = ["f32", "f64", "clicks", "label", "active"]


def typed_events(keys: dict[str, list[Any]], at: dt.datetime = T0, shift: float = 0.0) -> pa.Table:
    """One row per entity: float32, float64, int64, string and bool features, each with nulls."""
    n = len(next(iter(keys.values())))
    columns: dict[str, pa.Array] = {}
    for name, values in keys.items():
        columns[name] = pa.array(values, pa.int64() if isinstance(values[0], int) else pa.string())
    columns["event_time"] = pa.array(
        [at + dt.timedelta(minutes=i) for i in range(n)], pa.timestamp("us", tz="UTC")
    )
    columns["f32"] = pa.array([None if i % 4 == 1 else i * 0.25 + shift for i in range(n)], pa.float32())
    columns["f64"] = pa.array([None if i % 3 == 2 else i / 3 + shift for i in range(n)], pa.float64())
    columns["clicks"] = pa.array(
        [None if i % 5 == 3 else i * 1000 + int(shift) for i in range(n)], pa.int64()
    )
    columns["label"] = pa.array([None if i % 4 == 0 else f"l{i}-é{shift}" for i in range(n)], pa.string())
    columns["active"] = pa.array([None if i % 3 == 0 else i % 2 == 0 for i in range(n)], pa.bool_())
    return pa.table(columns)


KEY_CASES = {
    "int64": {"user_id": [7, -3, 2**40, 0, 11, 12]},
    "string": {"user": ["alice", "bob", "", "çé", "x:y", "z"]},
    "two-keys": {"user_id": [1, 1, 2, 2, 3, 3], "country": ["de", "us", "de", "us", "de", "fr"]},
}


def online(
    fs: feast.FeatureStore, view: str, keys: dict[str, list[Any]], features: list[str] = FEATURES
) -> dict[str, list[Any]]:
    rows = [dict(zip(keys, values, strict=True)) for values in zip(*keys.values(), strict=True)]
    result: dict[str, list[Any]] = fs.get_online_features(
        features=[f"{view}:{f}" for f in features], entity_rows=rows
    ).to_dict()
    return result


def apply(
    fs: feast.FeatureStore, table: pa.Table, keys: list[str], view: str, path: Path
) -> feast.FeatureView:
    pq.write_table(table, path)
    schema = F.feast_schema(table.schema, keys, "event_time", FeastLayout(project="p", featureView=view))
    entities = [
        feast.Entity(name=k, join_keys=[k], value_type=feast.ValueType[f.enum]) for k, f in schema.entities
    ]
    fields = [
        feast.Field(name=k, dtype=DTYPES[f.feast_dtype]) for k, f in (*schema.entities, *schema.features)
    ]
    source = feast.FileSource(name=f"{view}_source", path=str(path), timestamp_field="event_time")
    fv = feast.FeatureView(name=view, entities=entities, schema=fields, source=source, ttl=dt.timedelta(0))
    fs.apply([*entities, fv])
    return fv


@pytest.mark.parametrize("case", sorted(KEY_CASES))
def test_feast_reads_exactly_what_loom_writes(
    case: str, tmp_path: Path, redis_db: Any, redis_url: str
) -> None:
    keys = KEY_CASES[case]
    table = typed_events(keys)
    write_events(tmp_path, table)
    fs = store(tmp_path, redis_url, "ranking")
    apply(fs, table, list(keys), "user_stats", tmp_path / "view.parquet")
    summary = run(pipeline(tmp_path, redis_url, sql=ROWS_SQL, keys=tuple(keys)))
    assert summary.online_written == table.num_rows
    got = online(fs, "user_stats", keys)
    for feature in FEATURES:
        assert got[feature] == table.column(feature).to_pylist(), feature
    # an entity Loom never wrote reads as nulls
    missing = {k: [2**62] if isinstance(v[0], int) else ["nobody"] for k, v in keys.items()}
    assert all(v == [None] for k, v in online(fs, "user_stats", missing).items() if k in FEATURES)


def test_feast_materialized_keys_take_loom_updates_only_when_newer(
    tmp_path: Path, redis_db: Any, redis_url: str
) -> None:
    """Entity 1: Feast wrote it at T0, Loom at T0+1h -> Loom's values. Entity 2: Feast wrote it at T0+5h,
    Loom's row is older -> Feast's values stay (and the hash is untouched)."""
    keys = {"user_id": [1, 2]}
    feast_rows_ = typed_events(keys, at=T0, shift=100.0)
    feast_rows_ = feast_rows_.set_column(
        feast_rows_.schema.get_field_index("event_time"),
        "event_time",
        pa.array([T0, T0 + dt.timedelta(hours=5)], pa.timestamp("us", tz="UTC")),
    )
    fs = store(tmp_path, redis_url, "ranking")
    apply(fs, feast_rows_, ["user_id"], "user_stats", tmp_path / "view.parquet")
    fs.materialize(start_date=T0 - dt.timedelta(hours=1), end_date=T0 + dt.timedelta(hours=6))
    assert online(fs, "user_stats", keys)["f64"] == feast_rows_.column("f64").to_pylist()
    before = hashes(redis_db)
    loom_rows = typed_events(keys, at=T0 + dt.timedelta(hours=1), shift=7.0)
    write_events(tmp_path, loom_rows)
    summary = run(pipeline(tmp_path, redis_url, sql=ROWS_SQL))
    assert summary.online_written == 1
    got = online(fs, "user_stats", keys)
    for feature in FEATURES:
        assert got[feature] == [loom_rows.column(feature)[0].as_py(), feast_rows_.column(feature)[1].as_py()]
    key2 = F.entity_keys(
        feast_rows_.to_batches()[0].slice(1, 1),
        F.feast_schema(
            feast_rows_.schema, ["user_id"], "event_time", FeastLayout(project="x", featureView="v")
        ),
        "ranking",
    ).to_pylist()[0]
    assert redis_db.hgetall(key2) == before[key2]


def test_loom_and_feast_write_byte_identical_hashes(tmp_path: Path, redis_db: Any, redis_url: str) -> None:
    """The same rows: Feast's materialize into db 1, Loom into db 0; every hash is the same bytes."""
    import redis

    keys = KEY_CASES["two-keys"]
    table = typed_events(keys)
    write_events(tmp_path, table)
    other = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/1")
    other.flushdb()
    fs = store(tmp_path, redis_url, "ranking", db=1)
    apply(fs, table, list(keys), "user_stats", tmp_path / "view.parquet")
    fs.materialize(start_date=T0 - dt.timedelta(hours=1), end_date=T0 + dt.timedelta(hours=6))
    run(pipeline(tmp_path, redis_url, sql=ROWS_SQL, keys=tuple(keys)))
    ours, theirs = hashes(redis_db), hashes(other)
    assert len(ours) == table.num_rows
    assert ours == theirs
    other.close()


def test_the_write_is_a_compare_and_write_on_the_feast_timestamp(redis_db: Any, redis_url: str) -> None:
    """Newer and equal event times overwrite, older do not; a stored `_ts` before 1970 compares right;
    ttlSeconds sets an expiry; rows of one batch apply in order."""
    sink = RedisSink.model_validate(
        {"url": redis_url, "format": "feast", "ttlSeconds": 60, "feast": {"project": "p", "featureView": "v"}}
    )

    def table(when: list[dt.datetime], value: float, ids: list[int] | None = None) -> pa.Table:
        ids = ids or [1] * len(when)
        return pa.table(
            {
                "k": pa.array(ids, pa.int64()),
                "t": pa.array(when, pa.timestamp("us", tz="UTC")),
                "x": pa.array([value + i for i in range(len(when))], pa.float64()),
            }
        )

    def value() -> float:
        got = redis_db.hget(key, W.field_name("v", "x"))
        proto = ValueProto()
        proto.ParseFromString(got)
        return float(proto.double_val)

    old = dt.datetime(1969, 7, 20, 20, 17, 40, 5, tzinfo=UTC)
    with RedisWriter(sink, "ignored", ["k"], "t") as w:
        assert isinstance(w, F.FeastWriter)
        assert w.write(table([old], 1.0)) == 1
        key = next(iter(redis_db.scan_iter()))
        assert redis_db.hget(key, "_ts:v") == feast_ts(old)
        assert 0 < redis_db.ttl(key) <= 60
        assert w.write(table([old - dt.timedelta(microseconds=1)], 2.0)) == 0
        assert value() == 1.0
        assert w.write(table([old], 3.0)) == 1  # equal: a corrected re-run lands
        assert value() == 3.0
        assert w.write(table([T0, T0 - dt.timedelta(days=1), T0], 10.0)) == 2  # in order: 10, skip, 12
        assert value() == 12.0
        assert redis_db.hget(key, "_ts:v") == feast_ts(T0)
        assert w.write(table([T0 + dt.timedelta(seconds=1, microseconds=1)], 20.0)) == 1
        assert redis_db.hget(key, "_ts:v") == feast_ts(T0 + dt.timedelta(seconds=1, microseconds=1))
        # a big chunk of entities in one write (several EVALSHA in flight)
        many = table([T0] * 5000, 0.0, ids=list(range(100, 5100)))
        assert w.write(many) == 5000
    assert redis_db.dbsize() == 5001


# ------------------------------------------------------------------------------- loom features feast-repo

AGG_SQL = (
    "SELECT user_id, max(event_time) AS event_time, count(*) AS n, avg(f64) AS f64_avg, "
    "CAST(avg(f32) AS FLOAT) AS f32_avg, max(label) AS label, bool_or(active) AS active, "
    "max(clicks) AS clicks_max FROM source GROUP BY user_id"
)


def test_feast_repo_applies_and_reads_what_loom_writes(tmp_path: Path, redis_db: Any, redis_url: str) -> None:
    import duckdb

    events = pa.concat_tables(
        [typed_events({"user_id": [1, 2, 3, 4]}), typed_events({"user_id": [1, 2, 3, 4]}, shift=1.0)]
    )
    write_events(tmp_path, events)
    p = pipeline(tmp_path, redis_url, sql=AGG_SQL, ttl=3600)
    path = write_yaml(p, tmp_path / "pipeline.yaml")
    code, summary, err = cli("feast-repo", "-f", str(path), "--out", str(tmp_path / "repo"))
    assert code == 0, err
    assert summary["entities"] == {"user_id": "Int64"}
    assert summary["features"] == {
        "n": "Int64",
        "f64_avg": "Float64",
        "f32_avg": "Float32",
        "label": "String",
        "active": "Bool",
        "clicks_max": "Int64",
    }
    config = yaml.safe_load((tmp_path / "repo" / "feature_store.yaml").read_text())
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    assert config["online_store"] == {
        "type": "redis",
        "connection_string": f"127.0.0.1:{port}",
        "key_ttl_seconds": 3600,
    }
    assert config["project"] == "ranking" and config["entity_key_serialization_version"] == 3
    applied = subprocess.run(
        [FEAST, "apply"], cwd=tmp_path / "repo", capture_output=True, text=True, timeout=180, check=False
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    code, summary, err = cli("run", "-f", str(path), "--start", START, "--end", END)
    assert code == 0, err
    assert summary["online_written"] == 4
    fs = feast.FeatureStore(repo_path=str(tmp_path / "repo"))
    features = ["n", "f64_avg", "f32_avg", "label", "active", "clicks_max"]
    got = online(fs, "user_stats", {"user_id": [1, 2, 3, 4]}, features)
    con = duckdb.connect()
    con.register("source", events)
    expected = con.sql(AGG_SQL + " ORDER BY user_id").arrow().read_all()
    for feature in features:
        assert got[feature] == expected.column(feature).to_pylist(), feature


def test_feast_repo_refuses_a_loom_format_pipeline(tmp_path: Path, redis_url: str) -> None:
    write_events(tmp_path, typed_events({"user_id": [1]}))
    p = pipeline(tmp_path, redis_url, sql=ROWS_SQL)
    assert p.spec.sinks.online is not None
    p.spec.sinks.online.redis.format = "loom"  # type: ignore[assignment]
    p.spec.sinks.online.redis.feast = None
    code, summary, _ = cli(
        "feast-repo", "-f", str(write_yaml(p, tmp_path / "p.yaml")), "--out", str(tmp_path / "r")
    )
    assert code == 65
    assert "format: feast" in summary["error"]


# ------------------------------------------------------------------------------------------- bad input


def _nothing_written(tmp_path: Path, redis_db: Any) -> None:
    assert redis_db.dbsize() == 0
    root = tmp_path / "features"
    visible = [p for p in root.rglob("*.parquet") if not any(part.startswith(".") for part in p.parts)]
    assert visible == []


@pytest.mark.parametrize(
    ("sql", "entity_types", "message"),
    [
        (
            "SELECT CAST(user_id AS VARCHAR) AS user_id, event_time, f64 FROM source",
            {"user_id": "int64"},
            "entity key user_id is string in the transform output, but redis.feast.entityTypes declares "
            "it int64",
        ),
        (
            "SELECT user_id, event_time, f64 FROM source",
            {"user_id": "int32"},
            "entity key user_id is int64 in the transform output, but redis.feast.entityTypes declares "
            "it int32",
        ),
        (
            "SELECT user_id, event_time, CAST(clicks AS UBIGINT) AS big FROM source",
            {},
            "column big is uint64, which Feast's Redis format cannot hold",
        ),
        (
            "SELECT user_id, max(event_time) AS event_time, sum(clicks) AS total "
            "FROM source GROUP BY user_id",
            {},
            "column total is decimal128(38, 0), which Feast's Redis format cannot hold",
        ),
        (
            "SELECT user_id, event_time, CAST(event_time AS DATE) AS day FROM source",
            {},
            "column day is date32[day], which Feast's Redis format cannot hold",
        ),
        (
            "SELECT user_id, event_time, [f64, f64] AS pair FROM source",
            {},
            "list features are not written in feast format yet",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    sql: str, entity_types: dict[str, str], message: str, tmp_path: Path, redis_db: Any, redis_url: str
) -> None:
    write_events(tmp_path, typed_events({"user_id": [1, 2, 3]}))
    p = pipeline(tmp_path, redis_url, sql=sql, entity_types=entity_types)
    code, summary, err = cli(
        "run", "-f", str(write_yaml(p, tmp_path / "p.yaml")), "--start", START, "--end", END
    )
    assert code == 65, err
    assert message in summary["error"]
    _nothing_written(tmp_path, redis_db)


def _resp_args(buffer: bytes) -> list[bytes]:
    """The bulk strings of concatenated RESP bulk strings."""
    out, i = [], 0
    while i < len(buffer):
        assert buffer[i : i + 1] == b"$"
        j = buffer.index(b"\r\n", i)
        n = int(buffer[i + 1 : j])
        out.append(buffer[j + 2 : j + 2 + n])
        assert buffer[j + 2 + n : j + 4 + n] == b"\r\n"
        i = j + 4 + n
    return out


@pytest.mark.parametrize(
    "when", [T0, dt.datetime(1969, 7, 20, 20, 17, 40, 5, tzinfo=UTC), dt.datetime(1970, 1, 1, tzinfo=UTC)]
)
def test_the_commands_carry_those_bytes(when: dt.datetime) -> None:
    """The RESP the writer sends: per entity the key, the Timestamp, its seconds and nanos as text, then
    field/value pairs; long strings (a header past the lookup table), nulls, a string entity key."""
    n = 5
    table = pa.table(
        {
            "user": pa.array(["a", "", "é" * 700, "d", "e"]),
            "t": pa.array(
                [when + dt.timedelta(microseconds=i * 999_999) for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "text": pa.array(["x" * 2000, None, "", "y", "z" * 130]),
            "n": pa.array([-1, None, 2**62, 0, 5], pa.int64()),
            "x": pa.array([0.5, None, float("nan"), -0.0, 1e300], pa.float64()),
            "b": pa.array([True, False, None, True, False]),
        }
    )
    layout = FeastLayout(project="proj", featureView="fv")
    encoder = F.FeastEncoder(table.schema, ["user"], "t", layout)
    batch = table.to_batches()[0]
    encoded = encoder.encode(batch)
    schema = encoder.columns
    keys = F.entity_keys(batch, schema, "proj").to_pylist()
    micros = W.micros_floor(batch.column("t"))
    stamps = W.timestamp_bytes(micros).to_pylist()
    values = {name: W.value_bytes(batch.column(name), field).to_pylist() for name, field in schema.features}
    for row in range(n):
        assert _resp_args(encoded.keys[row].as_py()) == [keys[row]]
        args = _resp_args(encoded.args[row].as_py())
        assert encoded.argc_cumsum[row + 1] - encoded.argc_cumsum[row] == len(args) == 3 + len(values)
        seconds, rest = divmod(int(micros[row]), 1_000_000)
        assert args[0] == stamps[row]
        assert int(args[1]) == seconds and int(args[2]) == rest * 1000
        assert args[3:] == [v[row] for v in values.values()]
    assert encoder.fields == [W.field_name("fv", name) for name in values]
    command = next(F.commands(encoded, "0" * 40, "_ts:fv", 0, encoder.fields))
    fixed = _resp_args(bytes(command[2]))
    assert fixed == [b"_ts:fv", b"0", b"%d" % len(values), *encoder.fields]
