"""What a platform team installs to watch Loom, checked with the real Prometheus tools: the alert rules
(`promtool check rules`, and each expression's firing and silence with `promtool test rules`), the
operator's exposition (`promtool check metrics`), and the Grafana dashboard's structure."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from loom import metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "monitoring"
RULE = MONITORING / "prometheusrule-loom.yaml"
DASHBOARD = MONITORING / "grafana-dashboard-loom.json"


def promtool(
    *args: str, cwd: Path | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not installed: install Debian's prometheus package (scripts/install-deps.sh)"
        )
    return subprocess.run([binary, *args], cwd=cwd, input=input, capture_output=True, text=True, timeout=120)


def test_the_rules_load_and_each_alert_is_unit_tested(tmp_path: Path) -> None:
    rule = yaml.safe_load(RULE.read_text())
    assert rule["kind"] == "PrometheusRule" and rule["apiVersion"] == "monitoring.coreos.com/v1"
    (tmp_path / "loom-alerts.rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    shutil.copy(MONITORING / "loom-alerts.test.yaml", tmp_path)
    checked = promtool("check", "rules", "loom-alerts.rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "loom-alerts.test.yaml", cwd=tmp_path)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    tests = yaml.safe_load((MONITORING / "loom-alerts.test.yaml").read_text())["tests"]
    tested_alerts = {t["alertname"] for case in tests for t in case.get("alert_rule_test", [])}
    assert alerts == tested_alerts
    assert {
        "LoomGangStuckPending",
        "LoomTrainingJobRestartLoop",
        "LoomModelFailingToLoad",
        "LoomGPUUnhealthy",
        "LoomFeatureFreshnessOverBound",
    } <= alerts
    fires = {t["alertname"] for case in tests for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert fires == alerts, "every alert has a case where it fires"


def test_promtool_accepts_the_operators_metrics() -> None:
    """Every series of loom.metrics, each with a sample, through `promtool check metrics`."""
    metrics.API_RESPONSES.labels(verb="PATCH", code="200").inc()
    metrics.API_REQUESTS.labels(operation="apply", kind="Pod").inc()
    metrics.API_ERRORS.labels(operation="apply", code="422").inc()
    metrics.RECONCILE_ERRORS.labels(kind="TrainingJob").inc()
    metrics.RECONCILE_SECONDS.labels(kind="TrainingJob").observe(0.01)
    metrics.WORKQUEUE_DEPTH.labels(kind="TrainingJob").set(0)
    metrics.RESOURCES_BY_PHASE.labels(kind="InferenceService", phase="Ready").set(1)
    metrics.INFERENCE_REPLICAS.labels("ns", "ranker", "ready").set(2)
    metrics.AUTOSCALER_DECISIONS.labels("ns", "ranker", "up", "stable").inc()
    metrics.AUTOSCALER_PANIC.labels("ns", "ranker").set(0)
    metrics.AUTOSCALER_METRIC.labels("ns", "ranker").set(3)
    metrics.AUTOSCALER_UNUSABLE_SAMPLES.labels("ns", "ranker", "InvalidValue").inc()
    metrics.INFERENCE_POD_REPLACEMENTS.labels(reason="GPUUnhealthy").inc()
    metrics.INFERENCE_ROLLBACKS.labels(reason="InvalidModel").inc()
    metrics.MODEL_LOAD_SECONDS.observe(12.0)
    metrics.TRAININGJOB_RESTARTS.labels(reason="NodeLost").inc()
    metrics.TRAININGJOB_CREATE_TO_RUNNING.observe(3.0)
    metrics.TRAININGJOB_RESTART_TO_RUNNING.observe(2.0)
    metrics.FEATURE_FRESHNESS.labels("ns", "clicks").set(60)
    metrics.FEATURE_ROWS_WRITTEN.labels("ns", "clicks", "local").inc(10)
    metrics.FEATURE_RUNS.labels("ns", "clicks", "local", "Succeeded").inc()
    metrics.FEATURE_RUN_SECONDS.labels("local", "Succeeded").observe(5)
    text = generate_latest().decode()
    for name in (
        "loom_api_responses_total",
        "loom_workqueue_depth",
        "loom_inferenceservice_model_load_seconds",
    ):
        assert name in text
    result = promtool("check", "metrics", input=text)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


def test_the_dashboard_has_the_panels_it_promises() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    titles = {p["title"] for p in panels}
    assert {
        "TrainingJobs by phase",
        "Time to Running (p50, p95)",
        "Gang restarts by reason",
        "InferenceService replicas: desired vs ready",
        "Model load time (p50, p95)",
        "GPU utilization",
        "GPU health by node",
        "Feature freshness",
    } <= titles
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert any("DCGM_FI_DEV_GPU_UTIL" in e for e in exprs) and any(
        "loom_gpu_node_healthy" in e for e in exprs
    )
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for p in panels)
