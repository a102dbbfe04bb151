"""`loom features stream`: one consumer of a pipeline's Redis Stream (what each streaming pod runs).

Rule: the consumer reads `source.redisStream.stream` in the group `group` as consumer `--consumer`, else
env POD_NAME, else the hostname. The group is created if missing at ID 0 (`XGROUP CREATE ... 0 MKSTREAM`), so
entries written before the first consumer started are computed too (the sinks are idempotent, so reading
history costs time, never correctness). On start it finishes what a previous run under its name left:
journaled commits are rolled forward and its own pending entries (XREADGROUP ID 0) are processed first.
Then micro-batches: XREADGROUP `>` with COUNT streaming.batchSize, BLOCK up to streaming.maxLatency; a
micro-batch is batchSize entries or whatever came within maxLatency of its first entry. Each goes through
`stream_batch.run_batch` (transform, online write, offline staging, one atomic commit that acks). Every half
claim-idle time (env LOOM_STREAM_CLAIM_IDLE, default 30s) it XAUTOCLAIMs entries idle longer than that
(their consumer died, or is stuck) and processes them; an entry delivered more than
LOOM_STREAM_MAX_DELIVERIES (default 5) times is dead-lettered instead. Consumers idle for an hour with
nothing pending are removed from the group. SIGTERM or SIGINT: the current micro-batch is finished and
acked, the summary is returned, exit 0. Redis or the offline store unreachable: exit 69 with nothing more
acked; the entries in flight are delivered again (to this pod's next start, or claimed by another).
Delivery guarantees: see `stream_commit`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import Any

from loom.api.featurepipeline import FeaturePipeline
from loom.features.config import pipeline_name
from loom.features.errors import PipelineError, bad_input, one_line, unavailable
from loom.features.offline import OfflineStore
from loom.features.online import redacted
from loom.features.partition import open_writer
from loom.features.stream_batch import Sinks, StreamEntry, check_transform, run_batch
from loom.features.stream_commit import Committer, id_order
from loom.features.stream_report import Metrics, Totals
from loom.features.stream_settings import Settings, settings

log = logging.getLogger("loom.features.stream")

TICK_SECONDS = 1.0  # the longest BLOCK: how soon a signal or a periodic task is noticed
IDLE_CONSUMER_SECONDS = 3600
SWEEP_EVERY_SECONDS = 60
_TRANSIENT = ("OOM", "BUSY", "LOADING", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")


def serve(
    pipeline: FeaturePipeline,
    *,
    consumer: str | None = None,
    stop: threading.Event | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Consume until SIGTERM/SIGINT (or `stop` is set); the final summary. Raises PipelineError."""
    s = settings(pipeline, consumer, os.environ if env is None else env)
    stop = stop or threading.Event()
    _setup_logging()
    restore = _on_signals(stop)
    try:
        with _redis_errors(redacted(s.url)):
            c = Consumer(pipeline, s)
            try:
                return c.run(stop)
            finally:
                c.close()
    finally:
        restore()


class Consumer:
    """One consumer of the group: the read loop, the claims, the pending re-reads, the reports."""

    def __init__(self, pipeline: FeaturePipeline, s: Settings) -> None:
        import redis

        self.s = s
        self.pipeline = pipeline
        self.spec = pipeline.spec
        check_transform(pipeline)
        self.client: Any = redis.Redis.from_url(
            s.url, socket_connect_timeout=10, socket_timeout=TICK_SECONDS + 60, health_check_interval=30
        )
        self.client.ping()
        offline = self.spec.sinks.offline
        store = OfflineStore(offline, self.spec.source.timestampField) if offline else None
        committer = Committer(
            self.client,
            stream=s.stream,
            group=s.group,
            consumer=s.consumer,
            pipeline=pipeline_name(pipeline),
            store=store,
        )
        self.sinks = Sinks(store=store, writer=open_writer(pipeline), committer=committer)
        self.totals = Totals(consumer=s.consumer, stream=s.stream, group=s.group, started=time.monotonic())
        namespace = str(pipeline.metadata.get("namespace") or "")
        self.metrics = Metrics(
            self.totals, namespace=namespace, name=pipeline_name(pipeline), port=s.metrics_port
        )
        self.reread = True
        now = time.monotonic()
        self.next_claim = now + self.claim_every
        self.next_report = now + s.report_every
        self.next_sweep = now + SWEEP_EVERY_SECONDS

    @property
    def claim_every(self) -> float:
        return self.s.claim_idle / 2

    def run(self, stop: threading.Event) -> dict[str, Any]:
        s = self.s
        log.info(
            "consumer %s of group %s on stream %s: batches of %d entries or %.3fs, claims after %.3fs idle",
            s.consumer,
            s.group,
            s.stream,
            s.batch_size,
            s.max_latency,
            s.claim_idle,
        )
        self.ensure_group()
        rolled = self.sinks.committer.recover(older_than=0)
        if rolled:
            log.info("rolled forward %d micro-batches committed before a crash", rolled)
        if self.sinks.store is not None:
            with contextlib.suppress(OSError):
                self.sinks.store.recover()
        while not stop.is_set():
            if self.reread:
                self.own_pending(stop)
            now = time.monotonic()
            if now >= self.next_claim:
                self.claim(stop)
                self.next_claim = time.monotonic() + self.claim_every
            if now >= self.next_sweep:
                self.sweep_consumers()
                self.next_sweep = now + SWEEP_EVERY_SECONDS
            if now >= self.next_report:
                self.progress()
                self.next_report = now + s.report_every
            entries = self.read(stop)
            if entries:
                self.process(entries)
        log.info("consumer %s stopping: every micro-batch it read is committed", s.consumer)
        return self.summary()

    def ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(self.s.stream, self.s.group, id="0", mkstream=True)
            log.info("created consumer group %s on stream %s at ID 0", self.s.group, self.s.stream)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, stop: threading.Event) -> list[StreamEntry]:
        """One micro-batch of new entries: batchSize, or what came within maxLatency of the first."""
        entries: list[StreamEntry] = []
        first_at: float | None = None
        while len(entries) < self.s.batch_size and not stop.is_set():
            now = time.monotonic()
            if first_at is None:
                block = min(self.s.max_latency, TICK_SECONDS, max(0.001, self.next_claim - now))
            else:
                block = first_at + self.s.max_latency - now
                if block <= 0:
                    break
                block = min(block, TICK_SECONDS)
            got = self._xreadgroup(">", self.s.batch_size - len(entries), block=max(1, int(block * 1000)))
            if got:
                first_at = time.monotonic() if first_at is None else first_at
                entries += got
            elif first_at is None:
                break
        return entries

    def own_pending(self, stop: threading.Event) -> None:
        """Process this consumer's own pending entries (XREADGROUP ID 0), e.g. after a restart."""
        self.reread = False
        cursor = b"0"
        seen = 0
        while not stop.is_set():
            entries = self._xreadgroup(cursor, self.s.batch_size)
            if not entries:
                break
            seen += len(entries)
            self.process(entries, self.deliveries([e for e, _ in entries]))
            cursor = entries[-1][0]
        if seen:
            log.info("processed %d entries that were pending for %s", seen, self.s.consumer)

    def claim(self, stop: threading.Event) -> None:
        """XAUTOCLAIM entries idle longer than the claim idle time and process them."""
        rolled = self.sinks.committer.recover(older_than=self.s.claim_idle)
        if rolled:
            log.info("rolled forward %d micro-batches a consumer committed before it died", rolled)
        cursor: bytes | str = "0-0"
        idle_ms = max(1, int(self.s.claim_idle * 1000))
        while not stop.is_set():
            reply = self.client.xautoclaim(
                self.s.stream, self.s.group, self.s.consumer, idle_ms, cursor, count=self.s.batch_size
            )
            cursor, entries = reply[0], reply[1]
            if entries:
                log.info("claimed %d entries idle for over %.3fs", len(entries), self.s.claim_idle)
                self.totals.claimed += len(entries)
                self.process(entries, self.deliveries([e for e, _ in entries]))
            if cursor in (b"0-0", "0-0"):
                break

    def deliveries(self, ids: Sequence[bytes]) -> dict[bytes, int]:
        """How many times each of these (own, pending) entries was delivered."""
        if not ids:
            return {}
        lo, hi = min(ids, key=id_order), max(ids, key=id_order)
        count = len(ids) * 2 + 100
        rows = self.client.xpending_range(
            self.s.stream, self.s.group, lo, hi, count, consumername=self.s.consumer
        )
        return {r["message_id"]: int(r["times_delivered"]) for r in rows}

    def process(self, entries: list[StreamEntry], deliveries: Mapping[bytes, int] | None = None) -> None:
        started = time.monotonic()
        result = run_batch(
            entries,
            pipeline=self.pipeline,
            sinks=self.sinks,
            deliveries=deliveries,
            max_deliveries=self.s.max_deliveries,
        )
        took = time.monotonic() - started
        if took > self.s.claim_idle / 2:
            log.warning(
                "a micro-batch of %d entries took %.1fs, over half the claim idle time (%.1fs): other "
                "consumers may claim entries still in flight (harmless, but work done twice); raise "
                "LOOM_STREAM_CLAIM_IDLE or lower streaming.batchSize",
                len(entries),
                took,
                self.s.claim_idle,
            )
        if not result.committed:
            self.reread = True
            return
        t = self.totals
        t.online_written += result.online_written
        t.batches += 1
        t.rows_in += result.entries
        t.rows_out += result.rows_out
        t.offline_files += result.offline_files
        t.dead_letters += result.dead
        t.newest(result.newest_micros)
        self.metrics.batch(result.rows_out, result.dead)
        if result.dead:
            log.warning(
                "%d of %d entries went to %s (see their _loom_reason)",
                result.dead,
                len(entries),
                self.sinks.committer.dead,
            )

    def sweep_consumers(self) -> None:
        """Remove consumers of the group idle for an hour with nothing pending (pods long gone)."""
        for c in self.client.xinfo_consumers(self.s.stream, self.s.group):
            name = _text(c.get("name"))
            if (
                name != self.s.consumer
                and not c.get("pending")
                and int(c.get("idle") or 0) > (IDLE_CONSUMER_SECONDS * 1000)
            ):
                self.client.xgroup_delconsumer(self.s.stream, self.s.group, name)
                log.info("removed consumer %s from group %s: idle, nothing pending", name, self.s.group)

    def group_state(self) -> tuple[int | None, int | None]:
        """(lag, pending) of the group, from XINFO GROUPS."""
        for g in self.client.xinfo_groups(self.s.stream):
            if _text(g.get("name")) == self.s.group:
                lag = g.get("lag")
                return (None if lag is None else int(lag)), int(g.get("pending") or 0)
        return None, None

    def progress(self) -> None:
        lag, pending = self.group_state()
        self.metrics.lag(lag)
        line = {"progress": True, **self.totals.to_dict(lag=lag, pending=pending)}
        print(json.dumps(line, separators=(",", ":")), flush=True)

    def summary(self) -> dict[str, Any]:
        lag, pending = self.group_state()
        return self.totals.to_dict(lag=lag, pending=pending)

    def close(self) -> None:
        self.metrics.close()
        if self.sinks.writer is not None:
            self.sinks.writer.close()
        self.client.close()

    def _xreadgroup(self, cursor: bytes | str, count: int, block: int | None = None) -> list[StreamEntry]:
        import redis

        try:
            reply = self.client.xreadgroup(
                self.s.group, self.s.consumer, {self.s.stream: cursor}, count=count, block=block
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("group %s of stream %s is gone; creating it again", self.s.group, self.s.stream)
            self.ensure_group()
            return []
        if not reply:
            return []
        entries: list[StreamEntry] = reply[0][1]
        return entries


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _on_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT set `stop` (main thread only); returns what restores the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("%s: finishing the current micro-batch", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


@contextlib.contextmanager
def _redis_errors(url: str) -> Iterator[None]:
    """redis-py failures as the runtime's: unreachable or busy -> 69, refused (wrong type, auth) -> 65."""
    import redis

    try:
        yield
    except PipelineError:
        raise
    except redis.ResponseError as exc:
        message = f"redis {url}: {one_line(str(exc))}"
        if str(exc).startswith(_TRANSIENT):
            raise unavailable(message) from exc
        raise bad_input(message) from exc
    except redis.AuthenticationError as exc:
        raise bad_input(f"redis {url}: {one_line(str(exc))}") from exc
    except (redis.RedisError, OSError) as exc:
        raise unavailable(f"redis {url} is unreachable: {one_line(str(exc))}") from exc
