"""Helpers for the install e2e suites: the manifests as kustomize renders them, a kubeconfig holding a
ServiceAccount's own token, the API server's audit log, and a ClusterRole's grants as a set.

The local cluster's kube-apiserver writes one audit entry per request made with a ServiceAccount token
(e2e/cluster/audit-policy.yaml): what an operator running on such a token asked for, and what it got.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e.support import LOOM_HOME, ROOT, kubectl, wait_established

PEERING_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: kopfpeerings.kopf.dev}
spec:
  scope: Namespaced
  group: kopf.dev
  names: {kind: KopfPeering, plural: kopfpeerings, singular: kopfpeering}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


def render(path: str) -> list[dict[str, Any]]:
    """The objects of a kustomization under manifests/ (e.g. "overlays/prod"), as `kubectl kustomize`."""
    text = kubectl("kustomize", str(ROOT / "manifests" / path))
    return [d for d in yaml.safe_load_all(text) if d]


def pick(docs: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name} in the manifests"
    return found[0]


def ensure_namespaced_peering_crd() -> None:
    kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-", input=PEERING_CRD)
    wait_established("kopfpeerings.kopf.dev")


def token_kubeconfig(namespace: str, service_account: str, path: Path, seconds: int = 3600) -> str:
    """Write a kubeconfig for the current cluster that authenticates with a fresh token of the
    ServiceAccount (TokenRequest, as a pod's projected token); returns the token."""
    token = kubectl("create", "token", service_account, "-n", namespace, f"--duration={seconds}s").strip()
    admin = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": service_account}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return token


def token_id(token: str) -> str:
    """The `jti` claim of a ServiceAccount token: the API server records it in every audit entry of a
    request made with that token (user.extra authentication.kubernetes.io/credential-id)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["jti"])


def audit_log() -> Path:
    """The local cluster's audit log, named as e2e/cluster/up.sh names the cluster."""
    name = os.environ.get("LOOM_CLUSTER", "loom")
    if os.environ.get("GANG_SCHEDULING") == "0" and not name.endswith("-nogang"):
        name += "-nogang"
    return LOOM_HOME / "kwok" / "clusters" / name / "logs" / "audit.log"


@dataclass(frozen=True, order=True)
class Request:
    """One request, the way RBAC sees it: verb, API group, resource[/subresource]."""

    group: str
    resource: str
    verb: str

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}" + (f".{self.group}" if self.group else "")


@dataclass(frozen=True)
class Entry:
    request: Request | None  # None: a non-resource URL (discovery, /version)
    uri: str
    code: int
    namespace: str

    def authorized(self) -> set[Request]:
        """What RBAC granted for it: a server-side apply that created its object (a patch answered 201)
        was authorized for `create` as well."""
        if self.request is None:
            return set()
        out = {self.request}
        if self.request.verb == "patch" and self.code == 201:
            out.add(Request(self.request.group, self.request.resource, "create"))
        return out


def audit_entries(jti: str, offset: int = 0) -> Iterator[Entry]:
    """Entries of requests made with the token `jti`, from byte `offset` of the audit log on."""
    with audit_log().open("rb") as f:
        f.seek(offset)
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:  # the line being written
                continue
            extra = (entry.get("user") or {}).get("extra") or {}
            if f"JTI={jti}" not in extra.get("authentication.kubernetes.io/credential-id", []):
                continue
            ref = entry.get("objectRef")
            request = None
            if ref and ref.get("resource"):
                resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
                request = Request(ref.get("apiGroup") or "", resource, entry["verb"])
            code = int((entry.get("responseStatus") or {}).get("code") or 0)
            yield Entry(request, entry.get("requestURI", ""), code, (ref or {}).get("namespace", ""))


def grants(role: dict[str, Any]) -> set[Request]:
    """Every (group, resource, verb) a ClusterRole grants (no wildcards or resourceNames expected)."""
    out: set[Request] = set()
    for rule in role.get("rules") or []:
        assert "*" not in rule.get("verbs", []) and "*" not in rule.get("resources", []), rule
        assert not rule.get("resourceNames"), f"resourceNames are not modelled here: {rule}"
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule["verbs"]:
                    out.add(Request(group, resource, verb))
    return out
