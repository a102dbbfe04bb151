"""Ready / Reconciling / Stalled per kind and phase (builders/readiness.py), read the way kstatus reads
them: Reconciling=True before Stalled=True before Ready. The real library reads live objects in
e2e/test_gitops_status.py; here, each decision on its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from loom.api.common import Condition, ConditionStatus
from loom.api.featurepipeline import BackfillStatus, FeaturePipelineStatus
from loom.api.inferenceservice import InferenceServiceStatus, ModelStatus
from loom.api.trainingjob import TrainingJobStatus
from loom.builders import readiness
from loom.builders.readiness import Verdict, settle

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def cond(type_: str, ok: bool, reason: str = "", message: str = "") -> Condition:
    status = ConditionStatus.TRUE if ok else ConditionStatus.FALSE
    return Condition(type=type_, status=status, reason=reason, message=message, lastTransitionTime=NOW)


def kstatus(conditions: list[Condition]) -> str:
    """kstatus' order for an object whose generation is observed (sigs.k8s.io/cli-utils, status.Compute)."""
    true = {c.type for c in conditions if c.status == ConditionStatus.TRUE}
    if "Reconciling" in true:
        return "InProgress"
    if "Stalled" in true:
        return "Failed"
    ready = next((c for c in conditions if c.type == "Ready"), None)
    if ready is None:
        return "Current"
    return "Current" if ready.status == ConditionStatus.TRUE else "InProgress"


@pytest.mark.parametrize(
    ("phase", "conditions", "expected", "reason"),
    [
        pytest.param("Pending", [], "InProgress", "Pending", id="pending"),
        pytest.param(
            "Created",
            [cond("Created", True, "JobCreated"), cond("Running", False, "WaitingForCapacity", "9 GPUs")],
            "InProgress",
            "Created",
            id="waiting-for-capacity",
        ),
        pytest.param(
            "Running",
            [cond("Running", True, "GangRunning", "3/3 running")],
            "Current",
            "Running",
            id="running",
        ),
        pytest.param(
            "Restarting",
            [cond("Running", False, "GangRestarting"), cond("Restarting", True, "ExitCode", "exit 137")],
            "InProgress",
            "Restarting",
            id="restarting",
        ),
        pytest.param(
            "Succeeded",
            [cond("Succeeded", True, "JobSucceeded", "done")],
            "Current",
            "Succeeded",
            id="succeeded",
        ),
        pytest.param(
            "Failed",
            [cond("Failed", True, "BackoffLimitExceeded", "exit 139; backoffLimit 1 reached")],
            "Failed",
            "Failed",
            id="failed",
        ),
        pytest.param(
            "Suspended", [cond("Suspended", True, "JobSuspended")], "InProgress", "Suspended", id="suspended"
        ),
    ],
)
def test_trainingjob(phase: str, conditions: list[Condition], expected: str, reason: str) -> None:
    st = TrainingJobStatus(phase=phase, conditions=conditions)  # type: ignore[arg-type]
    readiness.trainingjob(st, [], 3, NOW)
    assert kstatus(st.conditions) == expected
    ready = next(c for c in st.conditions if c.type == "Ready")
    assert ready.reason == reason and ready.observedGeneration == 3
    if phase == "Failed":
        stalled = next(c for c in st.conditions if c.type == "Stalled")
        assert stalled.reason == "BackoffLimitExceeded" and "backoffLimit 1" in stalled.message
    if phase == "Created":
        assert next(c for c in st.conditions if c.type == "Reconciling").message == "9 GPUs"


def test_trainingjob_leaving_failure_drops_stalled_and_keeps_transition_times() -> None:
    earlier = NOW - timedelta(hours=1)
    st = TrainingJobStatus(phase="Failed", conditions=[cond("Failed", True, "ExitCode", "exit 1")])  # type: ignore[arg-type]
    readiness.trainingjob(st, [], 1, earlier)
    again = st.model_copy(deep=True)
    readiness.trainingjob(again, st.conditions, 1, NOW)
    assert again.conditions == st.conditions, "a repeated decision changes nothing (no status patch)"
    resumed = TrainingJobStatus(phase="Running", conditions=[cond("Running", True, "GangRunning")])  # type: ignore[arg-type]
    readiness.trainingjob(resumed, again.conditions, 2, NOW)
    assert {c.type for c in resumed.conditions} == {"Running", "Ready"}
    assert next(c for c in resumed.conditions if c.type == "Ready").lastTransitionTime == NOW


def isvc(
    phase: str, ready: int, desired: int, rollout: Condition, model: ModelStatus | None = None
) -> InferenceServiceStatus:
    return InferenceServiceStatus(
        phase=phase,  # type: ignore[arg-type]
        readyReplicas=ready,
        desiredReplicas=desired,
        modelStatus=model or ModelStatus(),
        conditions=[cond("Ready", ready > 0 or desired == 0, "PodsReady"), rollout],
    )


@pytest.mark.parametrize(
    ("status", "expected", "why"),
    [
        pytest.param(
            isvc("Pending", 0, 2, cond("RolloutComplete", False, "Progressing", "0/2")),
            "InProgress",
            "RollingOut",
            id="new",
        ),
        pytest.param(
            isvc("Ready", 2, 2, cond("RolloutComplete", True, "Complete")), "Current", None, id="serving"
        ),
        pytest.param(
            isvc("Ready", 2, 2, cond("RolloutComplete", False, "Progressing", "canary")),
            "InProgress",
            "RollingOut",
            id="canary",
        ),
        pytest.param(
            isvc("Degraded", 2, 3, cond("RolloutComplete", True, "Complete")),
            "InProgress",
            "Scaling",
            id="scaling-up",
        ),
        pytest.param(
            isvc("Ready", 0, 0, cond("RolloutComplete", True, "Complete")),
            "Current",
            None,
            id="scaled-to-zero",
        ),
        pytest.param(
            isvc("Degraded", 2, 2, cond("RolloutComplete", False, "RolledBack", "revision b rolled back")),
            "Failed",
            "RolledBack",
            id="rolled-back",
        ),
        pytest.param(
            isvc(
                "Failed",
                0,
                1,
                cond("RolloutComplete", False, "Progressing"),
                ModelStatus(state="FailedToLoad", reason="SourceChanged"),
            ),  # type: ignore[arg-type]
            "Failed",
            "SourceChanged",
            id="model-fails-to-load",
        ),
    ],
)
def test_inferenceservice(status: InferenceServiceStatus, expected: str, why: str | None) -> None:
    readiness.inferenceservice(status, [], 1, NOW)
    assert kstatus(status.conditions) == expected
    extra = [c for c in status.conditions if c.type in ("Reconciling", "Stalled")]
    assert [c.reason for c in extra] == ([why] if why else [])


def pipeline(
    phase: str, ready: Condition, backfill: BackfillStatus | None = None, engine: Condition | None = None
) -> FeaturePipelineStatus:
    return FeaturePipelineStatus(
        phase=phase,  # type: ignore[arg-type]
        backfill=backfill,
        conditions=[ready, *([engine] if engine else [])],
    )


@pytest.mark.parametrize(
    ("status", "expected", "why"),
    [
        pytest.param(
            pipeline(
                "Running",
                cond("Ready", True, "Succeeded"),
                BackfillStatus(windowsTotal=5, succeeded=2, running=2),
            ),
            "InProgress",
            "Backfilling",
            id="backfill-under-way",
        ),
        pytest.param(
            pipeline(
                "Succeeded", cond("Ready", True, "Succeeded"), BackfillStatus(windowsTotal=5, succeeded=5)
            ),
            "Current",
            None,
            id="backfill-done",
        ),
        pytest.param(
            pipeline("Scheduled", cond("Ready", True, "Scheduled")), "Current", None, id="scheduled"
        ),
        pytest.param(
            pipeline("Failed", cond("Ready", False, "RunFailed", "window x failed")),
            "Failed",
            "RunFailed",
            id="run-failed",
        ),
        pytest.param(
            pipeline(
                "Pending",
                cond("Ready", False, "EngineNotInstalled"),
                engine=cond("EngineAvailable", False, "CRDNotInstalled", "no SparkApplication CRD"),
            ),
            "Failed",
            "EngineNotInstalled",
            id="engine-missing",
        ),
        pytest.param(
            pipeline("Streaming", cond("Ready", True, "ConsumersReady")), "Current", None, id="streaming"
        ),
        pytest.param(
            pipeline("Pending", cond("Ready", False, "ConsumersNotReady")),
            "InProgress",
            None,
            id="consumers-starting",
        ),
        pytest.param(
            pipeline("Suspended", cond("Ready", False, "NoRunYet")), "InProgress", None, id="suspended"
        ),
        pytest.param(
            pipeline("Suspended", cond("Ready", False, "NoRunYet"), BackfillStatus(windowsTotal=3)),
            "InProgress",
            None,
            id="suspended-with-windows-left",
        ),
    ],
)
def test_featurepipeline(status: FeaturePipelineStatus, expected: str, why: str | None) -> None:
    readiness.featurepipeline(status, [], 1, NOW)
    assert kstatus(status.conditions) == expected
    extra = [c for c in status.conditions if c.type in ("Reconciling", "Stalled")]
    assert [c.reason for c in extra] == ([why] if why else [])


def test_settle_keeps_other_conditions_and_never_reconciles_while_stalled() -> None:
    out = settle(
        [cond("Running", True), cond("Reconciling", True), cond("Stalled", True)],
        [],
        ready=None,
        reconciling=Verdict("X", "x"),
        stalled=Verdict("Y", "y"),
        generation=1,
        now=NOW,
    )
    assert [(c.type, c.reason) for c in out] == [("Running", ""), ("Stalled", "Y")]
