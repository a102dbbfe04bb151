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

Rule: encoded from whole Arrow columns with numpy and pyarrow.compute, never one Python object per value
(the wire-level encoders and the field hashing are `loom.features.feast_wire`; this module: the layout).
The protobuf wire format is written directly (tag, varint, fixed32/64, length-delimited) from the field
numbers and types of Feast's Value.proto (listed in feast_wire): one generated protobuf object per value costs
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
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from loom.api.featurepipeline import FeastEntityType, FeastLayout, OnlineFormat, RedisSink
from loom.features.errors import bad_input
from loom.features.feast_wire import (
    BOOL,
    BYTES,
    DOUBLE,
    FLOAT,
    INT32,
    INT64,
    STRING,
    UNIX_TIMESTAMP,
    Ints,
    Parts,
    ValueField,
    add_timestamp,
    add_value,
    as_array,
    as_numbers,
    binary_column,
    decimal,
    field_name,
    fixed_decimal,
    flat,
    little_endian,
    micros_floor,
)
from loom.features.online import CHUNK_ENTITIES, Encoded, RedisWriter

TS_PREFIX = "_ts:"

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

ENTITY_FIELDS = {
    FeastEntityType.INT64: INT64,
    FeastEntityType.INT32: INT32,
    FeastEntityType.STRING: STRING,
    FeastEntityType.BYTES: BYTES,
}


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
        values = as_array(batch.column(name))
        if field is INT64 or field is INT32:
            dtype = "<i8" if field is INT64 else "<i4"
            fixed = little_endian(as_numbers(values, "int64").astype(dtype), dtype)
            columns.append((field, fixed, np.empty(0, np.int64)))
            size += 8 + np.dtype(dtype).itemsize
        else:
            data, length = binary_column(values)
            columns.append((field, data, length))
            size += 8 + length
    if resp:
        parts.resp(size)
    parts.const(b"".join(head))
    for field, data, length in columns:
        if isinstance(data, np.ndarray):
            parts.const(struct.pack("<II", field.value_type, data.shape[1])).fixed(data)
        else:
            parts.const(struct.pack("<I", field.value_type)).fixed(little_endian(length, "<u4"))
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
        micros = micros_floor(as_array(batch.column(self.columns.timestamp)))
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
    key_off, key_data = flat(encoded.keys)
    arg_off, arg_data = flat(encoded.args)
    fixed = b"".join(_bulk(x) for x in [ts.encode(), b"%d" % ttl_ms, b"%d" % len(fields), *fields])
    for a in range(0, len(encoded), chunk):
        b = min(a + chunk, len(encoded))
        nargs = 3 + (b - a) + 3 + len(fields) + int(encoded.argc_cumsum[b] - encoded.argc_cumsum[a])
        header = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n%s" % (nargs, sha.encode(), _bulk(b"%d" % (b - a)))
        yield [header, key_data[key_off[a] : key_off[b]], fixed, arg_data[arg_off[a] : arg_off[b]]]
