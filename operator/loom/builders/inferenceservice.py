"""InferenceService children: one Deployment per revision, one Service, and the rollout plan.

Pure: no I/O, no clock. A revision is a hash of what the pods run (predictor template, model,
sidecar image); each revision is a Deployment `<service>-<revision>`. The model-staging sidecar is
injected as a native sidecar (an init container with `restartPolicy: Always`) whose startup probe on
`/readyz` holds the serving container back until the weights are in the memory emptyDir.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loom.api.inferenceservice import (
    GPU_HEALTH_LABEL,
    GPU_UNHEALTHY,
    LABEL_REVISION,
    LABEL_SERVICE,
    MODEL_VOLUME,
    SIDECAR_CONTAINER,
    InferenceService,
    InferenceServiceSpec,
)
from loom.builders.common import owner_reference, recommended_labels
from loom.builders.model_sources import PVC_VOLUME, sidecar_source

SIDECAR_PORT = 8470
DEFAULT_SIDECAR_IMAGE = "ghcr.io/loom-ml/loom-sidecar:0.1.0"
MODEL_DIR = "/loom/models"
SERVICE_PORT = 80
DEFAULT_SERVING_PORT = 8080
LABEL_ROLE = "loom.ml/role"
ANNOTATION_SPEC_HASH = "loom.ml/spec-hash"

DEFAULT_SIZE_LIMIT = 1 << 30
LOAD_BYTES_PER_SECOND = 200e6  # conservative: object stores and NFS often give less than disks
LOAD_BASE_SECONDS = 120  # image pull of the sidecar, process start, source latency
STARTUP_PROBE_PERIOD_SECONDS = 5
SIDECAR_MEMORY_OVERHEAD = 256 << 20

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "m": 1e-3}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


@dataclass(frozen=True)
class SidecarConfig:
    """Operator-wide settings of the injected sidecar (LOOM_SIDECAR_IMAGE)."""

    image: str = DEFAULT_SIDECAR_IMAGE
    cpu_request: str = "500m"


def parse_quantity(quantity: str | int | float) -> int:
    """A Kubernetes resource quantity ("16Gi", "500M", "1.5e9") in base units, rounded up."""
    if isinstance(quantity, int | float):
        return math.ceil(quantity)
    match = _QUANTITY.match(quantity.strip())
    if not match or (match.group(2) not in _BINARY and match.group(2) not in _DECIMAL):
        raise ValueError(f"not a resource quantity: {quantity!r}")
    number, suffix = float(match.group(1)), match.group(2)
    return math.ceil(number * (_BINARY.get(suffix) or _DECIMAL[suffix]))


def format_bytes(n: int) -> str:
    for suffix in ("Gi", "Mi", "Ki"):
        if n % _BINARY[suffix] == 0:
            return f"{n // _BINARY[suffix]}{suffix}"
    return str(n)


def model_name(isvc: InferenceService) -> str:
    return isvc.spec.model.name or str(isvc.metadata["name"])


def serving_container(spec: InferenceServiceSpec) -> dict[str, Any]:
    """The serving container: the first container of the predictor template."""
    container: dict[str, Any] = spec.predictor.template["spec"]["containers"][0]
    return container


def size_limit_bytes(spec: InferenceServiceSpec) -> int:
    """Size of the model emptyDir: model.sizeLimit, else the serving container's memory request, else 1Gi."""
    if spec.model.sizeLimit:
        return parse_quantity(spec.model.sizeLimit)
    requested = serving_container(spec).get("resources", {}).get("requests", {}).get("memory")
    return parse_quantity(requested) if requested else DEFAULT_SIZE_LIMIT


def load_timeout_seconds(spec: InferenceServiceSpec) -> int:
    """How long staging may take before the pod counts as failed: sized for the model, never tight."""
    if spec.model.loadTimeoutSeconds:
        return spec.model.loadTimeoutSeconds
    return LOAD_BASE_SECONDS + math.ceil(size_limit_bytes(spec) / LOAD_BYTES_PER_SECOND)


def revision_hash(isvc: InferenceService, sidecar: SidecarConfig = SidecarConfig()) -> str:
    """10 hex digits identifying what the pods run; any change makes a new revision (a rollout)."""
    essence = {
        "template": isvc.spec.predictor.template,
        "model": isvc.spec.model.model_dump(mode="json", exclude_none=True),
        "sidecar": sidecar.image,
    }
    return _digest(essence)[:10]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def deployment_name(isvc: InferenceService, revision: str) -> str:
    return f"{isvc.metadata['name']}-{revision}"


def selector(isvc: InferenceService) -> str:
    """Label selector of every pod of the service (status.selector, for the scale subresource)."""
    return f"{LABEL_SERVICE}={isvc.metadata['name']}"


def url(isvc: InferenceService) -> str:
    return f"http://{isvc.metadata['name']}.{isvc.metadata.get('namespace', 'default')}.svc.cluster.local"


def labels(isvc: InferenceService, revision: str | None = None) -> dict[str, str]:
    out = recommended_labels(isvc, "predictor") | {
        LABEL_SERVICE: str(isvc.metadata["name"]),
        LABEL_ROLE: "predictor",
    }
    if revision:
        out[LABEL_REVISION] = revision
    return out


def _metadata(isvc: InferenceService, name: str, revision: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": isvc.metadata.get("namespace", "default"),
        "labels": labels(isvc, revision),
        "ownerReferences": [owner_reference(isvc)],
    }


def sidecar_container(isvc: InferenceService, sidecar: SidecarConfig) -> dict[str, Any]:
    memory = format_bytes(size_limit_bytes(isvc.spec) + SIDECAR_MEMORY_OVERHEAD)
    probe_threshold = math.ceil(load_timeout_seconds(isvc.spec) / STARTUP_PROBE_PERIOD_SECONDS)

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": SIDECAR_PORT},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    source = sidecar_source(isvc.spec.model)
    container: dict[str, Any] = {
        "name": SIDECAR_CONTAINER,
        "image": sidecar.image,
        "restartPolicy": "Always",
        "command": [
            "loom-sidecar",
            "serve",
            "--dir",
            MODEL_DIR,
            "--listen",
            f"0.0.0.0:{SIDECAR_PORT}",
            *source.flags,
            f"{model_name(isvc)}={source.uri}",
        ],
        "ports": [{"name": "loom-sidecar", "containerPort": SIDECAR_PORT, "protocol": "TCP"}],
        # /readyz answers 200 once the model is staged: until then the serving container does not
        # start, and the generous threshold keeps a pod that is still loading from being killed as hung.
        "startupProbe": probe("/readyz", STARTUP_PROBE_PERIOD_SECONDS, probe_threshold),
        "readinessProbe": probe("/readyz", 10, 3),
        "livenessProbe": probe("/healthz", 10, 6),
        "volumeMounts": [{"name": MODEL_VOLUME, "mountPath": MODEL_DIR}, *source.mounts],
        # Exit codes 2/3/4 come with a one-line reason on stderr; the kubelet keeps it as the message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # The staged pages are written (and so charged) by the sidecar: it requests the model's memory.
        "resources": {
            "requests": {"cpu": sidecar.cpu_request, "memory": memory},
            "limits": {"memory": memory},
        },
    }
    if source.env:
        container["env"] = source.env
    if source.env_from:
        container["envFrom"] = source.env_from
    return container


def _with_env(container: dict[str, Any], env: Mapping[str, str]) -> None:
    kept = [e for e in container.get("env", []) if e.get("name") not in env]
    container["env"] = kept + [{"name": k, "value": v} for k, v in env.items()]


def _with_model_mount(container: dict[str, Any]) -> None:
    mounts = [m for m in container.get("volumeMounts", []) if m.get("name") != MODEL_VOLUME]
    container["volumeMounts"] = [*mounts, {"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "readOnly": True}]


def _avoid_unhealthy_gpus(pod_spec: dict[str, Any]) -> None:
    """Require nodes not labelled unhealthy: ANDed into every existing required node selector term."""
    expression = {"key": GPU_HEALTH_LABEL, "operator": "NotIn", "values": [GPU_UNHEALTHY]}
    node_affinity = pod_spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    required = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = required.setdefault("nodeSelectorTerms", [])
    if not terms:
        terms.append({})
    for term in terms:
        term["matchExpressions"] = [*term.get("matchExpressions", []), expression]


def pod_template(isvc: InferenceService, revision: str, sidecar: SidecarConfig) -> dict[str, Any]:
    template = copy.deepcopy(isvc.spec.predictor.template)
    meta = template.setdefault("metadata", {})
    meta["labels"] = {**meta.get("labels", {}), **labels(isvc, revision)}
    meta["annotations"] = {**meta.get("annotations", {}), LABEL_REVISION: revision}
    pod_spec = template["spec"]
    size = size_limit_bytes(isvc.spec)
    env = {"LOOM_MODEL_DIR": MODEL_DIR, "LOOM_MODEL_NAME": model_name(isvc)}
    for container in pod_spec["containers"]:
        _with_env(container, env)
        _with_model_mount(container)
    # A memory emptyDir counts against the pod's memory: the serving container's limit makes room.
    limits = pod_spec["containers"][0].setdefault("resources", {}).get("limits", {})
    if "memory" in limits:
        limits["memory"] = format_bytes(parse_quantity(limits["memory"]) + size)
    others = [c for c in pod_spec.get("initContainers", []) if c.get("name") != SIDECAR_CONTAINER]
    pod_spec["initContainers"] = [sidecar_container(isvc, sidecar), *others]
    source = sidecar_source(isvc.spec.model)
    ours = {MODEL_VOLUME, PVC_VOLUME, *(v["name"] for v in source.volumes)}
    volumes = [v for v in pod_spec.get("volumes", []) if v.get("name") not in ours]
    pod_spec["volumes"] = [
        *volumes,
        {"name": MODEL_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": format_bytes(size)}},
        *source.volumes,
    ]
    if source.service_account:
        pod_spec["serviceAccountName"] = source.service_account
    if isvc.spec.health.replaceOnUnhealthyGPU:
        _avoid_unhealthy_gpus(pod_spec)
    return template


def desired_deployment(
    isvc: InferenceService, revision: str, replicas: int, sidecar: SidecarConfig = SidecarConfig()
) -> dict[str, Any]:
    """The Deployment of one revision. Its `loom.ml/spec-hash` annotation covers all but replicas."""
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(isvc, deployment_name(isvc, revision), revision),
        "spec": {
            "selector": {"matchLabels": {LABEL_SERVICE: isvc.metadata["name"], LABEL_REVISION: revision}},
            # Never report a loading model as a stalled rollout.
            "progressDeadlineSeconds": load_timeout_seconds(isvc.spec) + 600,
            "revisionHistoryLimit": 1,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": pod_template(isvc, revision, sidecar),
        },
    }
    body["metadata"]["annotations"] = {ANNOTATION_SPEC_HASH: _digest(body)[:16]}
    body["spec"]["replicas"] = replicas
    return body


def serving_port(spec: InferenceServiceSpec) -> int | str:
    ports = serving_container(spec).get("ports") or []
    if ports:
        port: int | str = ports[0].get("containerPort", DEFAULT_SERVING_PORT)
        return port
    return DEFAULT_SERVING_PORT


def desired_service(isvc: InferenceService) -> dict[str, Any]:
    """One Service over the Ready pods of every revision: traffic splits as the replicas do."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(isvc, str(isvc.metadata["name"])),
        "spec": {
            "selector": {LABEL_SERVICE: isvc.metadata["name"], LABEL_ROLE: "predictor"},
            "ports": [
                {
                    "name": "http",
                    "port": SERVICE_PORT,
                    "targetPort": serving_port(isvc.spec),
                    "protocol": "TCP",
                }
            ],
        },
    }


# --- rollout planning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionObservation:
    """What is running of one revision: its Deployment's replicas and its Ready, Loaded pods."""

    name: str
    replicas: int
    ready: int
    created: str = ""  # RFC 3339 creationTimestamp of the Deployment: sorts in time order


@dataclass(frozen=True)
class ObservedRevisions:
    latest: str  # revision of the current spec
    stable: str | None  # the last revision that had every replica Ready (status.revisions.latestReady)
    failed: frozenset[str] = frozenset()  # rolled back; never scaled up again
    revisions: Sequence[RevisionObservation] = field(default_factory=tuple)
    hold: bool = False  # the canary is Ready but still in its analysis time (canary.promoteAfterSeconds)


def desired_replicas(spec: InferenceServiceSpec) -> int:
    """spec.replicas (the autoscaler's last decision) clamped to [min, max]; a new service starts at 1+."""
    wanted = spec.replicas if spec.replicas is not None else max(spec.minReplicas, 1)
    return max(spec.minReplicas, min(spec.maxReplicas, wanted))


def canary_step(spec: InferenceServiceSpec, replicas: int) -> int:
    """Pods a new revision starts with, and the most extra pods a rollout adds on top of `replicas`."""
    if replicas <= 0:
        return 0
    percent = spec.canary.trafficPercent if spec.canary else 0
    return max(1, min(replicas, round(replicas * percent / 100)))


def rollout_target(observed: ObservedRevisions) -> str:
    """The revision that should end up with every replica: the latest, unless it was rolled back."""
    if observed.latest in observed.failed and observed.stable and observed.stable != observed.latest:
        return observed.stable
    return observed.latest


def plan_rollout(spec: InferenceServiceSpec, observed: ObservedRevisions) -> dict[str, int]:
    """Replicas per revision for this step of the rollout; revisions planned at 0 can be deleted.

    Like a Deployment's rolling update with maxUnavailable 0 and maxSurge = one canary step, across
    revisions: the target first gets a canary step of pods; it grows by a step as its pods become
    Ready (so Loaded), while the older revisions keep only the capacity the target still lacks.
    Total pods never exceed replicas + one step, so a rollout never needs 2x the service's GPUs.
    """
    n = desired_replicas(spec)
    step = canary_step(spec, n)
    target = rollout_target(observed)
    by_name = {r.name: r for r in observed.revisions}
    plan = {r.name: 0 for r in observed.revisions}
    target_ready = by_name[target].ready if target in by_name else 0
    hold = observed.hold and target == observed.latest
    if hold:
        target_ready = min(target_ready, step)
    others = [r for r in observed.revisions if r.name != target and r.name not in observed.failed]
    # Keep old capacity where the target lacks Ready pods: the stable revision first, then newest first.
    others.sort(key=lambda r: r.created, reverse=True)
    others.sort(key=lambda r: r.name != observed.stable)
    budget = max(0, n - target_ready)
    for pass_ready in (True, False):
        for r in others:
            have = plan[r.name]
            can = (r.ready if pass_ready else r.replicas) - have
            take = max(0, min(can, budget))
            plan[r.name] = have + take
            budget -= take
    kept = sum(plan[r.name] for r in others)
    plan[target] = max(0, min(n, n + step - kept, step if hold else n))
    return plan
