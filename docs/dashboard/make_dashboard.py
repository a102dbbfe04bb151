"""Writes manifests/monitoring/grafana-dashboard-loom.json, Loom's Grafana dashboard (`python
docs/dashboard/make_dashboard.py`). The panels are data here; the JSON is committed, and
operator/tests/test_gpu_monitoring.py and e2e/test_gpu_health.py check it (the e2e runs every query
against a real Prometheus scraping the operator and the GPU agent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[2] / "manifests" / "monitoring" / "grafana-dashboard-loom.json"
DS = {"type": "prometheus", "uid": "${datasource}"}

# (row, [(title, unit, kind, [(expr, legend)], width)]). Counters of rare events (restarts, replacements,
# XIDs) are shown as totals: increase() misses a labelled counter's first step (it appears at 1).
RATE = "[$__rate_interval]"
Panel = tuple[str, str, str, list[tuple[str, str]], int]


def quantiles(histogram: str, by: str = "") -> list[tuple[str, str]]:
    return [
        (f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{RATE})))", f"{by}p{int(q * 100)}")
        for q in (0.5, 0.95)
    ]


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Training",
        [
            (
                "TrainingJobs by phase",
                "short",
                "timeseries",
                [('max by (phase) (loom_resources{kind="TrainingJob"})', "{{phase}}")],
                8,
            ),
            (
                "Time to Running (p50, p95)",
                "s",
                "timeseries",
                [
                    *quantiles("loom_trainingjob_create_to_running_seconds", "created -> Running "),
                    *quantiles("loom_trainingjob_restart_to_running_seconds", "restart -> Running ")[1:],
                ],
                8,
            ),
            (
                "Gang restarts by reason",
                "short",
                "timeseries",
                [("sum by (reason) (loom_trainingjob_restarts_total)", "{{reason}}")],
                8,
            ),
        ],
    ),
    (
        "Serving",
        [
            (
                "InferenceService replicas: desired vs ready",
                "short",
                "timeseries",
                [
                    (
                        'max by (namespace, name, state) (loom_inferenceservice_replicas{state=~"desired|ready"})',
                        "{{name}} {{state}}",
                    )
                ],
                8,
            ),
            (
                "Model load time (p50, p95)",
                "s",
                "timeseries",
                quantiles("loom_inferenceservice_model_load_seconds"),
                8,
            ),
            (
                "Serving pods replaced by reason",
                "short",
                "timeseries",
                [("sum by (reason) (loom_inferenceservice_pod_replacements_total)", "{{reason}}")],
                8,
            ),
        ],
    ),
    (
        "GPUs (loom gpu-agent, DCGM names)",
        [
            (
                "GPU utilization",
                "percent",
                "timeseries",
                [("avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)", "{{Hostname}} (mean of its GPUs)")],
                8,
            ),
            (
                "GPU health by node",
                "short",
                "state-timeline",
                [("min by (Hostname) (loom_gpu_node_healthy)", "{{Hostname}}")],
                8,
            ),
            (
                "XID errors by node and action",
                "short",
                "timeseries",
                [
                    (
                        "sum by (Hostname, xid, action) (loom_gpu_xid_errors_total)",
                        "{{Hostname}} XID {{xid}} {{action}}",
                    )
                ],
                8,
            ),
            (
                "GPU memory used",
                "mbytes",
                "timeseries",
                [("sum by (Hostname) (DCGM_FI_DEV_FB_USED)", "{{Hostname}}")],
                6,
            ),
            (
                "GPU temperature (hottest GPU)",
                "celsius",
                "timeseries",
                [("max by (Hostname) (DCGM_FI_DEV_GPU_TEMP)", "{{Hostname}}")],
                6,
            ),
            (
                "GPU power",
                "watt",
                "timeseries",
                [("sum by (Hostname) (DCGM_FI_DEV_POWER_USAGE)", "{{Hostname}}")],
                6,
            ),
            (
                "Feature freshness",
                "s",
                "timeseries",
                [("max by (namespace, name) (loom_feature_freshness_seconds)", "{{namespace}}/{{name}}")],
                6,
            ),
        ],
    ),
    (
        "Operator",
        [
            (
                "Reconcile duration p95 by kind",
                "s",
                "timeseries",
                [
                    (
                        f"histogram_quantile(0.95, sum by (kind, le) (rate(loom_reconcile_seconds_bucket{RATE})))",
                        "{{kind}}",
                    )
                ],
                8,
            ),
            (
                "API responses by verb and code",
                "reqps",
                "timeseries",
                [(f"sum by (verb, code) (rate(loom_api_responses_total{RATE}))", "{{verb}} {{code}}")],
                8,
            ),
            (
                "Work queue depth",
                "short",
                "timeseries",
                [("max by (kind) (loom_workqueue_depth)", "{{kind}}")],
                8,
            ),
        ],
    ),
]


def panel(
    pid: int, title: str, unit: str, kind: str, targets: list[tuple[str, str]], x: int, y: int, w: int
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"h": 8, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if kind == "state-timeline":
        out["fieldConfig"]["defaults"]["mappings"] = [
            {
                "type": "value",
                "options": {
                    "0": {"text": "unhealthy", "color": "red"},
                    "1": {"text": "healthy", "color": "green"},
                },
            }
        ]
    return out


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row, items in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y, x = pid + 1, y + 1, 0
        for title, unit, kind, targets, w in items:
            if x + w > 24:
                x, y = 0, y + 8
            panels.append(panel(pid, title, unit, kind, targets, x, y, w))
            pid, x = pid + 1, x + w
        y += 8
    return {
        "title": "Loom",
        "uid": "loom-overview",
        "description": "Loom: TrainingJobs, InferenceServices, GPU health (loom gpu-agent), feature freshness, the operator.",
        "tags": ["loom", "gpu", "ml"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                    "current": {},
                }
            ]
        },
        "panels": panels,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(OUT)
