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
skips equal), and each key written gets `ttlSeconds` (PEXPIRE). Rows of one batch for one entity apply in
order. The hash field names travel once per chunk; Redis's time in that script (one HGET and one HSET per
entity) is what bounds the write rate (`make bench-features` prints its CPU per entity).

Rule: encoded from whole Arrow columns with numpy and pyarrow.compute, never one Python object per value.
The protobuf wire format is written directly (tag, varint, fixed32/64, length-delimited) from the field
numbers and types of Feast's Value.proto listed below: one generated protobuf object per value costs
about 1.5 us (upb), 5-10 us per entity of five features against about 1-2 us for this encoder (the
benchmark prints both, and Feast's whole per-row conversion, 50-100 us);
operator/tests/test_features_feast.py proves the bytes identical to Feast's own serialization
(`Value.SerializeToString()` through `feast.utils._convert_arrow_to_proto`, `serialize_entity_key`,
`Timestamp.FromDatetime`) over every supported type, with nulls. Feast itself is not needed at run time.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loom.api.featurepipeline import FeastEntityType, FeastLayout, OnlineFormat, RedisSink
from loom.features.errors import bad_input
from loom.features.online import CHUNK_ENTITIES, Encoded, RedisWriter

TS_PREFIX = "_ts:"
INT64_MIN = -(2**63)  # Feast's NULL_TIMESTAMP_INT_VALUE: np.datetime64("NaT").astype(int)
U8 = np.uint8
Matrix = np.ndarray[Any, np.dtype[np.uint8]]
Ints = np.ndarray[Any, np.dtype[np.int64]]

# KEYS: the chunk's entity keys. ARGV: `_ts:<featureView>`, ttl ms (0: none), the number of features f,
# their f hash fields; then per entity: serialized Timestamp, its seconds, its nanos, the f values.
SCRIPT = """
local tsf, ttl, nf = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS
if n == 0 then return 0 end
local stride = 3 + nf
local byte, call = string.byte, redis.call
local args = {tsf, false}
for k = 1, nf do args[2 * k + 1] = ARGV[3 + k] end
-- a protobuf varint at s[i]: its value (int64 two's complement when 10 bytes) and the next index
local function varint(s, i)
  local start, v, m = i, 0, 1
  local b = byte(s, i)
  while b and b >= 128 do
    v = v + (b - 128) * m
    m = m * 128
    i = i + 1
    b = byte(s, i)
  end
  if not b then return nil, i end
  v = v + b * m
  if i - start >= 9 then
    local c
    c, m = 0, 1
    for j = start, start + 8 do
      c = c + (127 - byte(s, j) % 128) * m
      m = m * 128
    end
    v = -(c + 1)
  end
  return v, i + 1
end
-- is the stored google.protobuf.Timestamp `old` at or before (sec, nanos)? (unreadable: yes)
local function due(old, sec, nanos)
  if #old == 0 then return true end
  sec, nanos = tonumber(sec), tonumber(nanos)
  local i, osec, onanos, tag, v = 1, 0, 0, nil, nil
  while i <= #old do
    tag = byte(old, i)
    v, i = varint(old, i + 1)
    if not v then return true end
    if tag == 8 then
      osec = v
      if osec ~= sec then return osec < sec end
    elseif tag == 16 then
      onanos = v
    else
      return true
    end
  end
  if osec ~= sec then return osec < sec end
  return onanos <= nanos
end
local written, p = 0, 4 + nf
for i = 1, n do
  local key = KEYS[i]
  local old = call('HGET', key, tsf)
  if not old or due(old, ARGV[p + 1], ARGV[p + 2]) then
    args[2] = ARGV[p]
    for k = 1, nf do args[2 * k + 2] = ARGV[p + 2 + k] end
    call('HSET', key, unpack(args))
    if ttl > 0 then call('PEXPIRE', key, ttl) end
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


class Parts:
    """Per-row byte strings of n rows, built from slots appended left to right, all vectorized.

    A slot is a constant, an (n, k) byte matrix of which row i contributes its first lengths[i] bytes, or
    a binary column. The slots between binary columns are laid side by side in one (n, width) matrix
    (constants broadcast), packed with one boolean mask when some slot's width varies (zero-copy into
    Arrow when none does); binary columns (strings) split the row, and the pieces are joined once by
    Arrow's `binary_join_element_wise` (whose cost grows with its number of arguments)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._slots: list[tuple[Matrix, Ints | None]] = []
        self._pieces: list[pa.Array] = []

    def const(self, raw: bytes) -> Parts:
        if raw:
            self._slots.append((np.frombuffer(raw, dtype=U8)[None, :], None))
        return self

    def fixed(self, m: Matrix, lengths: Ints | None = None) -> Parts:
        """Row i contributes m[i, :lengths[i]] (all k bytes when lengths is None)."""
        if lengths is not None and bool((lengths == m.shape[1]).all()):
            lengths = None
        self._slots.append((m, lengths))
        return self

    def binary(self, values: pa.LargeBinaryArray) -> Parts:
        """A variable-length column (no nulls)."""
        self._flush()
        self._pieces.append(values)
        return self

    def resp(self, lengths: Ints) -> Parts:
        """A RESP bulk string header `$<len>\r\n` of values of these lengths."""
        if len(lengths) and int(lengths.max()) < len(_HEADER_LENGTHS):
            sizes = _HEADER_LENGTHS[lengths]
            return self.fixed(_HEADERS[lengths, : int(sizes.max())], sizes)
        digits, count = decimal(lengths)
        return self.const(b"$").fixed(digits, count).const(b"\r\n")

    def build(self) -> pa.LargeBinaryArray:
        self._flush()
        if not self._pieces:
            return _packed(np.zeros(0, dtype=U8), np.zeros(self.n, dtype=np.int64))
        if len(self._pieces) == 1:
            return self._pieces[0]
        return pc.binary_join_element_wise(*self._pieces, pa.scalar(b"", pa.large_binary()))

    def _flush(self) -> None:
        if not self._slots:
            return
        n = self.n
        width = sum(m.shape[1] for m, _ in self._slots)
        out = np.empty((n, width), dtype=U8)
        mask = None
        total = np.full(n, width, dtype=np.int64)
        a = 0
        for m, lengths in self._slots:
            k = m.shape[1]
            out[:, a : a + k] = m
            if lengths is not None:
                if mask is None:
                    mask = np.ones((n, width), dtype=bool)
                cols = _COLUMNS[:k] if k <= len(_COLUMNS) else np.arange(k)
                np.less(cols[None, :], lengths[:, None], out=mask[:, a : a + k])
                total -= k - lengths
            a += k
        data = out.reshape(-1) if mask is None else np.compress(mask.reshape(-1), out.reshape(-1))
        self._pieces.append(_packed(data, total))
        self._slots = []


def _packed(data: np.ndarray[Any, Any], lengths: Ints) -> pa.LargeBinaryArray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(),
        len(lengths),
        [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))],
    )


_COLUMNS = np.arange(64)
_THRESHOLDS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)
_POW10 = np.array([10**k for k in range(20)], dtype=np.uint64)


def _header_table(limit: int) -> tuple[Matrix, Ints]:
    raw = [b"$%d\r\n" % i for i in range(limit)]
    width = max(len(r) for r in raw)
    table = np.zeros((limit, width), dtype=U8)
    for i, r in enumerate(raw):
        table[i, : len(r)] = np.frombuffer(r, dtype=U8)
    return table, np.array([len(r) for r in raw], dtype=np.int64)


_HEADERS, _HEADER_LENGTHS = _header_table(1000)


def varints(values: np.ndarray[Any, Any]) -> tuple[Matrix, Ints]:
    """Protobuf varints of int64 values (negatives as 10-byte two's complement): (n, k) bytes, lengths."""
    u = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
    lengths = np.ones(len(u), dtype=np.int64)
    for threshold in _THRESHOLDS:
        lengths += u >= threshold
    k = int(lengths.max()) if len(u) else 1
    out = np.empty((len(u), k), dtype=U8)
    for j in range(k):
        group = (u >> np.uint64(7 * j)) & np.uint64(0x7F)
        out[:, j] = group | np.where(lengths > j + 1, np.uint64(0x80), np.uint64(0))
    return out, lengths


def decimal(values: np.ndarray[Any, Any]) -> tuple[Matrix, Ints]:
    """Decimal text of int64 values (a leading '-' for negatives): (n, k) ASCII bytes, lengths."""
    v = np.ascontiguousarray(values, dtype=np.int64)
    neg = v < 0
    u = np.where(neg, (~v.view(np.uint64)) + np.uint64(1), v.view(np.uint64))
    ndig = np.ones(len(v), dtype=np.int64)
    for p in _POW10[1:]:
        ndig += u >= p
    k = int(ndig.max()) if len(v) else 1
    digits = np.empty((len(v), k), dtype=U8)
    for j in range(k):  # column j holds the digit of 10**(ndig-1-j)
        power = _POW10[np.clip(ndig - 1 - j, 0, 19)]
        digits[:, j] = ((u // power) % np.uint64(10)).astype(U8) + U8(48)
    if not neg.any():
        return digits, ndig
    out = np.empty((len(v), k + 1), dtype=U8)
    out[:, 0] = ord("-")
    out[:, 1:] = digits
    shifted = np.where(neg[:, None], out, np.concatenate([digits, out[:, :1]], axis=1))
    return shifted, ndig + neg


def fixed_decimal(values: np.ndarray[Any, Any], digits: int) -> Matrix | None:
    """Decimal text of int64 values in a fixed width, zero-padded, '-' in front of negatives: `digits`
    digits after a sign column ('0' or '-') when some value is negative; None when one does not fit."""
    v = np.ascontiguousarray(values, dtype=np.int64)
    neg = v < 0
    signed = bool(neg.any())
    u = np.abs(v)
    if len(v) and int(u.max()) >= 10**digits:
        return None
    out = np.empty((len(v), digits + signed), dtype=U8)
    if signed:
        out[:, 0] = np.where(neg, ord("-"), ord("0"))
    for j in range(digits):
        out[:, signed + j] = ((u // 10 ** (digits - 1 - j)) % 10).astype(U8) + U8(48)
    return out


def _le(values: np.ndarray[Any, Any], dtype: str) -> Matrix:
    raw = np.ascontiguousarray(values, dtype=dtype)
    return raw.view(U8).reshape(len(raw), raw.dtype.itemsize)


def _valid(values: pa.Array) -> np.ndarray[Any, np.dtype[np.bool_]]:
    if values.null_count == 0:
        return np.ones(len(values), dtype=bool)
    return np.asarray(pc.is_valid(values).to_numpy(zero_copy_only=False), dtype=bool)


def _numbers(values: pa.Array, dtype: str) -> np.ndarray[Any, Any]:
    filled = pc.fill_null(values, 0) if values.null_count else values
    return np.asarray(filled.cast(pa.from_numpy_dtype(np.dtype(dtype))).to_numpy(zero_copy_only=False))


def _binary(values: pa.Array) -> tuple[pa.LargeBinaryArray, Ints]:
    """Strings or bytes as large_binary, nulls as empty, and their byte lengths."""
    t = values.type
    if pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t) or pa.types.is_string_view(t):
        values = values.cast(pa.binary())
    out = values.cast(pa.large_binary())
    if out.null_count:
        out = pc.fill_null(out, pa.scalar(b"", pa.large_binary()))
    offsets = np.frombuffer(out.buffers()[1], dtype=np.int64)[out.offset : out.offset + len(out) + 1]
    return out, np.diff(offsets)


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


def add_value(parts: Parts, values: pa.Array | pa.ChunkedArray, field: ValueField, *, resp: bool) -> None:
    """Append each row as a serialized feast.types.Value with `field` set (what Feast's materialization
    writes: empty for a null and for a float NaN; INT64_MIN for a null timestamp), as a RESP bulk string
    when `resp`."""
    values = _as_array(values)
    n = len(values)
    valid = _valid(values)
    tag = np.full((n, 1), field.tag, dtype=U8)
    if field is STRING or field is BYTES:
        data, length = _binary(values)
        head, head_len = varints(length)
        size = np.where(valid, 1 + head_len + length, 0)
        if resp:
            parts.resp(size)
        parts.fixed(tag, valid.astype(np.int64)).fixed(head, np.where(valid, head_len, 0))
        parts.binary(data)
    else:
        if field is FLOAT or field is DOUBLE:
            dtype = "<f4" if field is FLOAT else "<f8"
            numbers = _numbers(values, dtype)
            body, body_len = _le(numbers, dtype), np.full(n, np.dtype(dtype).itemsize, dtype=np.int64)
            valid = valid & ~np.isnan(numbers)
        elif field is BOOL:
            filled = pc.fill_null(values, False) if values.null_count else values
            body = np.asarray(filled.cast(pa.uint8()).to_numpy(zero_copy_only=False), dtype=U8)[:, None]
            body_len = np.ones(n, dtype=np.int64)
        elif field is UNIX_TIMESTAMP:
            body, body_len = varints(np.where(valid, seconds_floor(values), INT64_MIN))
            valid = np.ones(n, dtype=bool)
        else:  # INT32, INT64 (int32 negatives are sign-extended to 10 bytes, as protobuf does)
            body, body_len = varints(_numbers(values, "int64"))
        size = np.where(valid, 1 + body_len, 0)
        if resp:
            parts.resp(size)
        parts.fixed(tag, valid.astype(np.int64)).fixed(body, np.where(valid, body_len, 0))
    if resp:
        parts.const(b"\r\n")


def value_bytes(values: pa.Array | pa.ChunkedArray, field: ValueField) -> pa.LargeBinaryArray:
    """Each row as a serialized feast.types.Value (see `add_value`)."""
    parts = Parts(len(values))
    add_value(parts, values, field, resp=False)
    return parts.build()


def add_timestamp(parts: Parts, micros: Ints, *, resp: bool) -> None:
    """Append serialized google.protobuf.Timestamps of epoch microseconds (fields at 0 are omitted)."""
    seconds = np.floor_divide(micros, 1_000_000)
    nanos = (micros - seconds * 1_000_000) * 1000
    s_body, s_len = varints(seconds)
    n_body, n_len = varints(nanos)
    s_len = np.where(seconds != 0, s_len, 0)
    n_len = np.where(nanos != 0, n_len, 0)
    n = len(micros)
    if resp:
        parts.resp((s_len > 0) + s_len + (n_len > 0) + n_len)
    parts.fixed(np.full((n, 1), TS_SECONDS_TAG, dtype=U8), (s_len > 0).astype(np.int64)).fixed(s_body, s_len)
    parts.fixed(np.full((n, 1), TS_NANOS_TAG, dtype=U8), (n_len > 0).astype(np.int64)).fixed(n_body, n_len)
    if resp:
        parts.const(b"\r\n")


def timestamp_bytes(micros: Ints) -> pa.LargeBinaryArray:
    parts = Parts(len(micros))
    add_timestamp(parts, micros, resp=False)
    return parts.build()


def add_entity_keys(
    parts: Parts, batch: pa.RecordBatch, schema: FeastSchema, project: str, *, resp: bool
) -> None:
    """Append Feast's Redis key of every row: `serialize_entity_key(v3)` + project (keys sorted by name)."""
    n = batch.num_rows
    head = [struct.pack("<I", len(schema.entities))]
    for name, _ in schema.entities:
        raw = name.encode()
        head.append(struct.pack("<II", STRING.value_type, len(raw)) + raw)
    size = np.full(n, sum(len(h) for h in head) + len(project.encode()), dtype=np.int64)
    columns: list[tuple[ValueField, Any, Ints]] = []
    for name, field in schema.entities:
        values = _as_array(batch.column(name))
        if field is INT64 or field is INT32:
            dtype = "<i8" if field is INT64 else "<i4"
            columns.append(
                (field, _le(_numbers(values, "int64").astype(dtype), dtype), np.empty(0, np.int64))
            )
            size += 8 + np.dtype(dtype).itemsize
        else:
            data, length = _binary(values)
            columns.append((field, data, length))
            size += 8 + length
    if resp:
        parts.resp(size)
    parts.const(b"".join(head))
    for field, data, length in columns:
        if isinstance(data, np.ndarray):
            parts.const(struct.pack("<II", field.value_type, data.shape[1])).fixed(data)
        else:
            parts.const(struct.pack("<I", field.value_type)).fixed(_le(length, "<u4"))
            parts.binary(data)
    parts.const(project.encode() + (b"\r\n" if resp else b""))


def entity_keys(batch: pa.RecordBatch, schema: FeastSchema, project: str) -> pa.LargeBinaryArray:
    parts = Parts(batch.num_rows)
    add_entity_keys(parts, batch, schema, project, resp=False)
    return parts.build()


class FeastEncoder:
    """RESP pieces of batches for the Feast-layout Lua script (one schema, resolved once)."""

    def __init__(self, schema: pa.Schema, keys: Sequence[str], timestamp: str, layout: FeastLayout) -> None:
        self.schema = schema
        self.columns = feast_schema(schema, keys, timestamp, layout)
        self.project = layout.project
        view = layout.featureView
        self.fields = [field_name(view, name) for name, _ in self.columns.features]
        self.argc = 3 + len(self.columns.features)

    def encode(self, batch: pa.RecordBatch) -> Encoded:
        n = batch.num_rows
        keys = Parts(n)
        add_entity_keys(keys, batch, self.columns, self.project, resp=True)
        micros = micros_floor(_as_array(batch.column(self.columns.timestamp)))
        seconds = np.floor_divide(micros, 1_000_000)
        nanos = (micros - seconds * 1_000_000) * 1000
        args = Parts(n)
        add_timestamp(args, micros, resp=True)
        for number, width in ((seconds, 12), (nanos, 9)):
            text = fixed_decimal(number, width)  # Lua's tonumber reads "0001700000000" and "-00000000001"
            if text is None:
                digits, count = decimal(number)
                args.resp(count).fixed(digits, count).const(b"\r\n")
            else:
                args.const(b"$%d\r\n" % text.shape[1]).fixed(text).const(b"\r\n")
        for name, field in self.columns.features:
            add_value(args, batch.column(name), field, resp=True)
        return Encoded(
            keys=keys.build(), args=args.build(), argc_cumsum=np.arange(n + 1, dtype=np.int64) * self.argc
        )


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

    def _commands(self, batch: pa.RecordBatch) -> Iterator[list[Any]]:
        """The batch's EVALSHA chunks, encoded now (on the writer's helper thread: while the previous
        batch's chunks are sent)."""
        encoder = self.encoder(batch.schema)
        return commands(
            encoder.encode(batch), self._sha, self.layout.ts_field, self.layout.ttl_ms, encoder.fields
        )


def commands(
    encoded: Encoded, sha: str, ts: str, ttl_ms: int, fields: Sequence[bytes], chunk: int = CHUNK_ENTITIES
) -> Iterator[list[Any]]:
    """One EVALSHA of SCRIPT per chunk of entities, as buffers to send: header, keys, fixed args, rows."""
    key_off, key_data = _flat(encoded.keys)
    arg_off, arg_data = _flat(encoded.args)
    fixed = b"".join(_bulk(x) for x in [ts.encode(), b"%d" % ttl_ms, b"%d" % len(fields), *fields])
    for a in range(0, len(encoded), chunk):
        b = min(a + chunk, len(encoded))
        nargs = 3 + (b - a) + 3 + len(fields) + int(encoded.argc_cumsum[b] - encoded.argc_cumsum[a])
        header = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n%s" % (nargs, sha.encode(), _bulk(b"%d" % (b - a)))
        yield [header, key_data[key_off[a] : key_off[b]], fixed, arg_data[arg_off[a] : arg_off[b]]]


def _flat(values: pa.LargeBinaryArray) -> tuple[Ints, memoryview]:
    """The offsets and the data buffer of a large_binary array: row i is data[off[i]:off[i+1]]."""
    buffers = values.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[values.offset : values.offset + len(values) + 1]
    return offsets, memoryview(buffers[2] if buffers[2] is not None else b"")
