"""The partial-gang checker of the e2e suites: samples a namespace's TrainingJob pods every second and
records, per gang (job and attempt), every stretch of time in which some of its pods were bound to a node
while others were Pending (not being deleted): the state Loom promises never lasts.

    with GangSampler(namespace) as gangs:
        ...                                   # the scenario
    gangs.check(limit=2.0)                    # fails naming the gang, its pods and how long
    print(gangs.report())                     # "longest partial gang: 0.0 s (never seen) in 41 samples"

A stretch seen in one sample only lasted less than the sampling interval; its length is reported as
0 s (as "seen once"). The limit is the scheduler's own decision time: kube-scheduler binds a PodGroup in
one cycle (milliseconds), and where Loom admits a gang itself it releases one the scheduler could not
place as soon as the scheduler says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from e2e.support import KUBECTL

Gang = tuple[str, str]  # (job, attempt)


@dataclass
class Stretch:
    gang: Gang
    first: float  # monotonic seconds of the first sample that saw it partial
    last: float
    samples: int = 1
    bound: int = 0
    pending: int = 0
    pods: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.last - self.first


def partial_gangs(pods: list[dict[str, Any]]) -> dict[Gang, tuple[int, int, list[str]]]:
    """Gangs of which some pods are bound (and not finished) and others Pending and not being deleted:
    (bound, pending, the pending pods' names)."""
    gangs: dict[Gang, tuple[int, int, list[str]]] = {}
    for pod in pods:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        labels = meta.get("labels") or {}
        if "loom.ml/trainingjob" not in labels:
            continue
        gang = (labels["loom.ml/trainingjob"], labels.get("loom.ml/attempt", "?"))
        bound, pending, names = gangs.get(gang, (0, 0, []))
        if spec.get("nodeName"):
            if status.get("phase") not in ("Succeeded", "Failed"):
                bound += 1
        elif not meta.get("deletionTimestamp"):
            pending += 1
            names = [*names, meta["name"]]
        gangs[gang] = (bound, pending, names)
    return {g: v for g, v in gangs.items() if v[0] and v[1]}


class GangSampler:
    """Samples `namespace` every `interval` seconds on a thread, from `start` (or `with`) to `stop`."""

    def __init__(self, namespace: str, interval: float = 1.0, kubeconfig: str | None = None) -> None:
        self.namespace, self.interval = namespace, interval
        self.env = {**os.environ, "KUBECONFIG": kubeconfig or os.environ["KUBECONFIG"]}
        self.samples = 0
        self.failed_samples = 0
        self.stretches: list[Stretch] = []
        self._open: dict[Gang, Stretch] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"gangs-{namespace}")
        self.started = 0.0

    def __enter__(self) -> GangSampler:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.sample()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def sample(self) -> None:
        """One look at the namespace's pods (also callable from a test, between its steps)."""
        result = subprocess.run(
            [KUBECTL, "get", "pods", "-n", self.namespace, "-l", "loom.ml/trainingjob", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            env=self.env,
        )
        now = time.monotonic()
        if result.returncode != 0:
            self.failed_samples += 1
            return
        partial = partial_gangs(json.loads(result.stdout)["items"])
        self.samples += 1
        for gang, (bound, pending, names) in partial.items():
            stretch = self._open.get(gang)
            if stretch is None:
                stretch = self._open[gang] = Stretch(gang, now, now, 1, bound, pending, names)
                self.stretches.append(stretch)
            else:
                stretch.last, stretch.samples = now, stretch.samples + 1
                stretch.bound, stretch.pending, stretch.pods = bound, pending, names
        for gang in [g for g in self._open if g not in partial]:
            del self._open[gang]

    def longest(self) -> Stretch | None:
        return max(self.stretches, key=lambda s: s.seconds, default=None)

    def report(self) -> str:
        longest = self.longest()
        where = f"{self.samples} samples over {time.monotonic() - self.started:.0f} s"
        if longest is None:
            return f"longest partial gang: 0.0 s (never seen) in {where}"
        job, attempt = longest.gang
        return (
            f"longest partial gang: {longest.seconds:.1f} s ({job} attempt {attempt}, seen in "
            f"{longest.samples} consecutive samples, {longest.bound} bound while {longest.pending} Pending: "
            f"{', '.join(longest.pods[:5])}); {len(self.stretches)} partial stretches in {where}"
        )

    def check(self, limit: float = 2.0) -> str:
        """Fail when a gang stayed partly bound longer than `limit` seconds; the report otherwise."""
        assert self.samples > 0, f"no sample of {self.namespace} succeeded ({self.failed_samples} failed)"
        longest = self.longest()
        assert longest is None or longest.seconds <= limit, f"a gang stayed partly bound: {self.report()}"
        return self.report()
