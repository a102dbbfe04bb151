"""Kopf peering options of one operator replica: which replica acts, and how soon a standby takes over.

Kopf lets the live peer of the highest priority act and pauses the others (equal priorities pause
everyone). Replicas of one Deployment start with the same arguments, so a fixed `--peering-priority`
would pause them all; by default each replica's priority is its age instead: minus its start time in
microseconds, so the oldest live replica acts, a restarted or rolled-out replica joins as a standby, and
a failover never moves the work back.

A replica that exits cleanly removes itself from the peering object, and a standby resumes at once. One
that dies without a word (SIGKILL, OOM, a lost node) stays listed until `lifetime` seconds after its last
keep-alive, which Kopf sends every `lifetime - 5..10` seconds (at least every second); only then does the
standby resume. Kopf's default lifetime is 60 s; Loom's is 10 s, so that a standby acts within about
`lifetime` plus the time to restart its watches (controller-runtime's leader lease is 15 s).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

DEFAULT_LIFETIME = 10  # seconds
log = logging.getLogger(__name__)


def age_priority(started: float) -> int:
    """The priority of a replica started at `started` (Unix seconds): older is higher."""
    return -int(started * 1_000_000)


@dataclass
class Peering:
    priority: int = 0
    lifetime: int = DEFAULT_LIFETIME

    def configure(self, *, priority: int | None, lifetime: int | None, now: float | None = None) -> None:
        """`priority` None: by age; `lifetime` None: the default."""
        self.priority = age_priority(time.time() if now is None else now) if priority is None else priority
        self.lifetime = DEFAULT_LIFETIME if lifetime is None else lifetime
        if self.lifetime < 2:
            raise ValueError(f"peering lifetime {self.lifetime} s: it must be at least 2 s")

    def describe(self) -> str:
        return f"priority {self.priority}, lifetime {self.lifetime} s"


PEERING = Peering()


def peering_objects(name: str, namespaces: list[str]) -> list[dict[str, Any]]:
    """The peering objects Kopf needs before it lets this replica act: the cluster's one, or one in each
    namespace named literally (a glob's namespaces are the installer's to prepare)."""
    if not namespaces:
        return [{"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}]
    return [
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": name, "namespace": ns}}
        for ns in namespaces
        if not any(c in ns for c in "*?[]!")
    ]


def ensure_peering_objects(name: str, namespaces: list[str], attempts: int = 30) -> None:
    """Create the missing peering objects (an install applies the CRD, and a CRD's objects cannot be in
    the same apply). Without them Kopf pauses the operator for good, so a missing CRD is retried, then
    reported with the fix."""
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    from loom import kube

    for obj in peering_objects(name, namespaces):
        for attempt in range(attempts):
            try:
                if kube.create(obj) is not None:
                    log.info("created the peering object %s %s", obj["kind"], name)
                break
            except ResourceNotFoundError:
                if attempt == attempts - 1:
                    log.error(
                        "no %s CRD: Kopf keeps this replica paused until it exists (kubectl apply "
                        "--server-side -k manifests/base installs it)",
                        obj["kind"],
                    )
                    break
                time.sleep(2)  # the client rediscovers the API server's resources on a miss
