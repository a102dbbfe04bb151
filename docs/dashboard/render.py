"""Render Loom's Grafana dashboard (manifests/monitoring/grafana-dashboard-loom.json) to a PNG from a
real Prometheus: every panel's queries run as range queries over [start, end], drawn with matplotlib
in the dashboard's own grid. It shows what the dashboard looks like without a Grafana.

    pip install matplotlib
    python docs/dashboard/render.py --prometheus http://127.0.0.1:9090 --start 1700000000 --end 1700000300 \
        --out docs/dashboard.png

docs/dashboard.png was made this way by e2e/test_gpu_health.py (LOOM_RENDER_DASHBOARD=docs/dashboard.png):
the GPU agent on three fake GPU nodes, XID 79 on one, a TrainingJob moved off it and a serving
replica replaced, with Prometheus scraping the operator and the agents each second.
"""

from __future__ import annotations

import argparse
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[2] / "manifests" / "monitoring" / "grafana-dashboard-loom.json"


# Grafana's unit ids as the PNG names them.
UNITS = {"s": "s", "percent": "%", "mbytes": "MiB", "celsius": "°C", "watt": "W", "reqps": "req/s"}


def query_range(base: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{base.rstrip('/')}/api/v1/query_range?{params}", timeout=30) as r:
        reply = json.loads(r.read())
    if reply.get("status") != "success":
        raise RuntimeError(f"{expr}: {reply}")
    result: list[dict[str, Any]] = reply["data"]["result"]
    return result


def legend(template: str, labels: Mapping[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or str(labels)


def expand(expr: str, rate_interval: str) -> str:
    return expr.replace("$__rate_interval", rate_interval)


def panel_series(
    base: str, panel: Mapping[str, Any], start: float, end: float, step: float, rate_interval: str
) -> list[tuple[str, list[float], list[float]]]:
    out = []
    for target in panel.get("targets", []):
        for series in query_range(base, expand(target["expr"], rate_interval), start, end, step):
            xs = [float(t) - start for t, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            out.append((legend(target.get("legendFormat", ""), series["metric"]), xs, ys))
    return out


def render(
    base: str,
    start: float,
    end: float,
    out: Path,
    *,
    dashboard: Path = DASHBOARD,
    step: float = 2.0,
    rate_interval: str = "15s",
    marks: Sequence[tuple[float, str]] = (),
) -> Path:
    """Draw every panel; `marks`: (unix time, text) drawn as vertical lines on each panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = json.loads(dashboard.read_text())
    panels = [p for p in board["panels"] if p.get("type") != "row"]
    rows = [p for p in board["panels"] if p.get("type") == "row"]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(24, height * 0.62), dpi=80)
    fig.patch.set_facecolor("#111217")
    grid = fig.add_gridspec(height, 24, hspace=1.6, wspace=1.2, left=0.03, right=0.99, top=0.95, bottom=0.03)
    when = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M UTC")
    fig.suptitle(
        f"{board['title']} dashboard, rendered from a real run's Prometheus ({when}, {end - start:.0f} s)",
        color="#d8d9da",
        fontsize=16,
    )
    for row in rows:
        top = grid[row["gridPos"]["y"] + 1, 0].get_position(fig).y1
        fig.text(0.03, top + 0.012, row["title"], color="#d8d9da", fontsize=13, weight="bold")
    for panel in panels:
        g = panel["gridPos"]
        ax = fig.add_subplot(grid[g["y"] + 1 : g["y"] + g["h"], g["x"] : g["x"] + g["w"]])
        ax.set_facecolor("#181b1f")
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        ax.tick_params(colors="#8e8e8e", labelsize=8)
        unit = UNITS.get(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""), "")
        title = panel["title"] + (f"  [{unit}]" if unit else "")
        ax.set_title(title, color="#d8d9da", fontsize=10, loc="left")
        series = panel_series(base, panel, start, end, step, rate_interval)
        if not series:
            ax.text(0.5, 0.5, "No data", color="#8e8e8e", ha="center", va="center", transform=ax.transAxes)
        for label, xs, ys in series[:24]:
            if panel["type"] == "state-timeline":
                ax.step(xs, ys, where="post", label=label, linewidth=2)
                ax.set_yticks([0, 1], ["unhealthy", "healthy"])
                ax.set_ylim(-0.2, 1.2)
            else:
                ax.plot(xs, ys, label=label, linewidth=1.4)
        for t, text in marks:
            ax.axvline(t - start, color="#f2cc0c", linestyle="--", linewidth=0.8)
            ax.text(
                t - start,
                1.0,
                f" {text}",
                color="#f2cc0c",
                fontsize=7,
                transform=ax.get_xaxis_transform(),
                va="top",
            )
        ax.set_xlim(0, end - start)
        if (
            series
            and panel["type"] != "state-timeline"
            and min(min(ys, default=0) for _, _, ys in series) >= 0
        ):
            ax.set_ylim(bottom=0, top=max(max(ys, default=0) for _, _, ys in series) * 1.15 or 1)
        ax.set_xlabel("seconds", color="#8e8e8e", fontsize=8)
        if series:
            ax.legend(
                fontsize=7,
                loc="upper left",
                ncol=2 if len(series) > 4 else 1,
                framealpha=0.3,
                labelcolor="#d8d9da",
                facecolor="#181b1f",
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, facecolor=fig.get_facecolor())
    plt.close(fig)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prometheus", required=True, help="base URL of the Prometheus that scraped the run")
    p.add_argument("--start", type=float, required=True, help="unix time")
    p.add_argument("--end", type=float, required=True, help="unix time")
    p.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))
    p.add_argument("--step", type=float, default=2.0)
    args = p.parse_args()
    print(render(args.prometheus, args.start, args.end, args.out, step=args.step))


if __name__ == "__main__":
    main()
