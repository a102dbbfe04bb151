"""TrainingJob decisions about the current gang: whether it succeeded, failed, changed, timed out or
could not be placed, restarting it (a new attempt), resizing an elastic one, and creating and admitting
its pods.

Placement is all-or-nothing on every path (trainingjob.gang_path): kube-scheduler binds a PodGroup's
pods together or none; Loom lifts its gate from every pod at once, when the whole gang fits. What the
scheduler reports decides the rest: a gang of which it could not place an admitted pod while others are
bound (a pod Loom does not create took the GPUs in between) is released within a reconcile, or an
elastic one restarted at the size that was bound; the GangScheduled condition says where the gang is.

Pure: no I/O and no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from loom.api.common import ConditionStatus
from loom.builders.trainingjob import (
    GANG_GATE,
    MASTER_ROLE,
    SPEC_HASH,
    GangPath,
    desired_service,
    pod_gpus,
    spec_hash,
)
from loom.builders.trainingjob_conditions import Event
from loom.builders.trainingjob_decision import (
    ELASTIC_GROW_AFTER,
    ELASTIC_SCALE_DOWN,
    ELASTIC_SCALE_UP,
    ELASTIC_SHRINK_AFTER,
    GANG_BACKOFF_BASE,
    GANG_BACKOFF_MAX,
    MAX_EXCLUDED_NODES,
    DecisionBase,
)
from loom.builders.trainingjob_elastic import largest_fit
from loom.builders.trainingjob_gang import fits, has_gang_gate, is_gated
from loom.builders.trainingjob_podgroup import (
    desired_pod_group,
    is_unschedulable,
    pod_group_name,
    unschedulable_detail,
)
from loom.builders.trainingjob_view import (
    GANG_SCHEDULED,
    NODES_EXCLUDED,
    RESTARTING,
    RUNNING,
    is_deleting,
    node_state,
    parse_time,
)
from loom.health.failures import Action, Failure, FailureKind, classify, is_terminal

# After a shrink the scheduler disagreed with Loom's count: growing again waits this long in Running.
ELASTIC_GROW_AFTER_SHRINK = timedelta(seconds=30)


@dataclass(frozen=True)
class Stuck:
    """Pods of an admitted gang the scheduler could not place, and how many of the gang it did bind."""

    bound: int
    unplaced: list[Mapping[str, Any]]


def _is_bound(pod: Mapping[str, Any]) -> bool:
    return bool(pod.get("spec", {}).get("nodeName"))


class GangPlan(DecisionBase):
    def _gang_succeeded(self) -> bool:
        """Rank 0 succeeded when there is a master; otherwise every replica of the gang did."""
        current = self._current()
        succeeded = {
            p["metadata"]["name"] for p in current if p.get("status", {}).get("phase") == "Succeeded"
        }
        if not succeeded:  # the common case: no gang is built to learn it
            return False
        expected = [p["metadata"]["name"] for p in self._expected()]
        if not expected:
            return False
        if MASTER_ROLE in self.spec.replicaSpecs:
            return expected[0] in succeeded
        return all(name in succeeded for name in expected)

    def _gang_failure(self) -> Failure | None:
        """The failure that ends the current gang: a permanent one if any, else the first retryable."""
        policies = {role: spec.restartPolicy for role, spec in self.spec.replicaSpecs.items()}
        failures: list[Failure] = []
        for pod in sorted(self._live_current(), key=lambda p: p["metadata"]["name"]):
            found = classify(pod, policies.get(self._role(pod), ""), node_state(pod, self.cluster))
            if found is not None:
                failures.append(found)
        if self.c.is_true(RUNNING):  # a pod of a gang that ran is gone: the gang is broken
            present = {p["metadata"]["name"] for p in self._current()}
            for pod in self._expected():
                if pod["metadata"]["name"] not in present:
                    failures.append(Failure(FailureKind.DELETED, Action.RESTART, pod["metadata"]["name"]))
        permanent = [f for f in failures if f.action is Action.FAIL]
        return next(iter(permanent or failures), None)

    def _gang_running(self, expected: Sequence[Mapping[str, Any]]) -> bool:
        by_name = {p["metadata"]["name"]: p for p in self._live_current()}
        return all(
            (pod := by_name.get(e["metadata"]["name"])) is not None
            and pod.get("status", {}).get("phase") == "Running"
            and not is_deleting(pod)
            for e in expected
        )

    def _spec_changed(self) -> bool:
        """Was the live gang built from an older pod spec (templates, replicas, nproc, elastic)?"""
        current = spec_hash(self.job)
        return any(
            p["metadata"].get("annotations", {}).get(SPEC_HASH, current) != current
            for p in self._live_current()
        )

    def _gang_timed_out(self) -> bool:
        if self.c.is_true(RUNNING):
            return False
        created = self._first_created(self._live_current())
        if created is None:
            return False
        deadline = created + timedelta(seconds=self.spec.runPolicy.schedulingTimeoutSeconds)
        if self.now < deadline:
            self._wake_at(deadline)
            return False
        return True

    # -- ending a gang -----------------------------------------------------------------------------
    def _restart(self, reason: str, message: str, *, counted: bool, lost: Sequence[str] = ()) -> None:
        """End the current gang and start the next attempt (its pods are created in this same plan)."""
        old = self.st.attempt
        for pod in self._current():
            self._delete(pod)
        self.st.attempt += 1
        self._delete_groups(keep=self.st.attempt)
        if counted:
            self.st.restartCount += 1
        if lost:
            self._exclude(lost)
        if self.spec.elastic is not None:
            self.st.replicas = 0  # chosen again when the new gang is created
        text = f"{reason}: attempt {old} ended ({message}); starting attempt {self.st.attempt}"
        if counted:
            text += f", restart {self.st.restartCount} of {self.spec.runPolicy.backoffLimit}"
        self.c.set(RESTARTING, True, reason, text, quiet=True)
        self.plan.events.append(Event("Warning", "Restarting", text))
        self.c.unset(RUNNING, reason, text)
        self.plan.restart_reason = reason

    def _exclude(self, lost: Sequence[str]) -> None:
        """Later gangs avoid the `lost` nodes too; at most MAX_EXCLUDED_NODES, the most recently lost."""
        known = [n for n in self.st.excludedNodes if n not in lost] + sorted(set(lost))
        self.st.excludedNodes = known[-MAX_EXCLUDED_NODES:]
        dropped = known[:-MAX_EXCLUDED_NODES]
        if dropped:
            self.c.set(
                NODES_EXCLUDED,
                True,
                "ExclusionLimitReached",
                f"later gangs avoid only the {MAX_EXCLUDED_NODES} nodes lost most recently (the limit); "
                f"no longer avoided: {', '.join(dropped)}",
            )
        else:
            avoided = self.st.excludedNodes
            self.c.set(
                NODES_EXCLUDED,
                True,
                "NodesLost",
                f"later gangs avoid {len(avoided)} node(s) lost under earlier gangs: {', '.join(avoided)}",
            )

    def _release_gang(self, reason: str, message: str) -> None:
        """Delete the whole gang so that no partial gang holds GPUs; retry with backoff."""
        backoff = min(GANG_BACKOFF_BASE * 2**self.st.gangTimeouts, GANG_BACKOFF_MAX)
        self._restart(reason, message, counted=False)
        self.st.gangTimeouts += 1
        self.st.nextAttemptTime = self.now + backoff
        later = f"; next gang in {int(backoff.total_seconds())} s"
        cond = self.c.get(RESTARTING)
        if cond is not None:
            cond.message += later
        self.c.set(GANG_SCHEDULED, False, reason, f"the gang was released: {message}{later}")

    def _stuck_pods(self) -> Stuck | None:
        """Pods of the current gang, admitted to the scheduler, that it reported Unschedulable while it
        bound others (or, where Loom admitted the gang, at all: Loom cannot gate them again)."""
        if self.c.is_true(RUNNING):
            return None
        live = [p for p in self._live_current() if not is_terminal(p) and not is_deleting(p)]
        unplaced = [p for p in live if not _is_bound(p) and not is_gated(p) and is_unschedulable(p)]
        if not unplaced:
            return None
        bound = sum(1 for p in live if _is_bound(p))
        if not bound and self._path() is not GangPath.GATE:
            return None  # a PodGroup (or a gang scheduler's group) waits whole: nothing holds GPUs
        return Stuck(bound, unplaced)

    def _unstick(self, stuck: Stuck) -> None:
        size = self._size()
        names = ", ".join(sorted(p["metadata"]["name"] for p in stuck.unplaced))
        detail = unschedulable_detail(list(stuck.unplaced))
        what = f"the scheduler bound {stuck.bound} of {size} pods and could not place {names}"
        what += f" ({detail})" if detail else ""
        elastic = self.spec.elastic
        target = stuck.bound or size - 1
        if elastic is not None and elastic.minReplicas <= target < size:
            self._resize(target, ELASTIC_SCALE_DOWN, f"{what}; restarting with {target} replicas")
        else:
            self._release_gang("GangUnschedulable", f"{what}; the whole gang is released")

    # -- elastic sizing ----------------------------------------------------------------------------
    def _largest_fit(self, cap: int | None = None) -> int:
        own = [p["metadata"]["name"] for p in self.pods]
        free = self.cluster.free_without(str(self.job.metadata.get("namespace", "")), own)
        return largest_fit(self.job, self.st.excludedNodes, free, self.cluster.nodes, cap)

    def _resize(self, size: int, reason: str, message: str) -> None:
        """Restart an elastic job at `size` (not counted against backoffLimit; counted in resizes)."""
        self._restart(reason, message, counted=False)
        self.st.resizes += 1
        self.st.replicas = size

    def _elastic_resize(self) -> tuple[int, str, str] | None:
        """(size, reason, message) when an elastic job should restart at another size: a Running gang
        grows once more GPUs are free; a gang waiting to be placed shrinks to what the cluster holds."""
        elastic = self.spec.elastic
        if elastic is None:
            return None
        size = self._size()
        if self.c.is_true(RUNNING):
            return self._grow(size)
        live = self._live_current()
        if not live or size <= elastic.minReplicas or any(_is_bound(p) for p in live):
            return None
        fit = self._largest_fit()
        path = self._path()
        if path is GangPath.GATE and all(has_gang_gate(p) for p in live) and fit < size:
            return fit, ELASTIC_SCALE_DOWN, f"{size} replicas do not fit the free GPUs; {fit} do"
        group = self._group()
        if path is not GangPath.POD_GROUP or group is None or group.scheduled is not False:
            return None
        said = f"kube-scheduler cannot place {size} replicas (PodGroup {group.name}: {group.message})"
        if fit < size:
            return fit, ELASTIC_SCALE_DOWN, f"{said}; {fit} fit the free GPUs"
        since = group.since or self.now
        if self.now < since + ELASTIC_SHRINK_AFTER:
            self._wake_at(since + ELASTIC_SHRINK_AFTER)
            return None
        seconds = int(ELASTIC_SHRINK_AFTER.total_seconds())
        return size - 1, ELASTIC_SCALE_DOWN, f"{said} for {seconds} s; trying {size - 1}"

    def _grow(self, size: int) -> tuple[int, str, str] | None:
        elastic = self.spec.elastic
        running = self.c.get(RUNNING)
        if elastic is None or running is None or size >= elastic.maxReplicas:
            return None
        restarting = self.c.get(RESTARTING)
        shrunk = restarting is not None and restarting.message.startswith(ELASTIC_SCALE_DOWN)
        wait = ELASTIC_GROW_AFTER_SHRINK if shrunk else ELASTIC_GROW_AFTER
        since = running.lastTransitionTime or self.now
        if self.now < since + wait:
            self._wake_at(since + wait)
            return None
        fit = self._largest_fit()
        if fit > size:
            return fit, ELASTIC_SCALE_UP, f"capacity for {fit} replicas"
        self.plan.waiting_for_capacity = True  # woken up when GPUs are freed
        return None

    # -- creating, admitting and reporting the gang -------------------------------------------------
    def _run_gang(self) -> None:
        live = self._live_current()
        if not live and self.spec.elastic is not None:
            restarting = self.c.get(RESTARTING)
            shrunk = (
                restarting is not None
                and restarting.status == ConditionStatus.TRUE
                and restarting.reason == ELASTIC_SCALE_DOWN
            )
            self.st.replicas = self._largest_fit(cap=self.st.replicas if shrunk else None)
        self.st.replicas = self._size()
        path = self._path()
        self.st.podGroup = pod_group_name(self.job, self.st.attempt) if path is GangPath.POD_GROUP else None
        expected = self._expected()
        present = {p["metadata"]["name"]: p for p in live}
        missing = [p for p in expected if p["metadata"]["name"] not in present]
        if missing:
            if self.st.nextAttemptTime is not None and self.now < self.st.nextAttemptTime:
                self._wake_at(self.st.nextAttemptTime)
                self._count_replicas()
                return
            self.st.nextAttemptTime = None
            self.plan.service = desired_service(self.job, self.st.attempt)
            self.plan.create = missing
            if not live:
                self.plan.events.append(
                    Event(
                        "Normal", "GangCreated", f"creating {len(expected)} pods of attempt {self.st.attempt}"
                    )
                )
        if path is GangPath.POD_GROUP and self._group() is None:  # before its pods, so they queue at once
            self.plan.create_groups.append(desired_pod_group(self.job, self.st.attempt, len(expected)))
        admitted = self._admit(expected, present)
        self._count_replicas()
        if expected and self._gang_running(expected) and not self.c.is_true(RUNNING):
            self._running(live)
        self._report(expected, present, path, admitted)

    def _admit(self, expected: Sequence[Mapping[str, Any]], present: Mapping[str, Mapping[str, Any]]) -> bool:
        """Lift the gang gate of every pod of the gang at once, when the whole gang fits; True when the
        gang is admitted (or holds no gate of Loom's)."""
        gated = [present.get(p["metadata"]["name"], p) for p in expected]
        gated = [p for p in gated if has_gang_gate(p)]
        if not gated:
            return True
        specs = [e["spec"] for e in expected if has_gang_gate(present.get(e["metadata"]["name"], e))]
        if not fits(self.cluster.free, self.cluster.nodes, specs):
            self.plan.waiting_for_capacity = True
            return False
        for pod in gated:
            left = [g for g in pod["spec"].get("schedulingGates") or [] if g.get("name") != GANG_GATE]
            self.plan.ungate.append((pod["metadata"]["name"], left))
        return True

    def _report(
        self,
        expected: Sequence[Mapping[str, Any]],
        present: Mapping[str, Mapping[str, Any]],
        path: GangPath,
        admitted: bool,
    ) -> None:
        """GangScheduled: True once every pod of the gang is bound, else why none is (yet); a gang that
        waits for capacity says so in Running too."""
        count = len(expected)
        gpus = sum(pod_gpus(e["spec"]) for e in expected)
        gang = f"the gang of {count} pods ({gpus} GPUs)"
        pods = [present[e["metadata"]["name"]] for e in expected if e["metadata"]["name"] in present]
        if count and len(pods) == count and all(_is_bound(p) for p in pods):
            by = {
                GangPath.POD_GROUP: f"kube-scheduler bound all of PodGroup {self.st.podGroup} at once",
                GangPath.GATE: "Loom admitted it whole, kube-scheduler bound every pod",
                GangPath.SCHEDULER: "its gang scheduler bound every pod",
            }[path]
            self.c.set(GANG_SCHEDULED, True, "Scheduled", f"{gang} is placed: {by}", quiet=True)
            return
        waiting: tuple[str, str] | None = None
        if path is GangPath.POD_GROUP:
            group = self._group()
            if group is not None and group.scheduled is False:
                detail = unschedulable_detail(pods)
                message = f"kube-scheduler cannot place {gang} at once, so it binds none (PodGroup "
                message += f"{group.name}: {group.message or group.reason}{'; ' + detail if detail else ''})"
                waiting = (group.reason or "Unschedulable", message)
            elif group is not None and group.scheduled:
                placed = f"kube-scheduler placed {gang}; binding its pods"
                self.c.set(GANG_SCHEDULED, False, "Binding", placed)
            else:
                queued = f"PodGroup {self.st.podGroup} (minCount {count}) waits for kube-scheduler"
                self.c.set(GANG_SCHEDULED, False, "WaitingForScheduler", f"{queued}; no pod is bound")
        elif path is GangPath.GATE and not admitted:
            waiting = ("WaitingForCapacity", f"{gang} does not fit the free GPUs yet; no pod of it is bound")
        elif path is GangPath.GATE:
            self.c.set(
                GANG_SCHEDULED,
                False,
                "Admitted",
                f"Loom admitted {gang} (it fits the free GPUs); kube-scheduler is binding its pods",
            )
        else:
            self.c.set(GANG_SCHEDULED, False, "WaitingForScheduler", f"{gang} waits for its gang scheduler")
        if waiting is not None:
            self.c.set(GANG_SCHEDULED, False, *waiting)
            self.c.set(RUNNING, False, *waiting)

    def _running(self, live: Sequence[Mapping[str, Any]]) -> None:
        restarted = self.c.is_true(RESTARTING)
        message = f"all {self.st.replicas} pods of attempt {self.st.attempt} are Running"
        self.c.set(RUNNING, True, "GangRunning", message)
        restarting = self.c.get(RESTARTING)
        if restarting is not None:  # keep what the last restart was about
            self.c.unset(RESTARTING, "GangRunning", restarting.message)
        self.st.gangTimeouts = 0
        since = (
            self._first_created(live) if restarted else parse_time(self.job.metadata.get("creationTimestamp"))
        )
        if since is not None:
            self.plan.running_after = max((self.now - since).total_seconds(), 0.0)
