"""loom.kube against the real API server: the cases its docstrings promise."""

from __future__ import annotations

import json

import pytest

from e2e.support import kubectl
from loom import kube

pytestmark = pytest.mark.timeout(60)


def _config_map(namespace: str, name: str) -> str:
    kubectl("create", "configmap", name, "-n", namespace, "--from-literal=k=v")
    uid: str = json.loads(kubectl("get", "configmap", name, "-n", namespace, "-o", "json"))["metadata"]["uid"]
    return uid


def test_delete_with_the_uid_of_a_predecessor_is_already_gone(namespace: str) -> None:
    """A uid precondition that fails (HTTP 409) means the object meant is gone; its successor stays."""
    old = _config_map(namespace, "c")
    kubectl("delete", "configmap", "c", "-n", namespace)
    new = _config_map(namespace, "c")
    assert new != old
    assert kube.delete("v1", "ConfigMap", "c", namespace, uid=old) is False
    left = json.loads(kubectl("get", "configmap", "c", "-n", namespace, "-o", "json"))
    assert left["metadata"]["uid"] == new
    assert kube.delete("v1", "ConfigMap", "c", namespace, uid=new) is True
    assert kube.delete("v1", "ConfigMap", "c", namespace, uid=new) is False  # 404


def test_event_is_recorded(namespace: str) -> None:
    uid = _config_map(namespace, "c")
    meta = {"name": "c", "namespace": namespace, "uid": uid}
    involved = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
    kube.event(involved, "Tested", "an event from loom.kube")
    out = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json"))["items"]
    assert [(e["reason"], e["involvedObject"]["uid"]) for e in out] == [("Tested", uid)]
