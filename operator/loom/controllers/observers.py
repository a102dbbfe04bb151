"""Metrics that only watch: InferenceServices by phase, model load seconds per serving pod, and the
work queues' depth. Nothing here writes to the API server; the kinds' own controllers stay as they are.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Any

import kopf

from loom import metrics
from loom.api.common import GROUP, VERSION
from loom.api.inferenceservice import LABEL_SERVICE
from loom.health.pods import model_load_seconds

QUEUES = {
    "loom.controllers.trainingjob": "TrainingJob",
    "loom.controllers.featurepipeline": "FeaturePipeline",
}
_SEEN_PODS_MAX = 100_000

_phases: dict[tuple[str, str], str] = {}
_loaded: OrderedDict[str, None] = OrderedDict()  # uids of pods whose load time was observed


@kopf.on.startup()
def observe_queues(**_: Any) -> None:
    """Depth of each loaded controller's work queue, read at scrape time."""
    for module, kind in QUEUES.items():
        queue = getattr(sys.modules.get(module), "queue", None)
        if queue is not None:
            metrics.WORKQUEUE_DEPTH.labels(kind=kind).set_function(queue.__len__)


@kopf.on.event(GROUP, VERSION, "inferenceservices")
def observe_inferenceservice_phase(
    type: str | None, namespace: str | None, name: str, status: kopf.Status, **_: Any
) -> None:
    key = (str(namespace), name)
    phase = None if type == "DELETED" else str(status.get("phase") or "Pending")
    old = _phases.pop(key, None)
    if old is not None:
        metrics.RESOURCES_BY_PHASE.labels(kind="InferenceService", phase=old).dec()
    if phase is not None:
        _phases[key] = phase
        metrics.RESOURCES_BY_PHASE.labels(kind="InferenceService", phase=phase).inc()


@kopf.on.event("pods", labels={LABEL_SERVICE: kopf.PRESENT})
def observe_model_load(type: str | None, body: kopf.Body, uid: str | None, **_: Any) -> None:
    if not uid or type == "DELETED":
        _loaded.pop(uid or "", None)
        return
    if uid in _loaded:
        return
    seconds = model_load_seconds(body)
    if seconds is None:
        return
    _loaded[uid] = None
    if len(_loaded) > _SEEN_PODS_MAX:
        _loaded.popitem(last=False)
    metrics.MODEL_LOAD_SECONDS.observe(seconds)
