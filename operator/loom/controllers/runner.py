"""Starts the operator: every controller, the metrics endpoint, liveness, optional peering."""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from loom.controllers.activity import ACTIVITY, FINALIZER, peering_daemon
from loom.controllers.peering import PEERING, ensure_peering_objects

CONTROLLER_MODULES = (
    "loom.controllers.trainingjob",
    "loom.controllers.inferenceservice",
    "loom.controllers.featurepipeline",
    "loom.controllers.observers",
)


def load_controllers() -> list[str]:
    """Import each controller module that exists, so its handlers register with Kopf."""
    loaded = []
    for name in CONTROLLER_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        loaded.append(name)
    return loaded


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="loom.ml")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="loom.ml")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 32
    settings.networking.request_timeout = 60
    settings.peering.lifetime = PEERING.lifetime


def watch_peering(name: str, clusterwide: bool, namespaces: list[str] | None = None) -> None:
    """Hold `ACTIVITY` open exactly while Kopf runs this replica: through a daemon on the peering
    objects named `name`, which Kopf stops when it pauses the operator and restarts after. The peering
    objects are created at startup where they are missing."""
    kopf.on.startup(id="loom-peering-objects")(_ensuring(name, list(namespaces or [])))
    ACTIVITY.standalone = False
    ACTIVITY.release()  # reports 0 until Kopf starts the first daemon
    plural = "clusterkopfpeerings" if clusterwide else "kopfpeerings"
    kopf.daemon("kopf.dev", "v1", plural, id="loom-activity", when=_named(name), cancellation_timeout=10.0)(
        peering_daemon
    )


def _ensuring(name: str, namespaces: list[str]) -> Any:
    async def ensure(**_: Any) -> None:
        await asyncio.to_thread(ensure_peering_objects, name, namespaces)

    return ensure


def _named(wanted: str) -> Any:
    def when(name: str, **_: Any) -> bool:
        return name == wanted

    return when


def run(
    *,
    namespaces: list[str],
    metrics_port: int,
    peering: str | None,
    liveness_port: int = 8081,
    peering_priority: int | None = None,
    peering_lifetime: int | None = None,
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Kopf logs every handler run per object at INFO: at hundreds of pods a second that is most of the
    # operator's CPU. Failures and retries are logged at WARNING and above, and still show.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    loaded = load_controllers()
    logging.getLogger("loom").info("controllers: %s", ", ".join(loaded))
    if peering is not None:
        watch_peering(peering, clusterwide=not namespaces, namespaces=namespaces)
        PEERING.configure(priority=peering_priority, lifetime=peering_lifetime)
        logging.getLogger("loom").info("peering %s: %s", peering, PEERING.describe())
    if metrics_port:
        start_http_server(metrics_port)
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=peering is None,
            peering_name=peering,
            priority=PEERING.priority if peering is not None else None,
            liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
        )
    )
