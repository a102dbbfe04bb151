"""The commit point of one micro-batch of a stream consumer: one Lua script that acks, dead-letters, journals.

Protocol of a micro-batch (offline: exactly once per entry; online: at least once, harmless by event time):
1. transform and validate; the offline files are staged under `<path>/.loom-staging/<run-id>/` (invisible);
2. the online write (compare-and-write by event time, so writing a row again changes nothing);
3. COMMIT, atomically in Redis (this module's script): iff every entry of the batch is still pending for
   this consumer (none claimed away by another's XAUTOCLAIM, none acked by another), XADD the dead letters to
   `<stream>:dead`, HSET the journal record `<batch>` -> the file moves in `<stream>:loom-commits:<group>`,
   and XACK every entry. Otherwise nothing happens, the staging is removed and the entries are left to
   whoever holds them now: an entry's rows reach the offline store from the one batch that committed it;
4. roll forward: the staged files are renamed to their final names, then the record is deleted. A consumer
   that dies between 3 and 4 leaves the record; any consumer rolls forward records older than the claim idle
   time (and all of them at its start), which is idempotent.

Final names cannot collide: `<partition dirs>/s<first entry id>-<batch token>-<part>.parquet` (an entry is
committed once, and the token is random). They do not match the batch runs' `w<start>-<end>-<part>` names,
so a batch run's commit on the same dataset leaves them alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow.fs as pafs

from loom.features.errors import bad_input, one_line, unavailable
from loom.features.offline import STAGING, OfflineStore

log = logging.getLogger("loom.features.stream")

DEAD_MAXLEN = 100_000  # the dead-letter stream keeps about the newest 100k entries (XADD MAXLEN ~)
ACK_CHUNK = 1000  # ids per XACK inside the script (Lua's unpack has a stack limit)

# KEYS: stream, journal hash, dead-letter stream.
# ARGV: group, consumer, batch, journal record ('' for none), dead maxlen, n ids, ids...,
#       n dead letters, then per dead letter: n field/value items, the items.
# Returns {1, n acked} when committed; {0, id} naming the first entry this consumer no longer holds.
COMMIT_SCRIPT = """
local stream, journal, dead = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, batch, record, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local n = tonumber(ARGV[6])
local first, last = 7, 6 + n
for i = first, last do
  if #redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1, consumer) == 0 then
    return {0, ARGV[i]}
  end
end
local p = last + 1
local nd = tonumber(ARGV[p])
p = p + 1
for _ = 1, nd do
  local nf = tonumber(ARGV[p])
  redis.call('XADD', dead, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, p + 1, p + nf))
  p = p + 1 + nf
end
if record ~= '' then redis.call('HSET', journal, batch, record) end
local acked = 0
for i = first, last, ACK_CHUNK do
  acked = acked + redis.call('XACK', stream, group, unpack(ARGV, i, math.min(i + ACK_CHUNK - 1, last)))
end
return {1, acked}
""".replace("ACK_CHUNK", str(ACK_CHUNK))


@dataclass(frozen=True)
class DeadLetter:
    """An entry refused with a reason; it goes to `<stream>:dead` with its fields as they were."""

    id: bytes
    reason: str
    fields: Mapping[bytes, bytes]


@dataclass(frozen=True)
class Batch:
    """What one micro-batch commits: its id, the entries to ack, its dead letters, its staged files."""

    token: str
    run_id: str
    ids: Sequence[bytes]
    dead: Sequence[DeadLetter]
    moves: Sequence[tuple[str, str]]  # (staged, final), relative to the dataset root


def journal_key(stream: str, group: str) -> str:
    return f"{stream}:loom-commits:{group}"


def dead_key(stream: str) -> str:
    return f"{stream}:dead"


def id_order(entry_id: bytes) -> tuple[int, int]:
    """A stream entry ID (`<ms>-<seq>`) as the pair Redis orders entries by."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def final_name(staged: str, first_id: bytes, token: str, part: int) -> str:
    """`<dirs>/s<first entry id>-<token>-<part>.parquet` for a staged `<part dir>/<dirs>/<file>` path."""
    parts = PurePosixPath(staged).parts
    name = f"s{first_id.decode()}-{token}-{part:05d}.parquet"
    return str(PurePosixPath(*parts[1:-1], name)) if len(parts) > 2 else name


class Committer:
    """Commits micro-batches of one consumer and rolls forward the journal of its group."""

    def __init__(
        self,
        client: Any,
        *,
        stream: str,
        group: str,
        consumer: str,
        pipeline: str,
        store: OfflineStore | None,
    ) -> None:
        self.client = client
        self.stream, self.group, self.consumer, self.pipeline = stream, group, consumer, pipeline
        self.store = store
        self.journal = journal_key(stream, group)
        self.dead = dead_key(stream)
        self._script = client.register_script(COMMIT_SCRIPT)

    def commit(self, batch: Batch) -> bool:
        """The commit point; False (nothing done) when another consumer holds an entry of the batch now."""
        record = ""
        if batch.moves:
            record = json.dumps(
                {"run": batch.run_id, "moves": [list(m) for m in batch.moves], "at": time.time()},
                separators=(",", ":"),
            )
        args: list[Any] = [self.group, self.consumer, batch.token, record, DEAD_MAXLEN, len(batch.ids)]
        args += batch.ids
        args.append(len(batch.dead))
        for letter in batch.dead:
            items = self._dead_items(letter)
            args.append(len(items))
            args += items
        result = self._script(keys=[self.stream, self.journal, self.dead], args=args)
        if int(result[0]) != 1:
            log.warning(
                "micro-batch %s not committed: entry %s is no longer pending for %s (another consumer "
                "claimed it); its %d entries are left to their holder",
                batch.token,
                _text(result[1]),
                self.consumer,
                len(batch.ids),
            )
            return False
        return True

    def _dead_items(self, letter: DeadLetter) -> list[bytes | str]:
        items: list[bytes | str] = [
            "_loom_id",
            letter.id,
            "_loom_reason",
            letter.reason,
            "_loom_pipeline",
            self.pipeline,
            "_loom_group",
            self.group,
            "_loom_consumer",
            self.consumer,
        ]
        for name, value in letter.fields.items():
            items += [name, value]
        return items

    def roll_forward(self, token: str, record: Mapping[str, Any]) -> int:
        """Move a committed batch's staged files to their final names, drop its staging and its record."""
        moved = 0
        if self.store is not None:
            fs, root = self.store.fs, self.store.root
            with self._io():
                for src, dst in record.get("moves", []):
                    moved += _move(fs, f"{root}/{src}", f"{root}/{dst}")
                run = str(record.get("run") or "")
                if run and "/" not in run:
                    self.store.abort(run)
        self.client.hdel(self.journal, token)
        return moved

    def recover(self, older_than: float) -> int:
        """Roll forward every journal record older than `older_than` seconds; the records finished."""
        done = 0
        now = time.time()
        for raw_token, raw in self.client.hgetall(self.journal).items():
            token = _text(raw_token)
            try:
                record = json.loads(raw)
            except ValueError:
                log.error("journal %s: record %s is not JSON; dropped", self.journal, token)
                self.client.hdel(self.journal, token)
                continue
            if now - float(record.get("at") or 0) < older_than:
                continue
            if self.store is None:
                raise bad_input(
                    f"journal {self.journal} holds committed offline files but this pipeline has no "
                    "offline sink: it changed while batches were in flight; restore sinks.offline or "
                    f"delete the key {self.journal}"
                )
            log.info("rolling forward micro-batch %s committed by an earlier consumer", token)
            self.roll_forward(token, record)
            done += 1
        return done

    @contextlib.contextmanager
    def _io(self) -> Iterator[None]:
        assert self.store is not None
        try:
            yield
        except PermissionError as exc:
            raise bad_input(f"offline store {self.store.url}: {one_line(str(exc))}") from exc
        except OSError as exc:
            raise unavailable(f"offline store {self.store.url}: {one_line(str(exc))}") from exc


def _move(fs: pafs.FileSystem, src: str, dst: str) -> int:
    """Rename src to dst (1), or 0 when another consumer already did; a lost staged file is logged."""
    if fs.get_file_info(src).type == pafs.FileType.File:
        fs.create_dir(str(PurePosixPath(dst).parent), recursive=True)
        try:
            fs.move(src, dst)
            return 1
        except OSError:
            if fs.get_file_info(dst).type != pafs.FileType.File:
                raise
            return 0
    if fs.get_file_info(dst).type != pafs.FileType.File:
        log.error("committed file %s is missing from the staging and the dataset (%s)", src, STAGING)
    return 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
