"""Whether this operator replica may act, as Kopf decides it.

Under `--peering`, Kopf pauses the operator while a peer of higher (or equal) priority is alive: it
stops its watches, daemons and timers, and starts them again once it is active. Loom's own work
that runs outside Kopf handlers (the TrainingJob and FeaturePipeline work queues, their delayed
re-adds and backoff timers) asks `ACTIVITY` before each reconcile, so a paused replica never writes
from its stale indexes.

Kopf has no public flag for its pause, but it runs daemons exactly while it is not paused: the
runner registers `peering_daemon` on the operator's peering objects (one per watched namespace, or
the cluster's one), and each running daemon holds the gate open. Without peering it is always open.
Kopf puts its finalizer on objects with daemons; the daemon takes it off the peering object when the
operator exits, so that deleting the peering object never waits for an operator.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from loom import kube, metrics

FINALIZER = "loom.ml/finalizer"  # the runner's settings.persistence.finalizer
log = logging.getLogger(__name__)


class Activity:
    """A gate: open standalone, else while at least one holder (a Kopf daemon) holds it.
    Asyncio-only: call from the operator's event loop."""

    def __init__(self, standalone: bool = True) -> None:
        self.standalone = standalone
        self._holders = 0
        self._opened: asyncio.Event | None = None

    @property
    def active(self) -> bool:
        return self.standalone or self._holders > 0

    def hold(self) -> None:
        self._holders += 1
        self._changed()

    def release(self) -> None:
        self._holders = max(0, self._holders - 1)
        self._changed()

    def _changed(self) -> None:
        metrics.OPERATOR_ACTIVE.set(1 if self.active else 0)
        if self._opened is None:
            return
        if self.active:
            self._opened.set()
        else:
            self._opened.clear()

    async def wait_active(self) -> None:
        while not self.active:
            if self._opened is None:
                self._opened = asyncio.Event()
            await self._opened.wait()


ACTIVITY = Activity()


async def peering_daemon(stopped: Any, body: kopf.Body, **_: Any) -> None:
    """A Kopf daemon on a peering object: Kopf runs it while the operator is not paused."""
    ACTIVITY.hold()
    log.info("active: the work queues run")
    try:
        await stopped.wait()
    finally:
        ACTIVITY.release()
        reason = stopped.reason
        log.info("%s: the work queues wait", reason)
        if reason is not None and reason & kopf.DaemonStoppingReason.OPERATOR_EXITING:
            await asyncio.to_thread(_drop_finalizer, body)


def _drop_finalizer(body: kopf.Body) -> None:
    meta = body.get("metadata") or {}
    finalizers = list(meta.get("finalizers") or [])
    if FINALIZER not in finalizers:
        return
    rest = [f for f in finalizers if f != FINALIZER]
    try:
        kube.patch(
            str(body.get("apiVersion")),
            str(body.get("kind")),
            str(meta.get("name")),
            meta.get("namespace"),
            {"metadata": {"finalizers": rest or None}},
        )
    except Exception as e:  # exiting anyway: a finalizer left is what Kopf would leave too
        log.warning("could not remove %s from the peering object %s: %s", FINALIZER, meta.get("name"), e)
