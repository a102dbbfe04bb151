"""One micro-batch of stream entries through the batch runtime's core, up to its commit point and beyond.

Rule: entries -> rows (`stream_decode`) -> `partition.compute_partition`, the very core `loom features run`
runs on a window's partition (the transform over the table `source`, the output checks, the offline
staging) -> `partition.write_online` (the same Redis writer) -> the commit (`stream_commit`: ack, dead
letters, journal, atomically) -> the staged files renamed in. A stream has no window: the micro-batch runs
as the window [1900-01-01, 9999-12-31). An entry that cannot be decoded is dead-lettered with the
reason. When the core refuses a micro-batch as bad input (a value the SQL cannot CAST, a null entity key in
the output), the batch is split in halves until the entries that fail on their own are found; they are
dead-lettered with the core's message and the rest is written. When the SQL fails on no rows at all (it
does not bind to the entries' fields), every entry of the batch fails the same way and is dead-lettered at
once. Only bad input is split: a sink that cannot be reached (69) or an internal error (70) stops the
consumer with nothing of the batch acked, so its entries are delivered again.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from loom.api.featurepipeline import FeaturePipeline, Window
from loom.features import transform
from loom.features.errors import BadInputError, bad_input
from loom.features.offline import OfflineStore
from loom.features.online import RedisWriter
from loom.features.partition import ComputedPartition, compute_partition, write_online
from loom.features.stream_commit import Batch, Committer, DeadLetter, final_name, id_order
from loom.features.stream_decode import decode

# A stream has no window: a micro-batch runs as the window of every event time it may carry.
STREAM_WINDOW = Window(start=datetime(1900, 1, 1, tzinfo=UTC), end=datetime(9999, 12, 31, tzinfo=UTC))

StreamEntry = tuple[bytes, Mapping[bytes, bytes]]


def check_transform(pipeline: FeaturePipeline) -> None:
    """What can be checked before any entry is read: the SQL parses and is one query; the Python
    function imports. Bad input (exit 65) otherwise, so a broken spec never dead-letters the stream."""
    spec = pipeline.spec.transform
    if spec.python is not None:
        transform.load_python(spec.python)
        return
    if spec.sql is None:
        raise bad_input("transform must set exactly one of sql, python")
    import duckdb

    con = transform.connect()
    try:
        statements = con.extract_statements(spec.sql)
    except duckdb.Error as exc:
        raise transform.sql_error(exc) from exc
    finally:
        con.close()
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise bad_input("transform SQL must be one query (SELECT ...) over the table `source`")


@dataclass
class Computed:
    """The validated, staged parts of a micro-batch's rows, and the reason for each row refused."""

    parts: list[ComputedPartition] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)

    @property
    def rows_out(self) -> int:
        return sum(p.partial.rows_out for p in self.parts)

    @property
    def newest_micros(self) -> int | None:
        newest = [p.partial.newest_micros for p in self.parts if p.partial.newest_micros is not None]
        return max(newest) if newest else None

    @property
    def staged(self) -> list[str]:
        return [s for p in self.parts for s in p.partial.staged]

    def discard(self) -> None:
        for p in self.parts:
            p.discard()


def compute_rows(pipeline: FeaturePipeline, table: pa.Table, run_id: str) -> Computed:
    """The core on `table`; on bad input split in halves until the rows that fail alone are found."""
    out = Computed()
    sql = pipeline.spec.transform.sql is not None

    def attempt(lo: int, hi: int) -> None:
        part = f"p{lo:07d}-{hi:07d}"  # each range is tried once
        try:
            out.parts.append(
                compute_partition(pipeline, STREAM_WINDOW, table.slice(lo, hi - lo), run_id=run_id, part=part)
            )
        except BadInputError as exc:
            if hi - lo == 1:
                out.refused[lo] = exc.message
            elif hi - lo == table.num_rows and sql and _fails_empty(pipeline, table, run_id):
                out.refused.update(dict.fromkeys(range(lo, hi), exc.message))
            else:
                mid = (lo + hi) // 2
                attempt(lo, mid)
                attempt(mid, hi)

    try:
        if table.num_rows:
            attempt(0, table.num_rows)
    except BaseException:
        out.discard()
        raise
    return out


def _fails_empty(pipeline: FeaturePipeline, table: pa.Table, run_id: str) -> bool:
    """Whether the core refuses no rows of these columns too (then every slice of them fails alike)."""
    try:
        compute_partition(pipeline, STREAM_WINDOW, table.slice(0, 0), run_id=run_id, part="empty").discard()
    except BadInputError:
        return True
    return False


@dataclass
class Sinks:
    """Where a micro-batch goes, opened once per consumer."""

    store: OfflineStore | None
    writer: RedisWriter | None
    committer: Committer


@dataclass
class BatchResult:
    committed: bool
    entries: int = 0
    rows_out: int = 0
    online_written: int = 0
    offline_files: int = 0
    dead: int = 0
    newest_micros: int | None = None


def run_batch(
    entries: Sequence[StreamEntry],
    *,
    pipeline: FeaturePipeline,
    sinks: Sinks,
    deliveries: Mapping[bytes, int] | None = None,
    max_deliveries: int = 0,
) -> BatchResult:
    """Process one micro-batch; `committed` False when another consumer took an entry of it meanwhile
    (then nothing of it reaches the offline store from here, and its entries are left to their holder).

    `deliveries`: times each entry was delivered (for re-read or claimed entries); one delivered more than
    `max_deliveries` times is dead-lettered unread (consumers died on it)."""
    ids = [entry_id for entry_id, _ in entries]
    dead: list[DeadLetter] = []
    live: list[StreamEntry] = []
    for entry_id, fields in entries:
        if not fields:
            continue  # trimmed from the stream while pending: nothing to read, only to ack
        n = (deliveries or {}).get(entry_id, 1)
        if max_deliveries and n > max_deliveries:
            reason = f"delivered {n} times without an ack (consumers died or failed on it each time)"
            dead.append(DeadLetter(entry_id, reason, fields))
        else:
            live.append((entry_id, fields))
    source = pipeline.spec.source
    decoded = decode([fields for _, fields in live], source.entityKeys, source.timestampField)
    for pos, reason in sorted(decoded.refused.items()):
        dead.append(DeadLetter(live[pos][0], reason, live[pos][1]))

    token = uuid.uuid4().hex[:12]
    run_id = f"stream-{token}"
    store = sinks.store
    moves: list[tuple[str, str]] = []
    try:
        computed = compute_rows(pipeline, decoded.table, run_id)
        try:
            for row, reason in sorted(computed.refused.items()):
                entry_id, fields = live[int(decoded.index[row])]
                dead.append(DeadLetter(entry_id, reason, fields))
            written = write_online(pipeline, computed.parts, writer=sinks.writer) if sinks.writer else 0
        finally:
            computed.discard()
        if store is not None and computed.staged:
            first = min(ids, key=id_order)
            prefix = f"{store.staging(run_id)}/"[len(store.root) + 1 :]
            moves = [(prefix + s, final_name(s, first, token, i)) for i, s in enumerate(computed.staged)]
    except BaseException:
        if store is not None:
            store.abort(run_id)
        raise
    batch = Batch(token=token, run_id=run_id, ids=ids, dead=dead, moves=moves)
    if not sinks.committer.commit(batch):  # the commit point
        if store is not None:
            with contextlib.suppress(OSError):
                store.abort(run_id)
        return BatchResult(committed=False, online_written=written)
    files = sinks.committer.roll_forward(token, {"run": run_id, "moves": moves}) if moves else 0
    if store is not None and not moves:
        store.abort(run_id)
    return BatchResult(
        committed=True,
        entries=len(ids),
        rows_out=computed.rows_out,
        online_written=written,
        offline_files=files,
        dead=len(dead),
        newest_micros=computed.newest_micros,
    )
