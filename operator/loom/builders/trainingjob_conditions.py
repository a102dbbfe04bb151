"""The conditions of a TrainingJob status being decided, and the events their changes record.

Pure: no I/O; `now` is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from loom.api.common import Condition, ConditionStatus
from loom.api.trainingjob import TrainingJobStatus
from loom.builders.trainingjob_view import FAILED, RESTARTING


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


class Conditions:
    """Reads and sets the conditions of `status`: a change to True (or of reason while True) is
    recorded in `events`, unless quiet; every change is stamped with `now` and the generation."""

    def __init__(
        self, status: TrainingJobStatus, events: list[Event], now: datetime, generation: int | None
    ) -> None:
        self.status, self.events, self.now, self.generation = status, events, now, generation

    def get(self, type_: str) -> Condition | None:
        return next((c for c in self.status.conditions if c.type == type_), None)

    def has(self, type_: str) -> bool:
        return self.get(type_) is not None

    def is_true(self, type_: str) -> bool:
        cond = self.get(type_)
        return cond is not None and cond.status == ConditionStatus.TRUE

    def set(self, type_: str, value: bool, reason: str, message: str, *, quiet: bool = False) -> None:
        status = ConditionStatus.TRUE if value else ConditionStatus.FALSE
        cond = self.get(type_)
        changed = cond is None or cond.status != status or (value and cond.reason != reason)
        if cond is None:
            cond = Condition(type=type_, status=status)
            self.status.conditions.append(cond)
        if cond.status != status or cond.lastTransitionTime is None:
            cond.lastTransitionTime = self.now
        cond.status, cond.reason, cond.message = status, reason, message
        cond.observedGeneration = self.generation
        if changed and value and not quiet:
            warning = type_ in (FAILED, RESTARTING)
            self.events.append(Event("Warning" if warning else "Normal", reason, message))

    def unset(self, type_: str, reason: str, message: str) -> None:
        if self.is_true(type_):
            self.set(type_, False, reason, message)
