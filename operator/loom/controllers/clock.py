"""The controllers' clock: wall time for decisions (`now`, passed to the pure functions) and
monotonic seconds for intervals. Each controller holds one in a module attribute `clock`; tests
replace it with one they step."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass
class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        """Unix seconds (metric sources key rates on them)."""
        return time.time()
