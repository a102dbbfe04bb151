"""What a stream consumer reports: its running totals as JSON lines, and Prometheus metrics on a port.

Rule: the totals count committed micro-batches only (an entry is counted by the consumer that committed
it). A progress line (`"progress": true`) goes to stdout every `LOOM_STREAM_REPORT_EVERY` (default 10s);
the final summary, without `progress`, is the last stdout line and the termination message (the CLI prints
it). Keys: consumer, stream, group, rows_in (entries committed, dead letters included), rows_out (rows
written to the sinks), online_written (entities written to Redis), offline_files, dead_letters, claimed
(entries taken over from other consumers), batches, newest_event (RFC 3339 or null), freshness_seconds (now
minus newest_event), lag (entries of the stream not yet delivered to the group, from XINFO GROUPS; null when
Redis does not know), pending (delivered, not yet acked, whole group), seconds. With env LOOM_METRICS_PORT
the consumer serves `loom_feature_rows_written_total`, `loom_feature_freshness_seconds`,
`loom_feature_stream_dead_letters_total` and `loom_feature_stream_lag_entries`, labels namespace and name.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from loom.features.config import rfc3339
from loom.features.errors import unavailable
from loom.features.validate import from_micros


@dataclass
class Totals:
    consumer: str
    stream: str
    group: str
    started: float
    rows_in: int = 0
    rows_out: int = 0
    online_written: int = 0
    offline_files: int = 0
    dead_letters: int = 0
    claimed: int = 0
    batches: int = 0
    newest_micros: int | None = None

    def newest(self, micros: int | None) -> None:
        if micros is not None and (self.newest_micros is None or micros > self.newest_micros):
            self.newest_micros = micros

    def freshness(self, now: float | None = None) -> float | None:
        if self.newest_micros is None:
            return None
        return round((now if now is not None else time.time()) - self.newest_micros / 1e6, 3)

    def to_dict(self, *, lag: int | None = None, pending: int | None = None) -> dict[str, Any]:
        newest = rfc3339(from_micros(self.newest_micros)) if self.newest_micros is not None else None
        return {
            "consumer": self.consumer,
            "stream": self.stream,
            "group": self.group,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "online_written": self.online_written,
            "offline_files": self.offline_files,
            "dead_letters": self.dead_letters,
            "claimed": self.claimed,
            "batches": self.batches,
            "newest_event": newest,
            "freshness_seconds": self.freshness(),
            "lag": lag,
            "pending": pending,
            "seconds": round(time.monotonic() - self.started, 3),
            "mode": "streaming",
            "engine": "local",
        }


class Metrics:
    """The consumer's Prometheus metrics on `port` (its own registry); a no-op without a port."""

    def __init__(self, totals: Totals, *, namespace: str, name: str, port: int | None) -> None:
        self.totals = totals
        self._server: Any = None
        self._rows: Any = None
        self._dead: Any = None
        self._lag: Any = None
        if not port:
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        registry = CollectorRegistry()
        labels = ["namespace", "name"]
        values = {"namespace": namespace, "name": name}
        self._rows = Counter(
            "loom_feature_rows_written_total",
            "Rows this stream consumer wrote (committed micro-batches).",
            labels,
            registry=registry,
        ).labels(**values)
        freshness = Gauge(
            "loom_feature_freshness_seconds",
            "Now minus the newest event time this stream consumer has written.",
            labels,
            registry=registry,
        ).labels(**values)
        freshness.set_function(self._freshness)
        self._dead = Counter(
            "loom_feature_stream_dead_letters_total",
            "Stream entries this consumer moved to the dead-letter stream.",
            labels,
            registry=registry,
        ).labels(**values)
        self._lag = Gauge(
            "loom_feature_stream_lag_entries",
            "Entries of the stream not yet delivered to the consumer group (XINFO GROUPS lag).",
            labels,
            registry=registry,
        ).labels(**values)
        try:
            self._server, _ = start_http_server(port, registry=registry)
        except OSError as exc:
            raise unavailable(f"cannot serve metrics on port {port} ($LOOM_METRICS_PORT): {exc}") from exc

    def _freshness(self) -> float:
        value = self.totals.freshness()
        return math.nan if value is None else value

    def batch(self, rows: int, dead: int) -> None:
        if self._rows is not None:
            self._rows.inc(rows)
            self._dead.inc(dead)

    def lag(self, lag: int | None) -> None:
        if self._lag is not None:
            self._lag.set(math.nan if lag is None else lag)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
