"""Elastic TrainingJobs: the largest gang size that fits the GPUs free once the job's own pods are
gone (they are being replaced by the bigger gang).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loom.api.trainingjob import TrainingJob
from loom.builders.trainingjob import desired_pods, pod_gpus
from loom.builders.trainingjob_gang import fits
from loom.builders.trainingjob_view import Cluster
from loom.health.failures import is_terminal


def free_after_own_pods(cluster: Cluster, pods: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Free GPUs per node as they will be once the job's own `pods` are gone."""
    free = dict(cluster.free)
    for pod in pods:
        node = pod.get("spec", {}).get("nodeName")
        if node in free and not is_terminal(pod):
            free[node] += pod_gpus(pod.get("spec", {}))
    return free


def largest_fit(
    job: TrainingJob, attempt: int, excluded: Sequence[str], free: Mapping[str, int], cluster: Cluster
) -> int:
    """The most replicas (between elastic min and max) whose pods fit `free`; min when none does."""
    elastic = job.spec.elastic
    assert elastic is not None
    for size in range(elastic.maxReplicas, elastic.minReplicas - 1, -1):
        specs = [p["spec"] for p in desired_pods(job, attempt, size=size, excluded_nodes=excluded)]
        if fits(free, cluster.nodes, specs):
            return size
    return elastic.minReplicas
