"""Which windows a FeaturePipeline runs: backfill slices, schedule ticks, and the watermark.

Pure: no I/O; `now` is a parameter; times are UTC. The watermark is the end of the contiguous range
of event time that succeeded runs cover, from backfill.start (or the first scheduled window); a
scheduled run at tick T recomputes [watermark - allowedLateness, T), so late events still count, and
after missed ticks one run catches up to the latest tick.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from croniter import croniter

from loom.api.featurepipeline import BackfillSpec, parse_duration
from loom.builders.featurepipeline import Window

MAX_BACKFILL_WINDOWS = 10000


def utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def backfill_windows(backfill: BackfillSpec | None) -> list[Window]:
    """[start, end) in slices of `step`; the last one ends at `end`. At most MAX_BACKFILL_WINDOWS."""
    if backfill is None:
        return []
    step = parse_duration(backfill.step)
    start, end = utc(backfill.start), utc(backfill.end)
    out: list[Window] = []
    while start < end and len(out) < MAX_BACKFILL_WINDOWS:
        out.append(Window(start, min(start + step, end)))
        start += step
    return out


def latest_tick(schedule: str, now: datetime) -> datetime:
    """The newest tick of the cron schedule at or before `now` (UTC)."""
    now = utc(now)
    before: datetime = croniter(schedule, now).get_prev(datetime)
    after: datetime = croniter(schedule, before).get_next(datetime)
    return utc(after if after <= now else before)


def next_tick(schedule: str, now: datetime) -> datetime:
    """The first tick strictly after `now`."""
    tick: datetime = croniter(schedule, utc(now)).get_next(datetime)
    return utc(tick)


def previous_tick(schedule: str, tick: datetime) -> datetime:
    """The tick before `tick`."""
    before: datetime = croniter(schedule, utc(tick)).get_prev(datetime)
    return utc(before)


def scheduled_window(
    schedule: str, tick: datetime, watermark: datetime | None, allowed_lateness: str
) -> Window | None:
    """The window of the run at `tick`: from the watermark less the allowed lateness (without a
    watermark, from the tick before), to the tick. None when there is nothing before the tick."""
    start = watermark - parse_duration(allowed_lateness) if watermark else previous_tick(schedule, tick)
    return Window(start, tick) if start < tick else None


def advance_watermark(
    previous: datetime | None, origin: datetime | None, succeeded: Iterable[Window]
) -> datetime | None:
    """The end of the contiguous range covered by `succeeded` windows, from `previous` (else from
    `origin`, the backfill start, else from the earliest succeeded window). Never moves back."""
    done = sorted(succeeded)
    frontier = previous or origin or (done[0].start if done else None)
    if frontier is None:
        return None
    for window in done:
        if window.start > frontier:
            break
        frontier = max(frontier, window.end)
    if previous is None and frontier == origin:
        return None  # nothing from the origin on has succeeded yet
    return frontier
