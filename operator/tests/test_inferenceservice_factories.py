"""Factories of InferenceServices and their pods, shaped as the API server returns them (real kubelet
and KWOK), for the InferenceService unit tests. `Pod(...).started().ready().obj()` style."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from loom.api.inferenceservice import InferenceService

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds: float = 0.0) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_isvc(name: str = "ranker", namespace: str = "serving", **spec: Any) -> InferenceService:
    body: dict[str, Any] = {
        "apiVersion": "loom.ml/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "model": {"uri": "https://models.example.com/ranker.safetensors", "sizeLimit": "4Gi"},
            "predictor": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "server",
                                "image": "ranker:1",
                                "ports": [{"containerPort": 9000}],
                                "resources": {
                                    "requests": {"memory": "8Gi", "nvidia.com/gpu": 1},
                                    "limits": {"memory": "8Gi", "nvidia.com/gpu": 1},
                                },
                            }
                        ]
                    }
                }
            },
        },
    }
    for key, value in spec.items():
        body["spec"][key] = copy.deepcopy(value)
    return InferenceService.model_validate(body)


class Pod:
    """A serving pod; starts scheduled with the sidecar waiting (PodInitializing)."""

    def __init__(
        self, name: str, revision: str = "rev1", node: str | None = "gpu-node-0", created: float = 0
    ):
        self.body: dict[str, Any] = {
            "metadata": {
                "name": name,
                "uid": f"uid-{name}",
                "labels": {"loom.ml/inferenceservice": "ranker", "loom.ml/revision": revision},
                "creationTimestamp": ts(created),
            },
            "spec": {"nodeName": node},
            "status": {
                "phase": "Pending",
                "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": ts(created)}],
                "initContainerStatuses": [
                    {
                        "name": "loom-sidecar",
                        "started": False,
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "PodInitializing"}},
                    }
                ],
                "containerStatuses": [
                    {
                        "name": "server",
                        "started": False,
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "PodInitializing"}},
                    }
                ],
            },
        }
        if node is None:
            self.body["status"] = {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/6 nodes are available: 6 Insufficient nvidia.com/gpu.",
                    }
                ],
            }

    @property
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.body["status"]
        return status

    def sidecar(self) -> dict[str, Any]:
        sidecar: dict[str, Any] = self.status["initContainerStatuses"][0]
        return sidecar

    def staging(self, at: float = 1) -> Pod:
        self.sidecar().update(state={"running": {"startedAt": ts(at)}}, started=False)
        return self

    def started(self, at: float = 2) -> Pod:
        """The sidecar's startup probe passed (the model is staged); the server is running."""
        self.sidecar().update(state={"running": {"startedAt": ts(at)}}, started=True, ready=True)
        self.status["phase"] = "Running"
        self.status["containerStatuses"][0].update(state={"running": {"startedAt": ts(at)}}, started=True)
        return self

    def ready(self, at: float = 3) -> Pod:
        self.started(min(at, 2))
        self.status["conditions"] = [{"type": "Ready", "status": "True", "lastTransitionTime": ts(at)}]
        self.status["containerStatuses"][0]["ready"] = True
        return self

    def not_ready(self, at: float) -> Pod:
        self.status["conditions"] = [{"type": "Ready", "status": "False", "lastTransitionTime": ts(at)}]
        self.status["containerStatuses"][0]["ready"] = False
        return self

    def sidecar_crashed(self, code: int, message: str = "", reason: str = "Error", restarts: int = 2) -> Pod:
        """A real kubelet: the sidecar exited before it was started and is being restarted."""
        self.sidecar().update(
            started=False,
            restartCount=restarts,
            state={"waiting": {"reason": "CrashLoopBackOff"}},
            lastState={"terminated": {"exitCode": code, "reason": reason, "message": message}},
        )
        return self

    def kwok_exit(self, code: int, reason: str = "Error") -> Pod:
        """KWOK's kwok.loom.ml/exit-code stage: every container terminated, the pod Failed."""
        self.started()
        self.status["phase"] = "Failed"
        self.status["conditions"] = [{"type": "Ready", "status": "False", "lastTransitionTime": ts(9)}]
        self.status["containerStatuses"][0].update(
            ready=False, started=False, state={"terminated": {"exitCode": code, "reason": reason}}
        )
        return self

    def evicted(self, message: str) -> Pod:
        self.status.update(phase="Failed", reason="Evicted", message=message)
        return self

    def crash_looping(self, restarts: int) -> Pod:
        self.started()
        self.status["containerStatuses"][0].update(
            started=False,
            ready=False,
            restartCount=restarts,
            state={"waiting": {"reason": "CrashLoopBackOff"}},
        )
        return self

    def terminating(self) -> Pod:
        self.body["metadata"]["deletionTimestamp"] = ts(10)
        return self

    def on(self, node: str) -> Pod:
        self.body["spec"]["nodeName"] = node
        return self

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self.body)


def node(
    name: str, labels: dict[str, str] | None = None, conditions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "status": {"conditions": conditions or []}}


def test_factories_make_valid_objects() -> None:
    assert make_isvc(replicas=3).spec.replicas == 3
    assert Pod("p").ready().obj()["status"]["phase"] == "Running"
