"""Gang admission: does a whole gang fit the GPUs the cluster has free right now?

Pure: no I/O, no clock. The model is the scheduler's, for the one resource that matters here:
a node's allocatable nvidia.com/gpu minus the requests of the non-terminal pods bound to it, minus
the pods already admitted (ungated) but not yet bound, which are placed first. A gang fits when
every pod can be placed on a node it is eligible for (Ready, schedulable, nodeSelector, required
node affinity, taints), packed best-fit-decreasing. CPU and memory are not modelled: GPU nodes
have plenty, and a gang the scheduler still cannot place is released by its scheduling timeout.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loom.builders.trainingjob import GANG_GATE, GPU, pod_gpus, quantity_int
from loom.health.pods import gpu_unhealthy


@dataclass(frozen=True)
class Node:
    """`ready`: Ready, and its GPUs not marked unhealthy (`gpu_problem` says why they are): a node whose
    GPUs failed is as lost to a gang as a NotReady one (its pods restart elsewhere, it is excluded)."""

    name: str
    ready: bool = True
    unschedulable: bool = False
    gpus: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, effect)
    gpu_problem: str | None = None


@dataclass(frozen=True)
class GpuPod:
    """A pod anywhere in the cluster that holds or wants GPUs."""

    namespace: str
    name: str
    node: str | None
    gpus: int
    gated: bool = False
    terminal: bool = False


def node_from(body: Mapping[str, Any]) -> Node:
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    taints = tuple(
        (t.get("key", ""), t.get("value") or "", t.get("effect", ""))
        for t in spec.get("taints") or []
        if t.get("effect") in ("NoSchedule", "NoExecute")
    )
    gpu_problem = gpu_unhealthy(body)
    return Node(
        name=body["metadata"]["name"],
        ready=ready and gpu_problem is None,
        unschedulable=bool(spec.get("unschedulable")),
        gpus=quantity_int((status.get("allocatable") or {}).get(GPU)),
        labels=dict(body["metadata"].get("labels") or {}),
        taints=taints,
        gpu_problem=gpu_problem,
    )


def is_gated(pod: Mapping[str, Any]) -> bool:
    return bool(pod.get("spec", {}).get("schedulingGates"))


def has_gang_gate(pod: Mapping[str, Any]) -> bool:
    return any(g.get("name") == GANG_GATE for g in pod.get("spec", {}).get("schedulingGates") or [])


def gpu_pod_from(body: Mapping[str, Any]) -> GpuPod:
    meta = body["metadata"]
    spec = body.get("spec") or {}
    phase = (body.get("status") or {}).get("phase")
    return GpuPod(
        namespace=meta.get("namespace", ""),
        name=meta["name"],
        node=spec.get("nodeName") or None,
        gpus=pod_gpus(spec),
        gated=is_gated(body),
        terminal=phase in ("Succeeded", "Failed"),
    )


class _Packer:
    """Free GPUs per node, bucketed by amount: best fit is the smallest bucket that holds a pod."""

    def __init__(self, free: Mapping[str, int]) -> None:
        self.free = dict(free)
        self.buckets: dict[int, list[str]] = {}
        for name in sorted(self.free):
            self.buckets.setdefault(self.free[name], []).append(name)

    def take(self, gpus: int, eligible: Collection[str] | None = None) -> str | None:
        """Place a pod of `gpus` on the fullest node (among `eligible`) that still holds it."""
        for amount in sorted(a for a, names in self.buckets.items() if a >= gpus and names):
            bucket = self.buckets[amount]
            for i, name in enumerate(bucket):
                if eligible is None or name in eligible:
                    del bucket[i]
                    self.free[name] = amount - gpus
                    bisect.insort(self.buckets.setdefault(amount - gpus, []), name)
                    return name
        return None


def free_gpus(
    nodes: Iterable[Node], pods: Iterable[GpuPod], admitted: frozenset[tuple[str, str]] = frozenset()
) -> dict[str, int]:
    """GPUs free per usable node (Ready, schedulable) after the pods holding or about to take them.

    `admitted` names (namespace, name) pods that were ungated but whose update has not been
    observed yet: they count as admitted."""
    free = {n.name: n.gpus for n in nodes if n.ready and not n.unschedulable and n.gpus > 0}
    pending: list[int] = []
    for pod in pods:
        if pod.terminal or pod.gpus <= 0:
            continue
        if pod.node is not None:
            if pod.node in free:
                free[pod.node] -= pod.gpus
        elif not pod.gated or (pod.namespace, pod.name) in admitted:
            pending.append(pod.gpus)
    packer = _Packer(free)
    for gpus in sorted(pending, reverse=True):
        packer.take(gpus)
    return packer.free


def _tolerates(tolerations: Sequence[Mapping[str, Any]], taint: tuple[str, str, str]) -> bool:
    key, value, effect = taint
    for t in tolerations:
        if t.get("effect") and t.get("effect") != effect:
            continue
        if t.get("operator") == "Exists" and not t.get("key"):
            return True
        if t.get("key") == key and (t.get("operator") == "Exists" or (t.get("value") or "") == value):
            return True
    return False


def _matches(requirement: Mapping[str, Any], value: str | None) -> bool:
    op, values = requirement.get("operator"), requirement.get("values") or []
    if op == "In":
        return value in values
    if op == "NotIn":
        return value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and values:
        try:
            return int(value) > int(values[0]) if op == "Gt" else int(value) < int(values[0])
        except ValueError:
            return False
    return False


def _affinity_allows(node: Node, pod_spec: Mapping[str, Any]) -> bool:
    affinity = (pod_spec.get("affinity") or {}).get("nodeAffinity") or {}
    terms = (affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms")
    if not terms:
        return True
    return any(
        all(_matches(r, node.labels.get(r.get("key", ""))) for r in term.get("matchExpressions") or [])
        and all(
            _matches(r, node.name) for r in term.get("matchFields") or [] if r.get("key") == "metadata.name"
        )
        for term in terms
    )


def is_eligible(node: Node, pod_spec: Mapping[str, Any]) -> bool:
    """Could the scheduler place a pod with this spec on this node (GPUs aside)?"""
    if not node.ready or node.unschedulable:
        return False
    selector = pod_spec.get("nodeSelector") or {}
    if any(node.labels.get(k) != v for k, v in selector.items()):
        return False
    tolerations = pod_spec.get("tolerations") or []
    if any(not _tolerates(tolerations, taint) for taint in node.taints):
        return False
    return _affinity_allows(node, pod_spec)


def fits(free: Mapping[str, int], nodes: Mapping[str, Node], pod_specs: Sequence[Mapping[str, Any]]) -> bool:
    """True when every pod (by spec) can be placed at once, best-fit-decreasing by GPU request."""
    packer = _Packer(free)
    demands = sorted(((pod_gpus(s), s) for s in pod_specs), key=lambda d: d[0], reverse=True)
    eligible_cache: dict[str, frozenset[str] | None] = {}
    for gpus, spec in demands:
        if gpus <= 0:
            continue
        key = json.dumps(
            [spec.get("nodeSelector"), spec.get("affinity"), spec.get("tolerations")], sort_keys=True
        )
        if key not in eligible_cache:
            eligible = frozenset(n for n in free if n in nodes and is_eligible(nodes[n], spec))
            eligible_cache[key] = None if len(eligible) == len(free) else eligible
        if packer.take(gpus, eligible_cache[key]) is None:
            return False
    return True
