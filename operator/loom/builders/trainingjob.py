"""TrainingJob -> its children: one pod per replica of the current gang, and a headless Service.

Pure: no I/O. Names are deterministic: `<job>-<role>-<index>-a<attempt>`. The attempt is in the
name so that a new gang never waits for the old one's names to be freed (its pods are created,
gated, while the old ones terminate) and a pod's name alone says which gang it belongs to, which
keeps crash recovery trivial: any pod whose attempt is not the job's current one is deleted.
The stable DNS name of a replica is its hostname `<role>-<index>` under the Service `<job>`, whose
selector follows the current attempt so that DNS never answers with a pod of an older gang.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from loom.api.trainingjob import TrainingJob
from loom.builders.common import owner_reference, recommended_labels

GANG_GATE = "loom.ml/gang"
LABEL_JOB = "loom.ml/trainingjob"
LABEL_ROLE = "loom.ml/role"
LABEL_INDEX = "loom.ml/replica-index"
LABEL_ATTEMPT = "loom.ml/attempt"
SPEC_HASH = "loom.ml/spec-hash"
GPU = "nvidia.com/gpu"
RDZV_PORT = 29400
MASTER_ROLE = "master"
# Schedulers that place a gang all-or-nothing themselves: their pods are created without Loom's gate.
GANG_SCHEDULERS = frozenset(
    {"volcano", "yunikorn", "scheduler-plugins-scheduler", "kai-scheduler", "koord-scheduler"}
)
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


class GangPath(StrEnum):
    """Who places a gang all-or-nothing."""

    POD_GROUP = "PodGroup"  # kube-scheduler's gang scheduling: a PodGroup, pods in its schedulingGroup
    GATE = "Gate"  # Loom: pods created gated, the gate lifted for all at once when the gang fits
    SCHEDULER = "Scheduler"  # a gang scheduler named in the pod templates (Volcano, ...)


def gang_path(job: TrainingJob, pod_groups_served: bool) -> GangPath:
    """The path of a new gang: the templates' gang scheduler, else kube-scheduler's gang scheduling where
    the API server serves PodGroups, else Loom's own admission."""
    if is_gang_scheduled(job):
        return GangPath.SCHEDULER
    return GangPath.POD_GROUP if pod_groups_served else GangPath.GATE


@dataclass(frozen=True)
class Member:
    """One pod of a gang: its role and index, its node rank, and its processes' global ranks."""

    role: str
    index: int
    node_rank: int
    nproc: int
    first_rank: int


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a JSON-shaped dict (API objects are), several times faster than copy.deepcopy."""
    copied: dict[str, Any] = json.loads(json.dumps(value))
    return copied


def spec_hash(job: TrainingJob) -> str:
    """A digest of everything in the spec that shapes the pods (not runPolicy's retry and time limits)."""
    spec = job.spec.model_dump(mode="json", include={"replicaSpecs", "nprocPerNode", "masterPort", "elastic"})
    spec["priorityClassName"] = job.spec.runPolicy.priorityClassName
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def pod_name(job: str, role: str, index: int, attempt: int) -> str:
    return f"{job}-{role}-{index}-a{attempt}"


def hostname(role: str, index: int) -> str:
    return f"{role}-{index}"


def name_problem(job: TrainingJob) -> str | None:
    """Why the job's name cannot name its children (None when it can)."""
    name = job.metadata.get("name", "")
    if not _DNS_1035.match(name):
        return (
            f"metadata.name {name!r} must be a DNS-1035 label (lowercase letters, digits and '-', "
            "starting with a letter, at most 63 characters): it names the job's headless Service; "
            "recreate the job under such a name"
        )
    return None


def quantity_int(value: Any) -> int:
    """An integer resource quantity such as nvidia.com/gpu ("8", 8); 0 when absent or fractional."""
    try:
        return int(str(value)) if value is not None else 0
    except ValueError:
        return 0


def _container_gpus(container: Mapping[str, Any]) -> int:
    resources = container.get("resources") or {}
    return max(
        quantity_int((resources.get("requests") or {}).get(GPU)),
        quantity_int((resources.get("limits") or {}).get(GPU)),
    )


def pod_gpus(pod_spec: Mapping[str, Any]) -> int:
    """GPUs the scheduler reserves for a pod: the sum over its containers (and native sidecars),
    or the largest init container's request if that is more."""
    init = pod_spec.get("initContainers") or []
    sidecars = sum(_container_gpus(c) for c in init if c.get("restartPolicy") == "Always")
    main = sum(_container_gpus(c) for c in pod_spec.get("containers") or []) + sidecars
    plain_init = max((_container_gpus(c) for c in init if c.get("restartPolicy") != "Always"), default=0)
    return max(main, plain_init)


def role_order(job: TrainingJob) -> list[str]:
    """Roles in rank order: master first when it exists, then the rest by name."""
    roles = sorted(job.spec.replicaSpecs)
    if MASTER_ROLE in roles:
        roles.remove(MASTER_ROLE)
        roles.insert(0, MASTER_ROLE)
    return roles


def template_spec(job: TrainingJob, role: str) -> dict[str, Any]:
    spec: dict[str, Any] = job.spec.replicaSpecs[role].template.get("spec") or {}
    return spec


def nproc_per_node(job: TrainingJob, role: str) -> int:
    return job.spec.nprocPerNode or pod_gpus(template_spec(job, role)) or 1


def full_size(job: TrainingJob) -> int:
    """Pods of a gang at full size: maxReplicas for an elastic job, else the sum over roles."""
    if job.spec.elastic is not None:
        return job.spec.elastic.maxReplicas
    return sum(r.replicas for r in job.spec.replicaSpecs.values())


def members(job: TrainingJob, size: int | None = None) -> list[Member]:
    """The gang in rank order. `size` is the number of pods of an elastic job (its only role)."""
    out: list[Member] = []
    rank = 0
    for role in role_order(job):
        count = job.spec.replicaSpecs[role].replicas
        if job.spec.elastic is not None:
            count = size if size is not None else job.spec.elastic.minReplicas
        nproc = nproc_per_node(job, role)
        for index in range(count):
            out.append(Member(role, index, len(out), nproc, rank))
            rank += nproc
    return out


def service_name(job: TrainingJob) -> str:
    return str(job.metadata["name"])


def master_addr(job: TrainingJob, gang: list[Member]) -> str:
    """Rank 0's stable DNS name: hostname.subdomain.namespace.svc (resolves through the search path)."""
    first = gang[0] if gang else Member(role_order(job)[0], 0, 0, 1, 0)
    return f"{hostname(first.role, first.index)}.{service_name(job)}.{job.metadata.get('namespace')}.svc"


def is_gang_scheduled(job: TrainingJob) -> bool:
    """True when every role names a gang scheduler: Loom then leaves admission to it."""
    return all(
        template_spec(job, role).get("schedulerName") in GANG_SCHEDULERS for role in job.spec.replicaSpecs
    )


def labels(job: TrainingJob, role: str | None = None) -> dict[str, str]:
    out = recommended_labels(job, role) | {LABEL_JOB: str(job.metadata["name"])}
    if role is not None:
        out[LABEL_ROLE] = role
    return out


def env(job: TrainingJob, gang: list[Member], member: Member, attempt: int) -> list[dict[str, str]]:
    """torch.distributed and torchrun (PET_*) variables of one pod of the gang."""
    addr = master_addr(job, gang)
    port = str(job.spec.masterPort)
    values = {
        "MASTER_ADDR": addr,
        "MASTER_PORT": port,
        "WORLD_SIZE": str(sum(m.nproc for m in gang)),
        "RANK": str(member.first_rank),
        "LOCAL_WORLD_SIZE": str(member.nproc),
        "PET_NNODES": str(len(gang)),
        "PET_NPROC_PER_NODE": str(member.nproc),
        "PET_NODE_RANK": str(member.node_rank),
        "PET_MASTER_ADDR": addr,
        "PET_MASTER_PORT": port,
        "LOOM_ATTEMPT": str(attempt),
    }
    if job.spec.elastic is not None:
        values |= {
            "PET_NNODES": f"{job.spec.elastic.minReplicas}:{job.spec.elastic.maxReplicas}",
            "PET_RDZV_BACKEND": "c10d",
            "PET_RDZV_ENDPOINT": f"{addr}:{RDZV_PORT}",
            "PET_RDZV_ID": str(job.metadata.get("uid") or job.metadata["name"]),
            "PET_MAX_RESTARTS": str(job.spec.elastic.maxRestarts),
        }
    return [{"name": k, "value": v} for k, v in values.items()]


def _with_env(container: dict[str, Any], extra: list[dict[str, str]]) -> dict[str, Any]:
    """Loom's variables replace any of the same name in the template (they must agree across the gang)."""
    ours = {e["name"] for e in extra}
    kept = [e for e in container.get("env") or [] if e.get("name") not in ours]
    return {**container, "env": [*kept, *extra]}


def _avoiding(affinity: dict[str, Any] | None, nodes: Iterable[str]) -> dict[str, Any] | None:
    """The template's affinity plus `metadata.name NotIn [node]` for each node, in every required node
    selector term. One requirement per node: a node field selector takes one value under In and NotIn
    (the API server answers 422 to two), and requirements of a term are ANDed."""
    avoid = sorted(set(nodes))
    if not avoid:
        return affinity
    out = _copy(affinity) if affinity else {}
    required = out.setdefault("nodeAffinity", {}).setdefault(
        "requiredDuringSchedulingIgnoredDuringExecution", {}
    )
    terms = required.get("nodeSelectorTerms") or [{}]
    expressions = [{"key": "metadata.name", "operator": "NotIn", "values": [node]} for node in avoid]
    required["nodeSelectorTerms"] = [
        {**t, "matchFields": [*(t.get("matchFields") or []), *expressions]} for t in terms
    ]
    return out


def desired_pod(
    job: TrainingJob,
    gang: list[Member],
    member: Member,
    attempt: int,
    excluded_nodes: Iterable[str] = (),
    pod_group: str | None = None,
) -> dict[str, Any]:
    template = job.spec.replicaSpecs[member.role].template
    meta = template.get("metadata") or {}
    spec = _copy(template.get("spec") or {})
    extra = env(job, gang, member, attempt)
    spec["containers"] = [_with_env(c, extra) for c in spec.get("containers") or []]
    spec["hostname"] = hostname(member.role, member.index)
    spec["subdomain"] = service_name(job)
    spec["restartPolicy"] = "Never"  # Loom restarts the whole gang; a lone in-place restart breaks it
    if pod_group is not None:  # kube-scheduler places the group all-or-nothing: no gate of Loom's
        spec["schedulingGroup"] = {"podGroupName": pod_group}
    elif not is_gang_scheduled(job):
        spec["schedulingGates"] = [*(spec.get("schedulingGates") or []), {"name": GANG_GATE}]
    if job.spec.runPolicy.priorityClassName:
        spec["priorityClassName"] = job.spec.runPolicy.priorityClassName
    affinity = _avoiding(spec.get("affinity"), excluded_nodes)
    if affinity:
        spec["affinity"] = affinity
    pod_labels = {
        **(job.metadata.get("labels") or {}),  # e.g. kueue.x-k8s.io/queue-name
        **(meta.get("labels") or {}),
        **labels(job, member.role),
        LABEL_INDEX: str(member.index),
        LABEL_ATTEMPT: str(attempt),
    }
    metadata: dict[str, Any] = {
        "name": pod_name(job.metadata["name"], member.role, member.index, attempt),
        "namespace": job.metadata.get("namespace"),
        "labels": pod_labels,
        "ownerReferences": [owner_reference(job)],
    }
    metadata["annotations"] = {**(meta.get("annotations") or {}), SPEC_HASH: spec_hash(job)}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def desired_pods(
    job: TrainingJob,
    attempt: int,
    *,
    size: int | None = None,
    excluded_nodes: Iterable[str] = (),
    pod_group: str | None = None,
) -> list[dict[str, Any]]:
    """Every pod of gang `attempt`, in rank order: in `pod_group` when one is given, else gated
    (`loom.ml/gang`) unless a gang scheduler places them; `excluded_nodes` become node anti-affinity."""
    gang = members(job, size)
    excluded = list(excluded_nodes)
    return [desired_pod(job, gang, m, attempt, excluded, pod_group) for m in gang]


def placement_spec(job: TrainingJob, excluded_nodes: Iterable[str] = ()) -> dict[str, Any]:
    """What decides where a pod of an elastic job (one role, identical pods) may go: its GPU request,
    nodeSelector, tolerations and node affinity (with `excluded_nodes`), without building the pod."""
    spec = template_spec(job, role_order(job)[0])
    keys = ("containers", "initContainers", "nodeSelector", "tolerations")
    out: dict[str, Any] = {k: spec[k] for k in keys if k in spec}
    affinity = _avoiding(spec.get("affinity"), excluded_nodes)
    if affinity:
        out["affinity"] = affinity
    return out


def desired_service(job: TrainingJob, attempt: int) -> dict[str, Any]:
    """The headless Service giving every replica of the current gang a DNS name, ready or not."""
    ports = [{"name": "master", "port": job.spec.masterPort, "targetPort": job.spec.masterPort}]
    if job.spec.elastic is not None:
        ports.append({"name": "rendezvous", "port": RDZV_PORT, "targetPort": RDZV_PORT})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(job),
            "namespace": job.metadata.get("namespace"),
            "labels": labels(job),
            "ownerReferences": [owner_reference(job)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {LABEL_JOB: str(job.metadata["name"]), LABEL_ATTEMPT: str(attempt)},
            "ports": ports,
        },
    }
