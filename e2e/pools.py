"""Node pools of one test: fake KWOK GPU nodes, tainted so that no other test's pods (nor another
session's on the same cluster) land there, and the pod-template fields that pin a test's pods to them.

Every e2e test that needs GPUs gets the capacity it asks for this way, whatever else holds the
cluster's shared GPU nodes (the examples test_crds applies, a concurrent session, pods still in
their termination grace period).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import yaml

from e2e.support import kubectl, wait_for

POOL_LABEL = "loom.ml/e2e-pool"


@dataclass
class Pool:
    tag: str
    nodes: list[str]

    def pin(self, pod_spec: dict[str, Any]) -> dict[str, Any]:
        """`pod_spec` with the nodeSelector and toleration of this pool (a copy)."""
        return {
            **pod_spec,
            "nodeSelector": {**(pod_spec.get("nodeSelector") or {}), POOL_LABEL: self.tag},
            "tolerations": [
                *(pod_spec.get("tolerations") or []),
                {"key": POOL_LABEL, "operator": "Exists"},
            ],
        }


def _node(name: str, tag: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                POOL_LABEL: tag,
            },
        },
        "spec": {"taints": [{"key": POOL_LABEL, "value": tag, "effect": "NoSchedule"}]},
        "status": {
            "allocatable": {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": str(gpus)},
            "capacity": {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": str(gpus)},
        },
    }


def _ready(name: str) -> bool:
    node = json.loads(kubectl("get", "node", name, "-o", "json"))
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))


@contextmanager
def gpu_pool(count: int, gpus: int = 8, prefix: str = "pool") -> Iterator[Pool]:
    """`count` Ready fake nodes of `gpus` GPUs each, removed afterwards."""
    tag = "p" + uuid.uuid4().hex[:6]  # a letter first: "123e45" would read as a number
    names = [f"{prefix}{tag}-{i}" for i in range(count)]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([_node(n, tag, gpus) for n in names]))
    try:
        for name in names:
            wait_for(lambda n=name: _ready(n), timeout=30, what=f"node {name} Ready")
        yield Pool(tag, names)
    finally:
        kubectl("delete", "node", *names, "--wait=false", "--ignore-not-found", check=False)
