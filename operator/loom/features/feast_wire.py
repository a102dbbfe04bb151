"""The protobuf wire format of Feast's values and its field hashing, encoded from whole Arrow columns.

Rule: vectorized with numpy and pyarrow.compute, never one Python object per value. The protobuf wire format
is written directly (tag, varint, fixed32/64, length-delimited) from the field numbers and types of Feast's
Value.proto listed below (why, and the proof that the bytes are Feast's own: see `loom.features.feast`).
`Parts` builds per-row byte strings (plain, or as RESP bulk strings for the Lua script's arguments).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

INT64_MIN = -(2**63)  # Feast's NULL_TIMESTAMP_INT_VALUE: np.datetime64("NaT").astype(int)
U8 = np.uint8
Matrix = np.ndarray[Any, np.dtype[np.uint8]]
Ints = np.ndarray[Any, np.dtype[np.int64]]


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


def little_endian(values: np.ndarray[Any, Any], dtype: str) -> Matrix:
    raw = np.ascontiguousarray(values, dtype=dtype)
    return raw.view(U8).reshape(len(raw), raw.dtype.itemsize)


def _valid(values: pa.Array) -> np.ndarray[Any, np.dtype[np.bool_]]:
    if values.null_count == 0:
        return np.ones(len(values), dtype=bool)
    return np.asarray(pc.is_valid(values).to_numpy(zero_copy_only=False), dtype=bool)


def as_numbers(values: pa.Array, dtype: str) -> np.ndarray[Any, Any]:
    filled = pc.fill_null(values, 0) if values.null_count else values
    return np.asarray(filled.cast(pa.from_numpy_dtype(np.dtype(dtype))).to_numpy(zero_copy_only=False))


def binary_column(values: pa.Array) -> tuple[pa.LargeBinaryArray, Ints]:
    """Strings or bytes as large_binary, nulls as empty, and their byte lengths."""
    t = values.type
    if pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t) or pa.types.is_string_view(t):
        values = values.cast(pa.binary())
    out = values.cast(pa.large_binary())
    if out.null_count:
        out = pc.fill_null(out, pa.scalar(b"", pa.large_binary()))
    offsets = np.frombuffer(out.buffers()[1], dtype=np.int64)[out.offset : out.offset + len(out) + 1]
    return out, np.diff(offsets)


def as_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return values


def seconds_floor(values: pa.Array) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Epoch seconds (floor) of a timestamp column, nulls as 0."""
    unit = values.type.unit
    per = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    raw = as_numbers(values.cast(pa.timestamp(unit)).cast(pa.int64()), "int64")
    return np.asarray(np.floor_divide(raw, per), dtype=np.int64)


def micros_floor(values: pa.Array) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Epoch microseconds (floor, as Feast's datetimes) of a timestamp column, nulls as 0."""
    unit = values.type.unit
    raw = as_numbers(values.cast(pa.timestamp(unit)).cast(pa.int64()), "int64")
    if unit == "ns":
        return np.asarray(np.floor_divide(raw, 1000), dtype=np.int64)
    return np.asarray(raw * {"s": 1_000_000, "ms": 1_000, "us": 1}[unit], dtype=np.int64)


def add_value(parts: Parts, values: pa.Array | pa.ChunkedArray, field: ValueField, *, resp: bool) -> None:
    """Append each row as a serialized feast.types.Value with `field` set (what Feast's materialization
    writes: empty for a null and for a float NaN; INT64_MIN for a null timestamp), as a RESP bulk string
    when `resp`."""
    values = as_array(values)
    n = len(values)
    valid = _valid(values)
    tag = np.full((n, 1), field.tag, dtype=U8)
    if field is STRING or field is BYTES:
        data, length = binary_column(values)
        head, head_len = varints(length)
        size = np.where(valid, 1 + head_len + length, 0)
        if resp:
            parts.resp(size)
        parts.fixed(tag, valid.astype(np.int64)).fixed(head, np.where(valid, head_len, 0))
        parts.binary(data)
    else:
        if field is FLOAT or field is DOUBLE:
            dtype = "<f4" if field is FLOAT else "<f8"
            numbers = as_numbers(values, dtype)
            body, body_len = (
                little_endian(numbers, dtype),
                np.full(n, np.dtype(dtype).itemsize, dtype=np.int64),
            )
            valid = valid & ~np.isnan(numbers)
        elif field is BOOL:
            filled = pc.fill_null(values, False) if values.null_count else values
            body = np.asarray(filled.cast(pa.uint8()).to_numpy(zero_copy_only=False), dtype=U8)[:, None]
            body_len = np.ones(n, dtype=np.int64)
        elif field is UNIX_TIMESTAMP:
            body, body_len = varints(np.where(valid, seconds_floor(values), INT64_MIN))
            valid = np.ones(n, dtype=bool)
        else:  # INT32, INT64 (int32 negatives are sign-extended to 10 bytes, as protobuf does)
            body, body_len = varints(as_numbers(values, "int64"))
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


def flat(values: pa.LargeBinaryArray) -> tuple[Ints, memoryview]:
    """The offsets and the data buffer of a large_binary array: row i is data[off[i]:off[i+1]]."""
    buffers = values.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[values.offset : values.offset + len(values) + 1]
    return offsets, memoryview(buffers[2] if buffers[2] is not None else b"")
