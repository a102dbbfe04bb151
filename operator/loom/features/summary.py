"""The run summary: one JSON line, the last on stdout and the pod's termination message.

Rule: the summary is part of the runtime's interface (the controller parses it from the termination
message, which Kubernetes caps at 4096 bytes). Success: `rows_in, rows_out, online_written, offline_files,
watermark (= window end), newest_event (newest event time written or null), seconds, window{start,end},
engine, phases{compute, offline_commit, online} (seconds of each)`. Failure: `error` (one line),
`exit_code`, `window`. Times are RFC 3339 UTC. A partition's `PartialSummary` travels from executors
to the driver as JSON and the driver sums them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from loom.api.featurepipeline import Window
from loom.features.config import rfc3339
from loom.features.validate import from_micros

ENV_TERMINATION_LOG = "LOOM_TERMINATION_LOG"
TERMINATION_LOG_BYTES = 4096


@dataclass
class PartialSummary:
    """What one partition did: rows in and out, entities written online, the files it staged."""

    part: str
    rows_in: int = 0
    rows_out: int = 0
    online_written: int = 0
    newest_micros: int | None = None
    staged: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PartialSummary:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Summary:
    window: Window
    engine: str
    rows_in: int = 0
    rows_out: int = 0
    online_written: int = 0
    offline_files: int = 0
    newest_event: datetime | None = None
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        partials: Iterable[PartialSummary],
        *,
        window: Window,
        engine: str,
        offline_files: int,
        seconds: float,
        phases: dict[str, float] | None = None,
    ) -> Summary:
        parts = list(partials)
        newest = [p.newest_micros for p in parts if p.newest_micros is not None]
        return cls(
            window=window,
            engine=engine,
            rows_in=sum(p.rows_in for p in parts),
            rows_out=sum(p.rows_out for p in parts),
            online_written=sum(p.online_written for p in parts),
            offline_files=offline_files,
            newest_event=from_micros(max(newest)) if newest else None,
            seconds=seconds,
            phases=dict(phases or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "online_written": self.online_written,
            "offline_files": self.offline_files,
            "watermark": rfc3339(self.window.end),
            "newest_event": rfc3339(self.newest_event) if self.newest_event else None,
            "seconds": round(self.seconds, 3),
            "window": window_dict(self.window),
            "engine": self.engine,
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
        }


def window_dict(window: Window | None) -> dict[str, str] | None:
    if window is None:
        return None
    return {"start": rfc3339(window.start), "end": rfc3339(window.end)}


def failure(message: str, exit_code: int, window: Window | None) -> dict[str, Any]:
    return {"error": message, "exit_code": exit_code, "window": window_dict(window)}


def line(obj: dict[str, Any]) -> str:
    """One JSON line under the termination message's cap (a long error is cut, the JSON stays valid)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) <= TERMINATION_LOG_BYTES or "error" not in obj:
        return text
    error = obj["error"].encode()
    keep = max(0, len(error) - (len(text.encode()) - TERMINATION_LOG_BYTES + 16))
    cut = dict(obj, error=error[:keep].decode(errors="ignore") + "...")
    return json.dumps(cut, separators=(",", ":"), ensure_ascii=False)


def report(obj: dict[str, Any]) -> str:
    """Print the summary as the last stdout line and write it to $LOOM_TERMINATION_LOG when set."""
    text = line(obj)
    print(text, flush=True)
    path = os.environ.get(ENV_TERMINATION_LOG)
    if path:
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as exc:
            print(f"cannot write the termination log {path}: {exc}", file=sys.stderr)
    return text
