"""What the agent writes to its node: the GPUHealthy condition and the loom.ml/gpu-unhealthy taint.

Pure: a verdict and the node as last read in, the patches to send out (None: nothing to write), so
the agent writes only on a change. The condition goes to the status subresource as a strategic
merge patch (node conditions merge by type: the kubelet's stay as they are); the taints are written
whole, with the resourceVersion they were computed from (a concurrent change is a conflict, and the
agent reads again), keeping every taint but Loom's.

The taint is NoSchedule, not NoExecute: Loom's controllers move the pods already there the way their
kinds need (a gang restarts together, serving replicas go one at a time without dropping below
minReplicas), which an eviction by the taint manager would not respect.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from loom.api.inferenceservice import GPU_HEALTH_CONDITION, GPU_UNHEALTHY_TAINT
from loom.gpu.policy import HealthState, Verdict, resumed

TAINT_EFFECT = "NoSchedule"
_SUFFIX = " [loom gpu-agent:"


def _condition(node: Mapping[str, Any]) -> dict[str, Any] | None:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == GPU_HEALTH_CONDITION:
            return dict(c)
    return None


def condition(verdict: Verdict, gpus: int, healthy_period: float) -> dict[str, str]:
    """The GPUHealthy condition for `verdict` (without times): reason, and a message naming each
    fault's GPU, UUID, XID or reading and the remedy."""
    if verdict.healthy:
        return {
            "type": GPU_HEALTH_CONDITION,
            "status": "True",
            "reason": "GPUsHealthy",
            "message": f"{gpus} GPU{'s' if gpus != 1 else ''} healthy{_SUFFIX} no fatal fault in the "
            f"last {healthy_period:g} s]",
        }
    text = "; ".join(f.message for f in verdict.faults)
    return {
        "type": GPU_HEALTH_CONDITION,
        "status": "False",
        "reason": verdict.reason,
        "message": f"{text}{_SUFFIX} taint {GPU_UNHEALTHY_TAINT} cleared {healthy_period:g} s after "
        "the last fault]",
    }


def status_patch(
    node: Mapping[str, Any], verdict: Verdict, gpus: int, healthy_period: float, now: datetime
) -> dict[str, Any] | None:
    """The strategic merge patch of the node's status that sets the condition, or None when the
    node already says so (lastTransitionTime moves only when the status does)."""
    want = condition(verdict, gpus, healthy_period)
    have = _condition(node) or {}
    if all(have.get(k) == v for k, v in want.items()):
        return None
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    transition = have.get("lastTransitionTime") if have.get("status") == want["status"] else stamp
    return {
        "status": {
            "conditions": [{**want, "lastHeartbeatTime": stamp, "lastTransitionTime": transition or stamp}]
        }
    }


def _is_ours(taint: Mapping[str, Any]) -> bool:
    return taint.get("key") == GPU_UNHEALTHY_TAINT


def taints_patch(node: Mapping[str, Any], verdict: Verdict) -> dict[str, Any] | None:
    """The merge patch of spec.taints (every other taint kept) with the node's resourceVersion, or None
    when the taint is already as it should be."""
    taints = list((node.get("spec") or {}).get("taints") or [])
    ours = [t for t in taints if _is_ours(t)]
    if verdict.healthy and not ours:
        return None
    if not verdict.healthy and ours == [{"key": GPU_UNHEALTHY_TAINT, "effect": TAINT_EFFECT}]:
        return None
    rest = [t for t in taints if not _is_ours(t)]
    if not verdict.healthy:
        rest.append({"key": GPU_UNHEALTHY_TAINT, "effect": TAINT_EFFECT})
    return {
        "metadata": {"resourceVersion": (node.get("metadata") or {}).get("resourceVersion")},
        "spec": {"taints": rest or None},
    }


def resumed_state(node: Mapping[str, Any], now: float) -> HealthState:
    """An agent starting on a node it (or an earlier agent) marked unhealthy keeps it so for one more
    healthy period; a node without the condition, or healthy, starts from nothing."""
    have = _condition(node)
    tainted = any(_is_ours(t) for t in (node.get("spec") or {}).get("taints") or [])
    if (have is None or have.get("status") != "False") and not tainted:
        return HealthState()
    have = have or {}
    message = str(have.get("message") or f"tainted {GPU_UNHEALTHY_TAINT} before the agent started")
    message = message.split(_SUFFIX)[0]
    return resumed(str(have.get("reason") or "GPUUnhealthy"), message, now)
