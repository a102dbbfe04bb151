"""The online sink: Loom's Redis layout, written by one Lua compare-and-write per chunk of entities.

Layout ("loom"): one hash per entity; key = keyPrefix + the entity key values as text joined by `:` in
entityKeys order; one field per output column other than the keys and the timestamp, as text (integers
decimal, floats shortest round-trip with float32 as float32, booleans true/false, timestamps RFC 3339 UTC,
dates YYYY-MM-DD, strings and bytes as is); a null removes the field (HDEL), so the hash is the row. Field
`_ts:<pipeline>` holds the event time in epoch microseconds. A row is written iff its time is >= the stored
one (equal overwrites, so a corrected re-run lands; older never does), atomically per entity, and each key
written gets `ttlSeconds` (PEXPIRE).

Rule: commands are encoded from whole Arrow columns with pyarrow.compute into RESP bytes (no Python object
per value); one EVALSHA carries a chunk of entities and the chunks are pipelined on one connection, with a
bounded number in flight. redis-py (hiredis) owns the connection, the handshake and the replies.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loom.api.featurepipeline import OnlineFormat, RedisSink
from loom.features.errors import PipelineError, bad_input, one_line, unavailable

CHUNK_ENTITIES = 512
MAX_IN_FLIGHT = 128
ENCODE_ROWS = 64 * 1024
TS_PREFIX = "_ts:"

# KEYS: the chunk's entity keys. ARGV: ts field, ttl ms (0: none), then per entity:
# ts (epoch micros), nset, ndel, nset field/value pairs, ndel fields.
SCRIPT = """
local tsf, ttl = ARGV[1], tonumber(ARGV[2])
local p, written = 3, 0
for i = 1, #KEYS do
  local key, ts = KEYS[i], ARGV[p]
  local ns, nd = tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2])
  local s = p + 3
  local d = s + 2 * ns
  p = d + nd
  local old = redis.call('HGET', key, tsf)
  old = old and tonumber(old)
  if not old or old <= tonumber(ts) then
    redis.call('HSET', key, tsf, ts, unpack(ARGV, s, d - 1))
    if nd > 0 then redis.call('HDEL', key, unpack(ARGV, d, p - 1)) end
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    written = written + 1
  end
end
return written
"""

_CRLF = pa.scalar(b"\r\n", pa.large_binary())
_DOLLAR = pa.scalar(b"$", pa.large_binary())
_EMPTY = pa.scalar(b"", pa.large_binary())
_TRANSIENT = ("OOM", "BUSY", "LOADING", "MASTERDOWN", "READONLY", "NOSCRIPT", "TRYAGAIN", "CLUSTERDOWN")


@dataclass(frozen=True)
class Layout:
    """Where a row goes: key prefix, key columns, timestamp column, `_ts:<pipeline>` field, ttl."""

    prefix: str
    keys: tuple[str, ...]
    timestamp: str
    pipeline: str
    ttl_ms: int = 0

    @property
    def ts_field(self) -> str:
        return TS_PREFIX + self.pipeline


@dataclass(frozen=True)
class Encoded:
    """A batch as RESP pieces: per row the key's bulk string and the row's ARGV bulk strings."""

    keys: pa.LargeBinaryArray
    args: pa.LargeBinaryArray
    argc_cumsum: np.ndarray[Any, np.dtype[np.int64]]

    def __len__(self) -> int:
        return len(self.keys)


def check_online(sink: RedisSink, schema: pa.Schema, keys: Sequence[str], timestamp: str) -> None:
    """The output can be written in the sink's format (bad input naming the column otherwise)."""
    if sink.format == OnlineFormat.FEAST:
        from loom.features.feast import check_schema

        check_schema(sink, schema, keys, timestamp)
    else:
        check_encodable(schema, [*keys, timestamp])


def check_encodable(schema: pa.Schema, skip: Sequence[str]) -> None:
    """Every feature column has a text form (bad input naming the column otherwise)."""
    for f in schema:
        if f.name not in skip and not _encodable(f.type):
            raise bad_input(
                f"column {f.name} is {f.type}, which has no text form in Redis: cast it in the transform "
                "(e.g. to_json(x) or CAST(x AS VARCHAR))"
            )


def _encodable(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _encodable(t.value_type)
    return bool(
        pa.types.is_null(t)
        or pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_temporal(t)
    )


def text(values: pa.Array) -> pa.Array:
    """The column's values as text (large_binary), nulls kept."""
    t = values.type
    if pa.types.is_dictionary(t):
        return text(values.dictionary_decode())
    if pa.types.is_null(t):
        return pa.nulls(len(values), pa.large_binary())
    if pa.types.is_timestamp(t):
        utc = values.cast(pa.timestamp(t.unit, tz="UTC")) if t.tz else values
        out = pc.strftime(utc, format="%Y-%m-%dT%H:%M:%SZ")
        out = pc.replace_substring_regex(out, pattern=r"\.0+Z$", replacement="Z")
    elif pa.types.is_duration(t):
        out = values.cast(pa.int64()).cast(pa.string())
    elif pa.types.is_float16(t):
        out = values.cast(pa.float32()).cast(pa.string())
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_string(t):
        out = values
    elif pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t) or pa.types.is_string_view(t):
        out = values.cast(pa.binary())
    else:
        out = values.cast(pa.string())
    return out.cast(pa.large_binary())


def bulk(values: pa.Array) -> pa.Array:
    """RESP bulk strings `$<len>\\r\\n<bytes>\\r\\n` of large_binary values (null stays null)."""
    length = pc.binary_length(values).cast(pa.string()).cast(pa.large_binary())
    return pc.binary_join_element_wise(_DOLLAR, length, _CRLF, values, _CRLF, _EMPTY)


def _bulk_bytes(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def encode(batch: pa.RecordBatch, layout: Layout) -> Encoded:
    """RESP pieces of every row of `batch` (validated: no null keys or timestamps)."""
    key_text = [text(batch[k]) for k in layout.keys]
    sep = pa.scalar(b":", pa.large_binary())
    joined = key_text[0] if len(key_text) == 1 else pc.binary_join_element_wise(*key_text, sep)
    prefix = pa.scalar(layout.prefix.encode(), pa.large_binary())
    keys = bulk(pc.binary_join_element_wise(prefix, joined, _EMPTY))

    ts = batch[layout.timestamp]
    micros = pc.cast(ts, pa.timestamp("us", tz=ts.type.tz), safe=False).cast(pa.int64())
    features = [n for n in batch.schema.names if n not in layout.keys and n != layout.timestamp]
    sets: list[pa.Array] = []
    dels: list[pa.Array] = []
    nset = pa.array(np.zeros(len(batch), dtype=np.int64))
    for name in features:
        value = text(batch[name])
        field_bulk = pa.scalar(_bulk_bytes(name), pa.large_binary())
        valid = pc.is_valid(value)
        sets.append(pc.fill_null(pc.binary_join_element_wise(field_bulk, bulk(value), _EMPTY), _EMPTY))
        dels.append(pc.if_else(valid, _EMPTY, field_bulk))
        nset = pc.add(nset, valid.cast(pa.int64()))
    ndel = pc.subtract(pa.scalar(len(features), pa.int64()), nset)
    counts = [bulk(micros.cast(pa.string()).cast(pa.large_binary()))]
    counts += [bulk(n.cast(pa.string()).cast(pa.large_binary())) for n in (nset, ndel)]
    args = pc.binary_join_element_wise(*counts, *sets, *dels, _EMPTY)
    argc = nset.to_numpy() + (3 + len(features))
    return Encoded(keys=keys, args=args, argc_cumsum=np.concatenate([[0], np.cumsum(argc)]))


def commands(encoded: Encoded, sha: str, layout: Layout, chunk: int = CHUNK_ENTITIES) -> Iterator[list[Any]]:
    """One EVALSHA per chunk of entities, as buffers to send: header, keys, fixed args, row args."""
    key_off, key_data = _flat(encoded.keys)
    arg_off, arg_data = _flat(encoded.args)
    fixed = _bulk_bytes(layout.ts_field) + _bulk_bytes(str(layout.ttl_ms))
    for a in range(0, len(encoded), chunk):
        b = min(a + chunk, len(encoded))
        n = b - a
        nargs = 3 + n + 2 + int(encoded.argc_cumsum[b] - encoded.argc_cumsum[a])
        header = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n%s" % (nargs, sha.encode(), _bulk_bytes(str(n)))
        yield [
            header,
            key_data[key_off[a] : key_off[b]],
            fixed,
            arg_data[arg_off[a] : arg_off[b]],
        ]


def _flat(values: pa.LargeBinaryArray) -> tuple[np.ndarray[Any, np.dtype[np.int64]], memoryview]:
    """The offsets and the data buffer of a large_binary array: row i is data[off[i]:off[i+1]]."""
    buffers = values.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[values.offset : values.offset + len(values) + 1]
    return offsets, memoryview(buffers[2] if buffers[2] is not None else b"")


def _bounded(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Non-empty batches of at most ENCODE_ROWS rows (the encoding's memory is per batch)."""
    for batch in batches:
        for start in range(0, batch.num_rows, ENCODE_ROWS):
            yield batch.slice(start, ENCODE_ROWS)


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RedisWriter:
    """Writes rows of one pipeline's output into Redis in Loom's layout; `write` returns entities written.

    Built for a `format: feast` sink, it is a `loom.features.feast.FeastWriter` (Feast's layout)."""

    format: ClassVar[OnlineFormat] = OnlineFormat.LOOM
    script: ClassVar[str] = SCRIPT

    def __new__(cls, sink: RedisSink, *args: Any, **kwargs: Any) -> RedisWriter:
        if cls is RedisWriter and sink.format == OnlineFormat.FEAST:
            from loom.features.feast import FeastWriter

            return super().__new__(FeastWriter)
        return super().__new__(cls)

    def __init__(self, sink: RedisSink, pipeline: str, keys: Sequence[str], timestamp: str) -> None:
        import redis

        if sink.format != self.format:
            raise bad_input(f"redis.format {sink.format} is not written by this runtime yet (only loom)")
        self.url = redacted(sink.url)
        self.layout = Layout(
            prefix=sink.keyPrefix,
            keys=tuple(keys),
            timestamp=timestamp,
            pipeline=pipeline,
            ttl_ms=(sink.ttlSeconds or 0) * 1000,
        )
        self._client = redis.Redis.from_url(sink.url, socket_connect_timeout=10, socket_timeout=120)
        self._conn: Any = None
        self._sha = ""
        self._in_flight: collections.deque[int] = collections.deque()

    def connect(self) -> None:
        """Reach the server and load the script (fails fast, before any data is read)."""
        if self._conn is not None:
            return
        with self._errors():
            self._sha = str(self._client.script_load(self.script))
            self._conn = self._client.connection_pool.get_connection()

    def write(self, data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch]) -> int:
        """Write every row; rows older than the stored entity are skipped. Returns rows written.

        The next batch is encoded on a helper thread (pyarrow.compute releases the GIL) while this one's
        chunks are sent, so Redis always has up to MAX_IN_FLIGHT chunks queued."""
        self.connect()
        if isinstance(data, pa.Table):
            batches: Iterable[pa.RecordBatch] = data.to_batches(max_chunksize=ENCODE_ROWS)
        elif isinstance(data, pa.RecordBatch):
            batches = [data]
        else:
            batches = data
        written = 0
        with self._errors(), ThreadPoolExecutor(1, thread_name_prefix="loom-encode") as pool:
            pending: Future[Iterator[list[Any]]] | None = None
            for batch in _bounded(batches):
                encoding = pool.submit(self._commands, batch)
                if pending is not None:
                    written += self._send(pending.result())
                pending = encoding
            if pending is not None:
                written += self._send(pending.result())
            while self._in_flight:
                written += self._read_one()
        return written

    def _send(self, commands: Iterator[list[Any]]) -> int:
        written = 0
        for command in commands:
            self._conn.send_packed_command(command, check_health=False)
            self._in_flight.append(1)
            if len(self._in_flight) > MAX_IN_FLIGHT:
                written += self._read_one()
        return written

    def _commands(self, batch: pa.RecordBatch) -> Iterator[list[Any]]:
        return commands(encode(batch, self.layout), self._sha, self.layout)

    def close(self) -> None:
        if self._conn is not None:
            if self._in_flight:
                self._conn.disconnect()
            self._client.connection_pool.release(self._conn)
            self._conn = None
        self._client.close()

    def __enter__(self) -> RedisWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_one(self) -> int:
        self._in_flight.popleft()
        return int(self._conn.read_response())

    def _errors(self) -> _RedisErrors:
        return _RedisErrors(self.url)


class _RedisErrors:
    """Maps redis-py failures to the runtime's: unreachable -> 69; a refused write -> 65 or 69."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        import redis

        if exc is None or isinstance(exc, PipelineError):
            return
        if isinstance(exc, redis.ResponseError):
            message = f"redis {self.url} refused the write: {one_line(str(exc))}"
            if str(exc).startswith(_TRANSIENT):
                raise unavailable(message) from exc
            raise bad_input(message) from exc
        if isinstance(exc, redis.AuthenticationError):
            raise bad_input(f"redis {self.url}: {one_line(str(exc))}") from exc
        if isinstance(exc, redis.RedisError | OSError):
            raise unavailable(f"redis {self.url} is unreachable: {one_line(str(exc))}") from exc
