"""Window planning: backfill slices, cron ticks in UTC, scheduled windows with lateness, the watermark."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from test_featurepipeline_factories import T0, at, window

from loom.api.featurepipeline import BackfillSpec
from loom.builders.featurepipeline import Window
from loom.builders.featurepipeline_windows import (
    MAX_BACKFILL_WINDOWS,
    advance_watermark,
    backfill_windows,
    latest_tick,
    next_tick,
    scheduled_window,
)


def backfill(hours: float, step: str, start: datetime = T0) -> BackfillSpec:
    return BackfillSpec(start=start, end=start + timedelta(hours=hours), step=step)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(None, [], id="none"),
        pytest.param(backfill(72, "1d"), [window(0, 24), window(24, 48), window(48, 72)], id="days"),
        pytest.param(backfill(30, "1d"), [window(0, 24), window(24, 30)], id="last-clipped"),
        pytest.param(backfill(1, "30m"), [window(0, 0.5), window(0.5, 1)], id="minutes"),
        pytest.param(backfill(2, "1h30m"), [window(0, 1.5), window(1.5, 2)], id="compound-step"),
    ],
)
def test_backfill_windows(spec: BackfillSpec | None, expected: list[Window]) -> None:
    assert backfill_windows(spec) == expected


def test_backfill_windows_are_bounded() -> None:
    assert len(backfill_windows(backfill(24 * 365 * 5, "1m"))) == MAX_BACKFILL_WINDOWS


def test_backfill_in_another_offset_is_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    windows = backfill_windows(backfill(24, "1d", start=datetime(2026, 11, 1, 2, tzinfo=plus2)))
    assert windows == [window(0, 24)]
    assert windows[0].start.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("schedule", "now", "latest", "following"),
    [
        pytest.param("0 * * * *", at(1, 30), at(1), at(2), id="between-ticks"),
        pytest.param("0 * * * *", at(2), at(2), at(3), id="on-a-tick"),
        pytest.param("* * * * *", at(0, 5, 59), at(0, 5), at(0, 6), id="every-minute"),
        pytest.param("@daily", at(30), at(24), at(48), id="daily"),
        pytest.param("30 2 * * *", at(1), at(-21.5), at(2.5), id="utc-not-local"),
    ],
)
def test_ticks(schedule: str, now: datetime, latest: datetime, following: datetime) -> None:
    assert latest_tick(schedule, now) == latest
    assert next_tick(schedule, now) == following


@pytest.mark.parametrize(
    ("watermark", "lateness", "expected"),
    [
        pytest.param(None, "0s", window(1, 2), id="first-run-previous-tick"),
        pytest.param(at(1), "0s", window(1, 2), id="from-watermark"),
        pytest.param(at(1), "30m", window(0.5, 2), id="lateness-reaches-back"),
        pytest.param(at(-5), "1h", window(-6, 2), id="catch-up-after-missed-ticks"),
        pytest.param(at(2), "0s", None, id="nothing-new"),
        pytest.param(at(3), "30m", None, id="watermark-ahead-of-tick"),
    ],
)
def test_scheduled_window(watermark: datetime | None, lateness: str, expected: Window | None) -> None:
    assert scheduled_window("0 * * * *", at(2), watermark, lateness) == expected


@pytest.mark.parametrize(
    ("previous", "origin", "done", "expected"),
    [
        pytest.param(None, None, [], None, id="nothing"),
        pytest.param(None, at(0), [], None, id="backfill-nothing-done"),
        pytest.param(None, at(0), [window(0, 24)], at(24), id="first-window"),
        pytest.param(None, at(0), [window(24, 48)], None, id="gap-at-start"),
        pytest.param(None, at(0), [window(0, 24), window(48, 72)], at(24), id="gap-in-middle"),
        pytest.param(None, at(0), [window(48, 72), window(0, 24), window(24, 48)], at(72), id="out-of-order"),
        pytest.param(at(24), at(0), [window(0, 24)], at(24), id="already-there"),
        pytest.param(at(48), at(0), [window(0, 24)], at(48), id="never-back"),
        pytest.param(at(24), at(0), [window(23, 30)], at(30), id="overlap-with-lateness"),
        pytest.param(None, None, [window(5, 6), window(6, 7)], at(7), id="schedule-only-first-window"),
    ],
)
def test_advance_watermark(
    previous: datetime | None, origin: datetime | None, done: list[Window], expected: datetime | None
) -> None:
    assert advance_watermark(previous, origin, done) == expected
