"""What the model-staging sidecar needs for model.uri: the URI it reads, its flags, credentials, volumes.

Pure: no I/O. The sidecar reads paths, http(s)://, s3://, gs:// and hf:// itself; a pvc:// URI is a
claim mounted read-only into the sidecar (only there) and handed over as a path. Credentials are
wired by name only: a Secret becomes the sidecar's environment (envFrom) and a read-only volume
(for an AWS shared credentials file), a ServiceAccount becomes the pod's (IRSA, Workload
Identity). No value of a Secret is ever read by the operator, so none can reach status or events.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from loom.api.inferenceservice import ModelSpec

PVC_ROOT = "/loom/pvc"
PVC_VOLUME = "loom-model-pvc"
CREDENTIALS_DIR = "/var/run/loom/model-credentials"
CREDENTIALS_VOLUME = "loom-model-credentials"
# The Secret key read as an AWS shared credentials file (the AWS CLI's file name).
CREDENTIALS_FILE_KEY = "credentials"

_ENDPOINT_FLAGS = {"s3://": "--s3-endpoint", "gs://": "--gcs-endpoint", "hf://": "--hf-endpoint"}


@dataclass(frozen=True)
class SidecarSource:
    """The parts of the sidecar container and pod that come from model.uri and model.credentials."""

    uri: str  # as the sidecar reads it
    flags: list[str] = field(default_factory=list)
    env: list[dict[str, Any]] = field(default_factory=list)
    env_from: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    service_account: str | None = None


def pvc_claim(uri: str) -> tuple[str, str] | None:
    """("claim", "path/inside") of a pvc:// URI; None for any other URI."""
    if not uri.startswith("pvc://"):
        return None
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    return claim, path


def sidecar_source(model: ModelSpec) -> SidecarSource:
    uri = model.uri
    flags: list[str] = []
    env: list[dict[str, Any]] = []
    env_from: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    claim = pvc_claim(uri)
    if claim is not None:
        name, path = claim
        root = f"{PVC_ROOT}/{name}"
        # The CRD refuses '..' segments; normpath drops '.' and doubled slashes.
        uri = posixpath.normpath(f"{root}/{path}") if path else root
        volumes.append({"name": PVC_VOLUME, "persistentVolumeClaim": {"claimName": name, "readOnly": True}})
        mounts.append({"name": PVC_VOLUME, "mountPath": root, "readOnly": True})
    for scheme, flag in _ENDPOINT_FLAGS.items():
        if model.endpoint and uri.startswith(scheme):
            flags += [flag, model.endpoint.rstrip("/")]
    if model.region:
        flags += ["--s3-region", model.region]
    credentials = model.credentials
    if credentials is not None and credentials.secretName:
        secret = credentials.secretName
        env_from.append({"secretRef": {"name": secret}})
        env.append(
            {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": f"{CREDENTIALS_DIR}/{CREDENTIALS_FILE_KEY}"}
        )
        volumes.append({"name": CREDENTIALS_VOLUME, "secret": {"secretName": secret}})
        mounts.append({"name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_DIR, "readOnly": True})
    return SidecarSource(
        uri=uri,
        flags=flags,
        env=env,
        env_from=env_from,
        mounts=mounts,
        volumes=volumes,
        service_account=credentials.serviceAccountName if credentials is not None else None,
    )
