"""TrainingJob: a gang of pods running distributed (torchrun-style) training."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import Field

from loom.api.common import (
    Condition,
    KubeModel,
    PrinterColumn,
    Resource,
    ResourceInfo,
    cel,
    pod_template_field,
)


class RestartPolicy(StrEnum):
    NEVER = "Never"
    ON_FAILURE = "OnFailure"
    EXIT_CODE = "ExitCode"


class CleanPodPolicy(StrEnum):
    NONE = "None"
    RUNNING = "Running"
    ALL = "All"


class TrainingPhase(StrEnum):
    PENDING = "Pending"
    CREATED = "Created"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class ReplicaSpec(KubeModel):
    """One role of the gang (e.g. master, worker): how many pods and what they run."""

    replicas: int = Field(default=1, ge=0, le=10000, description="Number of pods of this role.")
    restartPolicy: RestartPolicy = Field(
        default=RestartPolicy.ON_FAILURE,
        description=(
            "Never: a failure of the program fails the job. OnFailure: any failure restarts the gang "
            "(up to runPolicy.backoffLimit). ExitCode: exit codes 1-127 are permanent, 128-255 and "
            "OOMKilled retryable. Under every policy, disruptions the program did not cause (eviction, "
            "preemption, a lost or NotReady node, a deleted pod) restart the gang."
        ),
    )
    template: dict[str, Any] = pod_template_field("Pod template of this role's pods.")


class ElasticPolicy(KubeModel):
    """Elastic training: start with as many workers as fit (at least minReplicas), grow towards
    maxReplicas as GPUs free up, shrink to what the cluster holds. Each gang has one size, chosen when it
    is created; where kube-scheduler gang-schedules, its PodGroup's minCount is that size (all of its pods
    are bound at once or none), not minReplicas: pods beyond minCount could be left Pending while the rest
    hold GPUs, and their WORLD_SIZE is fixed when they are created."""

    model_config = cel(
        {
            "rule": "self.minReplicas <= self.maxReplicas",
            "message": "elastic.minReplicas must be <= elastic.maxReplicas",
        }
    )

    minReplicas: int = Field(ge=1, description="Fewest nodes the job may run with.")
    maxReplicas: int = Field(
        ge=1, description="Most nodes the job may grow to (the role's replicas is ignored)."
    )
    maxRestarts: int = Field(default=10, ge=0, description="torchrun --max-restarts for each node.")


class RunPolicy(KubeModel):
    """How the job as a whole runs: retries, deadlines, cleanup, suspension, gang scheduling."""

    backoffLimit: int = Field(default=3, ge=0, description="Gang restarts allowed before the job Fails.")
    activeDeadlineSeconds: int | None = Field(
        default=None, ge=1, description="Seconds the job may run before it Fails with DeadlineExceeded."
    )
    ttlSecondsAfterFinished: int | None = Field(
        default=None, ge=0, description="Delete the job this many seconds after it Succeeded or Failed."
    )
    cleanPodPolicy: CleanPodPolicy = Field(
        default=CleanPodPolicy.RUNNING,
        description="Pods deleted when the job finishes: None, Running (still running ones), All.",
    )
    suspend: bool = Field(default=False, description="True deletes the pods and keeps the job (Kueue).")
    schedulingTimeoutSeconds: int = Field(
        default=300,
        ge=1,
        description="Seconds a gang may wait to be Running before it is released entirely and retried.",
    )
    priorityClassName: str | None = Field(default=None, description="PriorityClass of every pod.")


class TrainingJobSpec(KubeModel):
    model_config = cel(
        {
            "rule": "!has(self.replicaSpecs.master) || self.replicaSpecs.master.replicas == 1",
            "message": "replicaSpecs.master.replicas must be 1 (the master is rank 0)",
        },
        {
            "rule": "!has(self.elastic) || self.replicaSpecs.size() == 1",
            "message": "elastic jobs have exactly one role in replicaSpecs (e.g. worker)",
        },
    )

    replicaSpecs: dict[str, ReplicaSpec] = Field(
        description="Roles of the gang by name (e.g. master, worker). Rank 0 is master[0] if a master "
        "role exists, else replica 0 of the first role in name order.",
        json_schema_extra={
            "minProperties": 1,
            "maxProperties": 8,
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(role, role.matches('^[a-z]([-a-z0-9]{0,14}[a-z0-9])?$'))",
                    "message": "replicaSpecs keys must be lowercase DNS labels of at most 16 characters",
                }
            ],
        },
    )
    nprocPerNode: int | None = Field(
        default=None,
        ge=1,
        le=128,
        description="Processes per pod; defaults to its nvidia.com/gpu request or 1.",
    )
    # Added: the rendezvous port is sometimes taken (hostNetwork pods, sidecars); Kubeflow's default.
    masterPort: int = Field(
        default=23456, ge=1, le=65535, description="MASTER_PORT of rank 0 (torch.distributed TCP store)."
    )
    elastic: ElasticPolicy | None = Field(default=None, description="Elastic min/max nodes.")
    runPolicy: RunPolicy = Field(
        default_factory=RunPolicy, description="Job-level run policy.", json_schema_extra={"default": {}}
    )


class ReplicaStatus(KubeModel):
    active: int = 0
    ready: int = 0
    succeeded: int = 0
    failed: int = 0


class TrainingJobStatus(KubeModel):
    # Rebuilt from the spec and the observed pods on every reconcile: losing them loses nothing.
    RECOMPUTED: ClassVar[frozenset[str]] = frozenset(
        {"phase", "replicaStatuses", "replicas", "readyReplicas", "observedGeneration"}
    )

    phase: TrainingPhase | None = None
    conditions: list[Condition] = Field(default_factory=list)
    replicaStatuses: dict[str, ReplicaStatus] = Field(default_factory=dict)
    replicas: int = Field(default=0, description="Pods in the current gang.")
    readyReplicas: int = Field(default=0, description="Pods of the current gang that are Ready.")
    restartCount: int = Field(default=0, description="Gang restarts so far (counted against backoffLimit).")
    attempt: int = Field(default=0, description="Index of the current gang; new pods per attempt.")
    startTime: datetime | None = Field(
        default=None,
        description="When the job (last resumed and) started; activeDeadlineSeconds counts from here.",
    )
    completionTime: datetime | None = Field(default=None, description="When the job Succeeded or Failed.")
    observedGeneration: int | None = None
    # Added: state the controller must keep across restarts of the operator (level-triggered).
    excludedNodes: list[str] = Field(
        default_factory=list,
        description="Nodes later gangs keep away from (node anti-affinity): lost or NotReady under "
        "earlier gangs.",
    )
    gangTimeouts: int = Field(
        default=0,
        description="Consecutive gangs released before they ran (schedulingTimeoutSeconds passed, or the "
        "scheduler could not place a pod of an admitted gang): the retry backoff grows.",
    )
    resizes: int = Field(
        default=0,
        description="Restarts of an elastic job at another size (grown as GPUs freed, or shrunk to what the "
        "cluster holds); not counted against backoffLimit.",
    )
    podGroup: str | None = Field(
        default=None,
        description="The current gang's PodGroup (scheduling.k8s.io/v1alpha2), where kube-scheduler places "
        "the gang all-or-nothing; unset where Loom admits the gang itself.",
    )
    nextAttemptTime: datetime | None = Field(
        default=None, description="The next gang is created no earlier than this (backoff after GangTimeout)."
    )


class TrainingJob(Resource):
    info: ClassVar[ResourceInfo] = ResourceInfo(
        kind="TrainingJob",
        plural="trainingjobs",
        short_names=("ltj",),
        printer_columns=(
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Replicas", ".status.replicas", "integer"),
            PrinterColumn("Ready", ".status.readyReplicas", "integer"),
            PrinterColumn("Restarts", ".status.restartCount", "integer"),
            PrinterColumn("Gang", '.status.conditions[?(@.type=="GangScheduled")].reason'),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
            PrinterColumn("Attempt", ".status.attempt", "integer", priority=1),
        ),
    )

    kind: str = "TrainingJob"
    spec: TrainingJobSpec
    status: TrainingJobStatus | None = None
