"""Elastic TrainingJobs: the largest gang size that fits the GPUs free once the job's own pods are gone
(they are being replaced by the new gang).

Pure: no I/O. An elastic job has one role, so its pods are identical for placement: the same GPU
request, node selector, tolerations and affinity. How many fit is then a count, not a search: each
eligible node holds floor(free / request) of them, whatever the packing. One pass over the nodes, no
candidate gang built: O(nodes) per decision, at any maxReplicas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loom.api.trainingjob import TrainingJob
from loom.builders.trainingjob import placement_spec, pod_gpus
from loom.builders.trainingjob_gang import Node, is_eligible


def capacity(spec: Mapping[str, Any], free: Mapping[str, int], nodes: Mapping[str, Node]) -> int | None:
    """How many pods of `spec` fit `free` at once; None when they need no GPU (no limit from GPUs)."""
    gpus = pod_gpus(spec)
    if gpus <= 0:
        return None
    eligible = (left for name, left in free.items() if name in nodes and is_eligible(nodes[name], spec))
    return sum(left // gpus for left in eligible)


def largest_fit(
    job: TrainingJob,
    excluded: Sequence[str],
    free: Mapping[str, int],
    nodes: Mapping[str, Node],
    cap: int | None = None,
) -> int:
    """The most replicas, between elastic min and max (and at most `cap`), whose pods fit `free`;
    minReplicas when fewer fit."""
    elastic = job.spec.elastic
    assert elastic is not None
    most = min(elastic.maxReplicas, cap) if cap else elastic.maxReplicas
    fit = capacity(placement_spec(job, excluded), free, nodes)
    return max(elastic.minReplicas, most if fit is None else min(most, fit))
