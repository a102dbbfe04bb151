"""Serving pods: model state from pod status, unhealthy pods, rollout failures, and replacements.

Pure: decisions over pod, node and Deployment dicts as the API server returns them; `now` is a
parameter. The model state is read from the sidecar's container status, and works the same on real
kubelets and on KWOK's simulated ones:
- the sidecar is a native sidecar: `started` turns true once its startup probe (`/readyz`, the model
  is staged) passes, so started means Loaded, running but not started means Loading;
- it exits 2 (invalid model), 3 (source unreachable) or 4 (no space), with the reason as its
  termination message; a real kubelet restarts it (lastState.terminated, CrashLoopBackOff), while
  KWOK's `kwok.loom.ml/exit-code` stage fails the whole pod with that code;
- a pod evicted for outgrowing the memory emptyDir's sizeLimit failed to load as well.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loom.api.inferenceservice import (
    GPU_HEALTH_CONDITION,
    GPU_HEALTH_LABEL,
    GPU_UNHEALTHY,
    GPU_UNHEALTHY_TAINT,
    LABEL_REVISION,
    MODEL_VOLUME,
    SIDECAR_CONTAINER,
    HealthSpec,
    ModelState,
)

# Exit codes of `loom-sidecar serve` -> (reason, what to do). Anything else is SidecarFailed.
SIDECAR_EXIT_CODES: Mapping[int, tuple[str, str]] = {
    2: ("InvalidModel", "the weights are not a valid model of model.format; fix model.uri"),
    3: ("SourceUnreachable", "the sidecar could not read model.uri; check the URL or path and credentials"),
    4: ("NoSpace", "the model does not fit in its emptyDir; raise model.sizeLimit"),
    8: (
        "SourceChanged",
        "model.uri was replaced while the sidecar staged it; the sidecar restarts and stages the new "
        "version (publish new weights under a new URI to roll them out as a revision)",
    ),
    9: (
        "SourceForbidden",
        "the store refused the sidecar's credentials for model.uri (or there were none); check "
        "model.credentials and what they may read",
    ),
    10: (
        "SourceThrottled",
        "the store kept throttling the sidecar past its retries; it restarts and tries again",
    ),
}
_STARTUP_KILL_CODES = {137, 143}  # SIGKILL / SIGTERM from the kubelet when the startup probe gave up
_IMAGE_FAILURES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"}


@dataclass(frozen=True)
class PodModel:
    """The model's state in one pod. `gone`: the pod failed for a reason unrelated to the model."""

    state: ModelState
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    gone: bool = False


@dataclass(frozen=True)
class PodView:
    """What the InferenceService controller needs of one pod."""

    name: str
    uid: str
    revision: str
    node: str | None
    ip: str | None
    created: str
    terminating: bool
    failed: bool  # phase Failed: no longer counted by its ReplicaSet, which has replaced it
    ready: bool
    ready_seconds: float | None  # Ready this long (since the Ready condition turned True)
    model: PodModel
    not_ready_seconds: float | None  # NotReady this long after having been Ready; None otherwise
    crash_loop: tuple[str, int] | None  # (container, restarts) when one is in CrashLoopBackOff


@dataclass(frozen=True)
class Issue:
    pod: str
    reason: str
    message: str
    load_failure: bool = False  # the pod failed to stage the model (reported, not replaced)
    exit_code: int | None = None  # the sidecar's, when it failed to stage the model


def parse_time(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _statuses(pod: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    return list((pod.get("status") or {}).get(key) or [])


def _condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return dict(condition)
    return None


def sidecar_status(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    for status in _statuses(pod, "initContainerStatuses"):
        if status.get("name") == SIDECAR_CONTAINER:
            return status
    return None


def _exit_failure(code: int, reason: str, message: str, who: str) -> PodModel:
    if reason == "OOMKilled":
        return PodModel(
            ModelState.FAILED_TO_LOAD,
            "OOMKilled",
            f"{who} was OOM-killed while staging the model; raise model.sizeLimit",
            code,
        )
    if code in SIDECAR_EXIT_CODES:
        name, hint = SIDECAR_EXIT_CODES[code]
        detail = message.strip().splitlines()[-1] if message.strip() else ""
        return PodModel(
            ModelState.FAILED_TO_LOAD, name, f"{who} exited with {code}: {detail or hint} ({hint})", code
        )
    if code in _STARTUP_KILL_CODES:
        return PodModel(
            ModelState.FAILED_TO_LOAD,
            "StartupProbeFailed",
            f"{who} did not report the model staged (/readyz) within the load timeout and was killed; "
            "raise model.loadTimeoutSeconds if the model is just slow to fetch",
            code,
        )
    return PodModel(
        ModelState.FAILED_TO_LOAD, "SidecarFailed", f"{who} exited with {code}: {message.strip()}", code
    )


def _sidecar_failure(status: Mapping[str, Any]) -> PodModel | None:
    state = status.get("state") or {}
    if status.get("started"):
        return None
    for terminated in (state.get("terminated"), (status.get("lastState") or {}).get("terminated")):
        if terminated and terminated.get("exitCode", 0) != 0:
            return _exit_failure(
                int(terminated["exitCode"]),
                terminated.get("reason") or "",
                terminated.get("message") or "",
                "the model sidecar",
            )
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in _IMAGE_FAILURES:
        return PodModel(ModelState.FAILED_TO_LOAD, waiting["reason"], waiting.get("message", ""))
    return None


def _failed_pod(pod: Mapping[str, Any]) -> PodModel:
    status = pod.get("status") or {}
    message = status.get("message") or ""
    if status.get("reason") == "Evicted":
        if MODEL_VOLUME in message or "emptydir" in message.lower():
            return PodModel(
                ModelState.FAILED_TO_LOAD,
                "ModelExceedsSizeLimit",
                f"evicted: {message} The staged model outgrew model.sizeLimit; raise it.",
            )
        return PodModel(ModelState.PENDING, "Evicted", message, gone=True)
    sidecar = sidecar_status(pod)
    if sidecar is not None and (failure := _sidecar_failure(sidecar)) is not None:
        return failure
    for container in _statuses(pod, "containerStatuses"):
        terminated = (container.get("state") or {}).get("terminated") or {}
        code = int(terminated.get("exitCode", 0))
        if code in SIDECAR_EXIT_CODES or terminated.get("reason") == "OOMKilled":
            who = f"container {container.get('name')}"
            return _exit_failure(code, terminated.get("reason") or "", terminated.get("message") or "", who)
    return PodModel(ModelState.PENDING, "PodFailed", message or "the pod failed", gone=True)


def pod_model(pod: Mapping[str, Any]) -> PodModel:
    """Pending (not scheduled) -> Loading -> Loaded, or FailedToLoad with reason, message, exit code."""
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return _failed_pod(pod)
    sidecar = sidecar_status(pod)
    if sidecar is not None:
        if (failure := _sidecar_failure(sidecar)) is not None:
            return failure
        if sidecar.get("started"):
            return PodModel(ModelState.LOADED)
        if (sidecar.get("state") or {}).get("running"):
            return PodModel(ModelState.LOADING, "Staging", "the sidecar is staging the model")
    if not (pod.get("spec") or {}).get("nodeName"):
        scheduled = _condition(pod, "PodScheduled") or {}
        return PodModel(ModelState.PENDING, scheduled.get("reason", ""), scheduled.get("message", ""))
    return PodModel(ModelState.LOADING, "PodInitializing", "waiting for the sidecar to start")


def model_load_seconds(pod: Mapping[str, Any]) -> float | None:
    """Seconds the sidecar took to stage the model: from its container's start to the pod's
    Initialized condition turning True (a native sidecar counts once its startup probe, the model
    staged, passed); None until the model is Loaded or when either time is missing."""
    sidecar = sidecar_status(pod)
    if sidecar is None or not sidecar.get("started"):
        return None
    started = parse_time(((sidecar.get("state") or {}).get("running") or {}).get("startedAt"))
    initialized = _condition(pod, "Initialized") or {}
    done = parse_time(initialized.get("lastTransitionTime")) if initialized.get("status") == "True" else None
    if started is None or done is None:
        return None
    return max(0.0, (done - started).total_seconds())


def is_ready(pod: Mapping[str, Any]) -> bool:
    condition = _condition(pod, "Ready")
    return bool(condition and condition.get("status") == "True")


def ready_seconds(pod: Mapping[str, Any], now: datetime) -> float | None:
    condition = _condition(pod, "Ready")
    if not condition or condition.get("status") != "True":
        return None
    since = parse_time(condition.get("lastTransitionTime"))
    return max(0.0, (now - since).total_seconds()) if since else 0.0


def not_ready_seconds(pod: Mapping[str, Any], now: datetime) -> float | None:
    """Seconds NotReady after having been Ready: the Ready condition turned False after every
    container had started (a pod that never became Ready keeps its earlier transition time)."""
    condition = _condition(pod, "Ready")
    if (
        not condition
        or condition.get("status") == "True"
        or (pod.get("status") or {}).get("phase") != "Running"
    ):
        return None
    since = parse_time(condition.get("lastTransitionTime"))
    containers = _statuses(pod, "containerStatuses")
    starts = [parse_time(((c.get("state") or {}).get("running") or {}).get("startedAt")) for c in containers]
    if since is None or not starts or any(s is None or s > since for s in starts):
        return None
    return max(0.0, (now - since).total_seconds())


def crash_loop(pod: Mapping[str, Any]) -> tuple[str, int] | None:
    for status in _statuses(pod, "containerStatuses") + _statuses(pod, "initContainerStatuses"):
        if ((status.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff":
            return str(status.get("name")), int(status.get("restartCount", 0))
    return None


def view(pod: Mapping[str, Any], now: datetime) -> PodView:
    meta = pod.get("metadata") or {}
    return PodView(
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        revision=(meta.get("labels") or {}).get(LABEL_REVISION, ""),
        node=(pod.get("spec") or {}).get("nodeName"),
        ip=(pod.get("status") or {}).get("podIP"),
        created=str(meta.get("creationTimestamp") or ""),
        terminating=bool(meta.get("deletionTimestamp")),
        failed=(pod.get("status") or {}).get("phase") == "Failed",
        ready=is_ready(pod),
        ready_seconds=ready_seconds(pod, now),
        model=pod_model(pod),
        not_ready_seconds=not_ready_seconds(pod, now),
        crash_loop=crash_loop(pod),
    )


def gpu_unhealthy(node: Mapping[str, Any]) -> str | None:
    """Why a node's GPUs are unhealthy (label loom.ml/gpu-health=unhealthy, GPUHealthy=False, or the
    taint loom.ml/gpu-unhealthy that Loom's GPU agent sets with the condition), or None."""
    meta = node.get("metadata") or {}
    if (meta.get("labels") or {}).get(GPU_HEALTH_LABEL) == GPU_UNHEALTHY:
        return f"node {meta.get('name')} is labelled {GPU_HEALTH_LABEL}={GPU_UNHEALTHY}"
    condition = _condition(node, GPU_HEALTH_CONDITION)
    if condition and condition.get("status") == "False":
        return f"node {meta.get('name')}: {GPU_HEALTH_CONDITION}=False {condition.get('message', '')}".strip()
    taints = (node.get("spec") or {}).get("taints") or []
    if any(t.get("key") == GPU_UNHEALTHY_TAINT for t in taints):
        return f"node {meta.get('name')} is tainted {GPU_UNHEALTHY_TAINT}"
    return None


# --- revisions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionPods:
    """The pods of one revision, summed up. `failure`: the latest load failure among them."""

    revision: str
    pods: int = 0
    ready: int = 0
    loaded: int = 0
    loading: int = 0
    failure: PodModel | None = None

    @property
    def state(self) -> ModelState:
        if self.loaded:
            return ModelState.LOADED
        if self.failure:
            return ModelState.FAILED_TO_LOAD
        return ModelState.LOADING if self.loading else ModelState.PENDING


def live(views: Iterable[PodView]) -> list[PodView]:
    """Pods that count: not terminating, not failed for reasons unrelated to the model."""
    return [v for v in views if not v.terminating and not v.model.gone]


def summarize(views: Iterable[PodView], revision: str) -> RevisionPods:
    pods = [v for v in live(views) if v.revision == revision]
    failed = sorted((v for v in pods if v.model.state == ModelState.FAILED_TO_LOAD), key=lambda v: v.created)
    running = [v for v in pods if v.model.state != ModelState.FAILED_TO_LOAD]
    return RevisionPods(
        revision=revision,
        pods=len(running),
        ready=sum(1 for v in running if v.ready and v.model.state == ModelState.LOADED),
        loaded=sum(1 for v in running if v.model.state == ModelState.LOADED),
        loading=sum(1 for v in running if v.model.state == ModelState.LOADING),
        failure=failed[-1].model if failed else None,
    )


def rollout_failure(
    views: Sequence[PodView], revision: str, deployment: Mapping[str, Any] | None, spec: HealthSpec
) -> Issue | None:
    """Why a revision being rolled out must be rolled back, or None: a pod failed to load the model,
    a pod crash-loops or stayed NotReady after having been Ready, or the Deployment stopped progressing."""
    pods = [v for v in live(views) if v.revision == revision]
    for v in pods:
        if v.model.state == ModelState.FAILED_TO_LOAD:
            return Issue(
                v.name, v.model.reason, v.model.message, load_failure=True, exit_code=v.model.exit_code
            )
    for v in pods:
        if (issue := _pod_issue(v, None, spec)) is not None:
            return Issue(
                v.name, "ReadinessFailed" if issue.reason == "NotReady" else issue.reason, issue.message
            )
    progressing = _condition(deployment or {}, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Issue("", "ProgressDeadlineExceeded", progressing.get("message", ""))
    return None


# --- replacement -----------------------------------------------------------------------------------


def _pod_issue(v: PodView, node_problem: str | None, spec: HealthSpec) -> Issue | None:
    if v.crash_loop and v.crash_loop[1] >= spec.crashLoopRestarts:
        container, restarts = v.crash_loop
        return Issue(v.name, "CrashLoopBackOff", f"container {container} crash-looping ({restarts} restarts)")
    if v.not_ready_seconds is not None and v.not_ready_seconds >= spec.notReadySeconds:
        return Issue(v.name, "NotReady", f"NotReady for over {spec.notReadySeconds}s after having been Ready")
    if node_problem and spec.replaceOnUnhealthyGPU:
        return Issue(v.name, "GPUUnhealthy", node_problem)
    return None


@dataclass(frozen=True)
class Replacements:
    delete: tuple[PodView, ...] = ()  # at most one pod: replace one at a time
    issues: tuple[Issue, ...] = ()  # every unhealthy pod and every pod that failed to load, for status
    surge: int = 0  # extra replica wanted so a Ready-but-unhealthy pod can go without dropping below min


def plan_replacements(
    views: Sequence[PodView],
    revisions: Iterable[str],
    unhealthy_nodes: Mapping[str, str],
    spec: HealthSpec,
    min_ready: int,
    expected: int,
) -> Replacements:
    """Which pod of the given revisions to delete now (its Deployment makes a new one elsewhere).

    One at a time: nothing while the last replacement is not yet created (fewer pods than the
    `expected` replicas); a Ready pod only when no other pod is still starting and deleting it keeps
    at least `min_ready` Ready pods, else one surge replica is asked for. NotReady pods go first:
    deleting them costs no serving capacity. Terminating pods no longer count (nor serve).
    """
    wanted = set(revisions)
    failures = tuple(
        Issue(v.name, v.model.reason, v.model.message, load_failure=True)
        for v in live(views)
        if v.model.state == ModelState.FAILED_TO_LOAD
    )
    pods = [v for v in live(views) if not v.failed and v.model.state != ModelState.FAILED_TO_LOAD]
    issues = tuple(
        issue
        for v in pods
        if v.revision in wanted
        and (issue := _pod_issue(v, unhealthy_nodes.get(v.node or ""), spec)) is not None
    )
    if not issues or len(pods) < expected:
        return Replacements(issues=issues + failures)
    by_name = {v.name: v for v in pods}
    victims = sorted((by_name[i.pod] for i in issues), key=lambda v: (v.ready, v.created))
    ready = sum(1 for v in pods if v.ready)
    starting = any(not v.ready and v.name not in {i.pod for i in issues} for v in pods)
    floor = max(min_ready, 1)
    issues += failures
    for victim in victims:
        if not victim.ready:
            return Replacements(delete=(victim,), issues=issues)
        if ready - 1 < floor:
            break
        if not starting:
            # Keep the surge replica (if that is what made room) until the victim is gone.
            return Replacements(delete=(victim,), issues=issues, surge=int(ready - 2 < floor))
        return Replacements(issues=issues)
    return Replacements(issues=issues, surge=1)
