"""The online sink in Feast's Redis layout (`sinks.online.redis.format: feast`): Feast's own client reads it.

Layout, as Feast's SDK writes it (feast 0.67 `infra/online_stores/redis.py`, `infra/key_encoding_utils.py`,
`protos/feast/types/Value.proto`; its written spec `online_store_format.md` is stale):
- key = entity key serialization v3 + project name (utf8): `<I` number of join keys; the join keys sorted
  by name, each `<I` 2 (STRING), `<I` length, utf8 name; then each value in the same order, `<I` value type,
  `<I` length, bytes (int64 `<q` type 4, int32 `<i` type 3, string utf8 type 2, bytes type 1). The value
  type is the Entity's declared dtype (`redis.feast.entityTypes`, default: from the column's type).
- one field per feature: the 4 bytes little-endian of MurmurHash3 x86 32 (seed 0) of `<featureView>:<name>`,
  holding a serialized `feast.types.Value`; a null is the empty string (Feast writes `Value()`), and so is
  a float NaN (Feast's materialization takes NaN for null). A null timestamp feature is
  `unix_timestamp_val` INT64_MIN, Feast's NULL_TIMESTAMP_INT_VALUE.
- field `_ts:<featureView>` = the event time as a serialized `google.protobuf.Timestamp` (seconds, nanos;
  microsecond precision like Feast's, which goes through Python datetimes).
Unlike Feast (a pipelined read of every `_ts`, then a pipelined HSET: not atomic), one Lua script per chunk
of entities compares the stored `_ts` with the row's and writes the whole hash in the same step: a row is
written iff its event time is >= the stored one (equal overwrites, so a corrected re-run lands; Feast
skips equal), and each key written gets `ttlSeconds` (PEXPIRE).

Rule: encoded from whole Arrow columns with numpy and pyarrow.compute, never one Python object per value.
The protobuf wire format is written directly (tag, varint, fixed32/64, length-delimited) from the field
numbers and types of Feast's Value.proto listed below: one protobuf object per value costs about 1.5 us
(upb), i.e. seconds per million entities, and the benchmark (`make bench-features`) prints both;
operator/tests/test_features_feast.py proves the bytes identical to Feast's own serialization
(`Value.SerializeToString()` through `feast.utils._convert_arrow_to_proto`, `serialize_entity_key`,
`Timestamp.FromDatetime`) over every supported type, with nulls. Feast itself is not needed at run time.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loom.api.featurepipeline import FeastEntityType, FeastLayout, OnlineFormat, RedisSink
from loom.features.errors import bad_input
from loom.features.online import Encoded, RedisWriter, bulk, commands

TS_PREFIX = "_ts:"
INT64_MIN = -(2**63)  # Feast's NULL_TIMESTAMP_INT_VALUE: np.datetime64("NaT").astype(int)
U8 = np.uint8
Matrix = np.ndarray[Any, np.dtype[np.uint8]]
Ints = np.ndarray[Any, np.dtype[np.int64]]

# KEYS: the chunk's entity keys. ARGV: `_ts:<featureView>`, ttl ms (0: none), then per entity the same
# count of values: serialized Timestamp, its seconds, its nanos, then field/value pairs.
SCRIPT = """
local tsf, ttl = ARGV[1], tonumber(ARGV[2])
local n = #KEYS
if n == 0 then return 0 end
local stride = (#ARGV - 2) / n
local function varint(s, i)
  local v, c, m, k, b = 0, 0, 1, 0, 0
  repeat
    b = string.byte(s, i)
    if not b then return nil, i end
    k = k + 1
    local g = b % 128
    if k <= 9 then v = v + g * m; c = c + (127 - g) * m; m = m * 128 end
    i = i + 1
  until b < 128
  if k >= 10 then return -(c + 1), i end
  return v, i
end
local function stamp(s)
  local sec, nanos, i = 0, 0, 1
  while i <= #s do
    local tag = string.byte(s, i)
    local v
    v, i = varint(s, i + 1)
    if v == nil then return nil end
    if tag == 8 then sec = v elseif tag == 16 then nanos = v else return nil end
  end
  return sec, nanos
end
local written, p = 0, 3
for i = 1, n do
  local key = KEYS[i]
  local sec, nanos = tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2])
  local old = redis.call('HGET', key, tsf)
  local ok = true
  if old and #old > 0 then
    local os, on = stamp(old)
    if os then ok = os < sec or (os == sec and on <= nanos) end
  end
  if ok then
    redis.call('HSET', key, tsf, ARGV[p], unpack(ARGV, p + 3, p + stride - 1))
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    written = written + 1
  end
  p = p + stride
end
return written
"""


class Wire(Enum):
    """Protobuf wire types."""

    VARINT = 0
    FIXED64 = 1
    LEN = 2
    FIXED32 = 5


@dataclass(frozen=True)
class ValueField:
    """One scalar field of `feast.types.Value` (Value.proto, `oneof val`) and what Feast calls its type."""

    name: str
    number: int
    wire: Wire
    value_type: int  # feast.types.ValueType.Enum
    enum: str  # its name in ValueType
    feast_dtype: str  # the name in feast.types (the repo's Field dtype)

    @property
    def tag(self) -> int:
        return (self.number << 3) | self.wire.value


# Value.proto: `oneof val { bytes bytes_val = 1; string string_val = 2; int32 int32_val = 3;
# int64 int64_val = 4; double double_val = 5; float float_val = 6; bool bool_val = 7;
# int64 unix_timestamp_val = 8; ... }`; ValueType.Enum: BYTES 1, STRING 2, INT32 3, INT64 4, DOUBLE 5,
# FLOAT 6, BOOL 7, UNIX_TIMESTAMP 8. The tests check these against Feast's generated Value_pb2.
BYTES = ValueField("bytes_val", 1, Wire.LEN, 1, "BYTES", "Bytes")
STRING = ValueField("string_val", 2, Wire.LEN, 2, "STRING", "String")
INT32 = ValueField("int32_val", 3, Wire.VARINT, 3, "INT32", "Int32")
INT64 = ValueField("int64_val", 4, Wire.VARINT, 4, "INT64", "Int64")
DOUBLE = ValueField("double_val", 5, Wire.FIXED64, 5, "DOUBLE", "Float64")
FLOAT = ValueField("float_val", 6, Wire.FIXED32, 6, "FLOAT", "Float32")
BOOL = ValueField("bool_val", 7, Wire.VARINT, 7, "BOOL", "Bool")
UNIX_TIMESTAMP = ValueField("unix_timestamp_val", 8, Wire.VARINT, 8, "UNIX_TIMESTAMP", "UnixTimestamp")
VALUE_FIELDS = (BYTES, STRING, INT32, INT64, DOUBLE, FLOAT, BOOL, UNIX_TIMESTAMP)
# google/protobuf/timestamp.proto: int64 seconds = 1; int32 nanos = 2.
TS_SECONDS_TAG = (1 << 3) | Wire.VARINT.value
TS_NANOS_TAG = (2 << 3) | Wire.VARINT.value

ENTITY_FIELDS = {
    FeastEntityType.INT64: INT64,
    FeastEntityType.INT32: INT32,
    FeastEntityType.STRING: STRING,
    FeastEntityType.BYTES: BYTES,
}


# ---------------------------------------------------------------------------------------------- hashing


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit (unsigned), as `mmh3.hash(data, seed, signed=False)`; once per field name."""
    mask = 0xFFFFFFFF
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & mask
    nblocks = len(data) // 4
    for (k,) in struct.iter_unpack("<I", data[: nblocks * 4]):
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    tail = data[nblocks * 4 :]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        h ^= (k * c2) & mask
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    return h ^ (h >> 16)


def field_name(feature_view: str, feature: str) -> bytes:
    """The hash field of a feature: Feast's `_mmh3(f"{feature_view}:{feature}")`."""
    return struct.pack("<I", murmur3_32(f"{feature_view}:{feature}".encode()))


def ts_field(feature_view: str) -> str:
    return TS_PREFIX + feature_view


# ------------------------------------------------------------------------------------------------ types


def feature_field(name: str, t: pa.DataType) -> ValueField:
    """The Value field a feature column is written as; bad input naming the column when there is none."""
    if pa.types.is_dictionary(t):
        return feature_field(name, t.value_type)
    if pa.types.is_boolean(t):
        return BOOL
    if t in (pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16()):
        return INT32
    if t in (pa.int64(), pa.uint32()):
        return INT64
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return FLOAT
    if pa.types.is_float64(t):
        return DOUBLE
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return STRING
    if (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    ):
        return BYTES
    if pa.types.is_timestamp(t):
        return UNIX_TIMESTAMP
    raise bad_input(f"column {name} is {t}, which Feast's Redis format cannot hold: {_cast_hint(name, t)}")


def _cast_hint(name: str, t: pa.DataType) -> str:
    q = '"' + name.replace('"', '""') + '"'
    if pa.types.is_uint64(t):
        return f"its values may not fit Feast's Int64; cast it in the transform (CAST({q} AS BIGINT))"
    if pa.types.is_decimal(t):
        return (
            f"cast it in the transform (CAST({q} AS DOUBLE), or BIGINT; DuckDB's sum() of integers is a "
            "HUGEINT decimal)"
        )
    if pa.types.is_null(t):
        return f"it has no type (all NULL); cast it in the transform, e.g. CAST({q} AS DOUBLE)"
    if pa.types.is_date(t):
        return f"cast it in the transform to a timestamp (CAST({q} AS TIMESTAMP)) or a string"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "list features are not written in feast format yet; store them as a string (to_json) or bytes"
    return f"cast it in the transform to BIGINT, DOUBLE, BOOLEAN, VARCHAR, BLOB or TIMESTAMP ({q})"


def entity_field(name: str, t: pa.DataType, declared: FeastEntityType | None) -> ValueField:
    """The Value type of an entity key column: the declared one (checked against the column's type), or
    the column's own (int32 and narrower: INT32; int64, uint32: INT64; strings; bytes)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    narrow = t in (pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16())
    wide = t in (pa.int64(), pa.uint32())
    text = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
    raw = (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    )
    inferred = INT32 if narrow else INT64 if wide else STRING if text else BYTES if raw else None
    if declared is not None:
        declared = FeastEntityType(declared)  # the API model keeps enum values as plain strings
    if declared is None:
        if inferred is None:
            raise bad_input(
                f"entity key {name} is {t}: a Feast entity key is int64, int32, string or bytes; "
                "cast it in the transform"
            )
        return inferred
    ok = {
        FeastEntityType.INT64: narrow or wide,
        FeastEntityType.INT32: narrow,
        FeastEntityType.STRING: text,
        FeastEntityType.BYTES: raw,
    }[declared]
    if not ok:
        hint = {
            FeastEntityType.INT64: "BIGINT",
            FeastEntityType.INT32: "INTEGER",
            FeastEntityType.STRING: "VARCHAR",
            FeastEntityType.BYTES: "BLOB",
        }[declared]
        q = '"' + name.replace('"', '""') + '"'
        raise bad_input(
            f"entity key {name} is {t} in the transform output, but redis.feast.entityTypes declares it "
            f"{declared.value}: cast it in the transform (CAST({q} AS {hint})) or declare the type it has"
        )
    return ENTITY_FIELDS[declared]


@dataclass(frozen=True)
class FeastSchema:
    """How each output column is written: entity keys (sorted by name, as Feast serializes them) and
    features (in output order), with their Value fields."""

    entities: tuple[tuple[str, ValueField], ...]
    features: tuple[tuple[str, ValueField], ...]
    timestamp: str


def feast_schema(schema: pa.Schema, keys: Sequence[str], timestamp: str, layout: FeastLayout) -> FeastSchema:
    """The Feast types of a transform output (bad input, before anything is written, when one has none)."""
    names = ", ".join(schema.names)
    for column in [*keys, timestamp]:
        if schema.get_field_index(column) < 0:
            raise bad_input(f"transform output has no column {column}; its columns: {names}")
    unknown = sorted(set(layout.entityTypes) - set(keys))
    if unknown:
        raise bad_input(
            f"redis.feast.entityTypes names {', '.join(unknown)}, which are not entity keys "
            f"(entityKeys: {', '.join(keys)})"
        )
    entities = tuple(
        (k, entity_field(k, schema.field(k).type, layout.entityTypes.get(k))) for k in sorted(keys)
    )
    features = tuple(
        (f.name, feature_field(f.name, f.type)) for f in schema if f.name not in keys and f.name != timestamp
    )
    if not features:
        raise bad_input(f"transform output has no feature column besides the keys and {timestamp}")
    return FeastSchema(entities=entities, features=features, timestamp=timestamp)


def check_schema(sink: RedisSink, schema: pa.Schema, keys: Sequence[str], timestamp: str) -> None:
    """The output can be written in Feast's layout (the output check calls it, before any write)."""
    feast_schema(schema, keys, timestamp, _layout(sink))


def _layout(sink: RedisSink) -> FeastLayout:
    if sink.feast is None:
        raise bad_input("redis.format feast needs redis.feast{project, featureView}")
    return sink.feast


# --------------------------------------------------------------------------------- vectorized encoding


def rows(data: Matrix, lengths: Ints) -> pa.LargeBinaryArray:
    """A large_binary array of the first lengths[i] bytes of each row of the (n, k) matrix."""
    n, k = data.shape
    if n == 0:
        return pa.array([], pa.large_binary())
    mask = np.arange(k)[None, :] < lengths[:, None]
    flat = np.ascontiguousarray(data[mask]) if not bool(mask.all()) else np.ascontiguousarray(data)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(flat.reshape(-1))]
    )


_THRESHOLDS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)
_SHIFTS = np.arange(10, dtype=np.uint64) * np.uint64(7)


def varints(values: np.ndarray[Any, Any]) -> tuple[Matrix, Ints]:
    """Protobuf varints of int64 values (negatives as 10-byte two's complement): (n, 10) bytes, lengths."""
    u = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
    lengths = 1 + (u[:, None] >= _THRESHOLDS[None, :]).sum(axis=1, dtype=np.int64)
    groups = ((u[:, None] >> _SHIFTS[None, :]) & np.uint64(0x7F)).astype(U8)
    groups[np.arange(10)[None, :] < (lengths - 1)[:, None]] |= U8(0x80)
    return groups, lengths


def concat(pieces: Sequence[tuple[Matrix, Ints]]) -> tuple[Matrix, Ints]:
    """Row-wise concatenation of variable-length pieces: each piece's first len bytes, in order."""
    n = pieces[0][0].shape[0]
    width = sum(m.shape[1] for m, _ in pieces)
    out = np.zeros((n, width), dtype=U8)
    total = np.zeros(n, dtype=np.int64)
    col = np.arange(width)[None, :]
    for m, lengths in pieces:
        k = m.shape[1]
        # place piece bytes at [total, total + len) of each row
        src = np.arange(k)[None, :] < lengths[:, None]
        rows_idx = np.broadcast_to(np.arange(n)[:, None], (n, k))[src]
        cols_idx = (total[:, None] + np.arange(k)[None, :])[src]
        out[rows_idx, cols_idx] = m[src]
        total = total + lengths
    del col
    return out, total


def _constant(data: bytes, n: int) -> tuple[Matrix, Ints]:
    m = np.broadcast_to(np.frombuffer(data, dtype=U8), (n, len(data)))
    return np.ascontiguousarray(m), np.full(n, len(data), dtype=np.int64)


def _fixed(values: np.ndarray[Any, Any], dtype: str) -> tuple[Matrix, Ints]:
    raw = np.ascontiguousarray(values, dtype=dtype)
    width = raw.dtype.itemsize
    return raw.view(U8).reshape(len(raw), width), np.full(len(raw), width, dtype=np.int64)


def _valid(values: pa.Array) -> np.ndarray[Any, np.dtype[np.bool_]]:
    if values.null_count == 0:
        return np.ones(len(values), dtype=bool)
    return np.asarray(pc.is_valid(values).to_numpy(zero_copy_only=False), dtype=bool)


def _numbers(values: pa.Array, dtype: str) -> np.ndarray[Any, Any]:
    filled = pc.fill_null(values, 0) if values.null_count else values
    return np.asarray(filled.cast(pa.from_numpy_dtype(np.dtype(dtype))).to_numpy(zero_copy_only=False))


def _binary(values: pa.Array) -> pa.LargeBinaryArray:
    """Strings or bytes as large_binary, nulls as empty."""
    t = values.type
    if pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t) or pa.types.is_string_view(t):
        values = values.cast(pa.binary())
    out = values.cast(pa.large_binary())
    if out.null_count:
        out = pc.fill_null(out, pa.scalar(b"", pa.large_binary()))
    return out


def _join(*parts: pa.Array | bytes) -> pa.LargeBinaryArray:
    args = [pa.scalar(p, pa.large_binary()) if isinstance(p, bytes) else p for p in parts]
    return pc.binary_join_element_wise(*args, pa.scalar(b"", pa.large_binary()))


def _as_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return values


def seconds_floor(values: pa.Array) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Epoch seconds (floor) of a timestamp column, nulls as 0."""
    unit = values.type.unit
    per = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    raw = _numbers(values.cast(pa.timestamp(unit)).cast(pa.int64()), "int64")
    return np.asarray(np.floor_divide(raw, per), dtype=np.int64)


def micros_floor(values: pa.Array) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Epoch microseconds (floor, as Feast's datetimes) of a timestamp column, nulls as 0."""
    unit = values.type.unit
    raw = _numbers(values.cast(pa.timestamp(unit)).cast(pa.int64()), "int64")
    if unit == "ns":
        return np.asarray(np.floor_divide(raw, 1000), dtype=np.int64)
    return np.asarray(raw * {"s": 1_000_000, "ms": 1_000, "us": 1}[unit], dtype=np.int64)


def value_bytes(values: pa.Array | pa.ChunkedArray, field: ValueField) -> pa.LargeBinaryArray:
    """Each row as a serialized feast.types.Value with `field` set (what Feast's materialization writes):
    empty for a null (and a float NaN); INT64_MIN for a null timestamp."""
    values = _as_array(values)
    n = len(values)
    valid = _valid(values)
    tag = bytes([field.tag])
    if field is STRING or field is BYTES:
        data = _binary(values)
        length = _numbers(pc.binary_length(data), "int64")
        head = concat([_constant(tag, n), varints(length)])
        prefix = rows(head[0], np.where(valid, head[1], 0))
        return _join(prefix, data)
    if field is FLOAT or field is DOUBLE:
        dtype = "<f4" if field is FLOAT else "<f8"
        numbers = _numbers(values, dtype)
        m, lengths = concat([_constant(tag, n), _fixed(numbers, dtype)])
        keep = valid & ~np.isnan(numbers)
        return rows(m, np.where(keep, lengths, 0))
    if field is UNIX_TIMESTAMP:
        numbers = np.where(valid, seconds_floor(values), INT64_MIN)
        m, lengths = concat([_constant(tag, n), varints(numbers)])
        return rows(m, lengths)
    if field is BOOL:
        filled = pc.fill_null(values, False) if values.null_count else values
        numbers = np.asarray(filled.cast(pa.int64()).to_numpy(zero_copy_only=False))
    else:  # INT32, INT64 (int32 negatives are sign-extended to 10 bytes, as protobuf does)
        numbers = _numbers(values, "int64")
    m, lengths = concat([_constant(tag, n), varints(numbers)])
    return rows(m, np.where(valid, lengths, 0))


def timestamp_bytes(micros: np.ndarray[Any, np.dtype[np.int64]]) -> pa.LargeBinaryArray:
    """Serialized google.protobuf.Timestamp of epoch microseconds (fields at their default are omitted)."""
    seconds = np.floor_divide(micros, 1_000_000)
    nanos = (micros - seconds * 1_000_000) * 1000
    n = len(micros)
    s_m, s_len = concat([_constant(bytes([TS_SECONDS_TAG]), n), varints(seconds)])
    n_m, n_len = concat([_constant(bytes([TS_NANOS_TAG]), n), varints(nanos)])
    m, lengths = concat([(s_m, np.where(seconds != 0, s_len, 0)), (n_m, np.where(nanos != 0, n_len, 0))])
    return rows(m, lengths)


def entity_keys(batch: pa.RecordBatch, schema: FeastSchema, project: str) -> pa.LargeBinaryArray:
    """Feast's Redis key of every row: `serialize_entity_key(v3)` + project (the keys sorted by name)."""
    n = batch.num_rows
    head = [struct.pack("<I", len(schema.entities))]
    for name, _ in schema.entities:
        raw = name.encode()
        head.append(struct.pack("<II", STRING.value_type, len(raw)) + raw)
    fixed: list[tuple[Matrix, Ints]] = [_constant(b"".join(head), n)]
    parts: list[pa.Array | bytes] = []
    for name, field in schema.entities:
        values = _as_array(batch.column(name))
        if field is INT64 or field is INT32:
            dtype = "<i8" if field is INT64 else "<i4"
            fixed.append(_constant(struct.pack("<II", field.value_type, np.dtype(dtype).itemsize), n))
            fixed.append(_fixed(_numbers(values, "int64").astype(dtype), dtype))
            continue
        data = _binary(values)
        length = _numbers(pc.binary_length(data), "int64")
        fixed.append(_constant(struct.pack("<I", field.value_type), n))
        fixed.append(_fixed(length, "<u4"))
        parts.append(rows(*concat(fixed)))
        parts.append(data)
        fixed = []
    if fixed:
        parts.append(rows(*concat(fixed)))
    parts.append(project.encode())
    return _join(*parts)


class FeastEncoder:
    """RESP pieces of batches for the Feast-layout Lua script (one schema, resolved once)."""

    def __init__(self, schema: pa.Schema, keys: Sequence[str], timestamp: str, layout: FeastLayout) -> None:
        self.schema = schema
        self.columns = feast_schema(schema, keys, timestamp, layout)
        self.project = layout.project
        view = layout.featureView
        self.fields = [
            pa.scalar(_bulk(field_name(view, name)), pa.large_binary()) for name, _ in self.columns.features
        ]
        self.argc = 3 + 2 * len(self.columns.features)

    def encode(self, batch: pa.RecordBatch) -> Encoded:
        n = batch.num_rows
        keys = bulk(entity_keys(batch, self.columns, self.project))
        micros = micros_floor(_as_array(batch.column(self.columns.timestamp)))
        seconds = np.floor_divide(micros, 1_000_000)
        nanos = (micros - seconds * 1_000_000) * 1000
        args: list[pa.Array | pa.Scalar] = [
            bulk(timestamp_bytes(micros)),
            bulk(pa.array(seconds).cast(pa.string()).cast(pa.large_binary())),
            bulk(pa.array(nanos).cast(pa.string()).cast(pa.large_binary())),
        ]
        for (name, field), fname in zip(self.columns.features, self.fields, strict=True):
            args.append(fname)
            args.append(bulk(value_bytes(batch.column(name), field)))
        joined = pc.binary_join_element_wise(*args, pa.scalar(b"", pa.large_binary()))
        return Encoded(keys=keys, args=joined, argc_cumsum=np.arange(n + 1, dtype=np.int64) * self.argc)


def _bulk(raw: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


class FeastWriter(RedisWriter):
    """Writes a pipeline's output into Redis in Feast's layout; `write` returns entities written.

    Same connection, pipelining and error mapping as the Loom-layout writer; the `_ts:<featureView>` field
    and the Lua compare-and-write differ."""

    format: ClassVar[OnlineFormat] = OnlineFormat.FEAST
    script: ClassVar[str] = SCRIPT

    def __init__(self, sink: RedisSink, pipeline: str, keys: Sequence[str], timestamp: str) -> None:
        self.feast = _layout(sink)
        # the Layout's `_ts:<pipeline>` field is Feast's `_ts:<featureView>`; ttl and keys as for loom
        super().__init__(sink, self.feast.featureView, keys, timestamp)
        self._encoder: FeastEncoder | None = None

    def encoder(self, schema: pa.Schema) -> FeastEncoder:
        if self._encoder is None or not self._encoder.schema.equals(schema):
            self._encoder = FeastEncoder(schema, self.layout.keys, self.layout.timestamp, self.feast)
        return self._encoder

    def _commands(self, batch: pa.RecordBatch) -> Any:
        return commands(self.encoder(batch.schema).encode(batch), self._sha, self.layout)
