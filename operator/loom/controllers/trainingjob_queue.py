"""A work queue of object keys, as in client-go: deduplicated, one worker per key at a time,
delayed re-adds, and per-key exponential backoff after errors.

Events only say "look at this key again"; the worker always reads the latest observed state, so a
burst of a hundred pod events for one job costs one or two reconciles, not a hundred.

Workers take a key only while `activity` is open (by default the operator's: closed while Kopf
pauses it under peering); keys added meanwhile, by events or timers, wait in the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from loom.controllers.activity import ACTIVITY, Activity

K = TypeVar("K", bound=Hashable)
log = logging.getLogger(__name__)


class WorkQueue(Generic[K]):
    def __init__(
        self,
        handler: Callable[[K], Awaitable[float | None]],
        *,
        workers: int = 8,
        base_backoff: float = 0.5,
        max_backoff: float = 60.0,
        on_error: Callable[[K, BaseException], None] | None = None,
        activity: Activity = ACTIVITY,
    ) -> None:
        self._handler = handler
        self._activity = activity
        self._workers = workers
        self._base_backoff, self._max_backoff = base_backoff, max_backoff
        self._on_error = on_error
        self._queue: asyncio.Queue[K] | None = None
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._again: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the workers on the running event loop (idempotent)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._tasks = [
                asyncio.create_task(self._work(), name=f"workqueue-{i}") for i in range(self._workers)
            ]
        for key in list(self._queued):
            self._queue.put_nowait(key)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks, self._queue = [], None

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: K, delay: float = 0.0) -> None:
        """Have `key` handled (again) after `delay` seconds; an earlier pending time wins."""
        if delay > 0:
            loop = asyncio.get_running_loop()
            timer = self._timers.get(key)
            if timer is not None:
                if timer.when() <= loop.time() + delay:
                    return
                timer.cancel()
            self._timers[key] = loop.call_later(delay, self._fire, key)
            return
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            if self._queue is not None:
                self._queue.put_nowait(key)

    def forget(self, key: K) -> None:
        """Drop timers and error history of a key whose object is gone."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            await self._activity.wait_active()
            key = await self._queue.get()
            if not self._activity.active:  # paused while this worker waited for a key
                self._queue.put_nowait(key)
                continue
            self._queued.discard(key)
            self._active.add(key)
            delay: float | None
            failed = False
            try:
                delay = await self._handler(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failed = True
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(self._base_backoff * 2 ** (failures - 1), self._max_backoff)
                log.warning(
                    "reconcile of %s failed (%d in a row), retrying in %.1f s: %s", key, failures, delay, e
                )
                if self._on_error is not None:
                    self._on_error(key, e)
            finally:
                self._active.discard(key)
            if key in self._again:
                self._again.discard(key)
                if not failed:
                    self.add(key)
            if delay is not None:
                self.add(key, delay)
