"""Writes `dashboards/grafana-swarm.json`: the Grafana board for the swarm's Ray metrics.

Run `python dashboards/build_grafana.py` after changing the panels or `swarm.metrics.CATALOGUE`;
tests/test_metrics.py checks that the JSON is this script's output and that every PromQL
expression in it names a metric the coordinator exports. The board follows the convention of
the dashboards Ray generates (under <ray session>/metrics/grafana/dashboards): a `datasource`
template variable of type `datasource` (query `prometheus`) that every panel names as
`${datasource}`, and a `SessionName` variable to pick a Ray session; on top of that the run (tag),
lane, worker and agent can be filtered. Not covered: Prometheus or Grafana themselves (see the
README), the metrics' meaning (swarm.metrics).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from swarm.metrics import BY_NAME  # noqa: E402

OUT = Path(__file__).resolve().parent / "grafana-swarm.json"
UID = "autoresearchSwarm"
DS = "${datasource}"
RUN = 'SessionName=~"$SessionName",run=~"$run"'
LANE = RUN + ',lane=~"$lane"'
WHO = LANE + ',worker=~"$worker",agent=~"$agent"'
LABELS = "ray_swarm_worker_busy"  # present from the first experiment on: the variables' label source


def variable(name: str, query: str, label: str, multi: bool = True) -> dict:
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "definition": query, "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2, "includeAll": True, "allValue": ".+", "multi": multi, "sort": 1, "hide": 0,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [], "regex": "",
    }


def templating() -> dict:
    return {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus", "hide": 0,
         "description": "The Prometheus that scrapes the Ray nodes' metrics export ports.",
         "current": {"selected": False}, "options": [], "refresh": 1, "regex": "", "includeAll": False,
         "multi": False},
        variable("SessionName", f"label_values({LABELS}, SessionName)", "Ray session", multi=False),
        variable("run", f'label_values({LABELS}{{SessionName=~"$SessionName"}}, run)', "Run (tag)"),
        variable("lane", f"label_values({LABELS}{{{RUN}}}, lane)", "Lane"),
        variable("worker", f"label_values({LABELS}{{{LANE}}}, worker)", "Worker"),
        variable("agent", f"label_values({LABELS}{{{LANE}}}, agent)", "Agent"),
    ]}


def panel(title: str, metric: str, targets: list[tuple[str, str]], x: int, y: int, w: int = 12, h: int = 8,
          kind: str = "timeseries", unit: str = "short", stack: bool = False, decimals: int | None = None) -> dict:
    """One panel; `targets`: (PromQL, legend) pairs; the description is the metric's help text."""
    defaults: dict = {"unit": unit, "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                                               "stacking": {"mode": "normal" if stack else "none"},
                                               "spanNulls": True}}
    if decimals is not None:
        defaults["decimals"] = decimals
    if kind == "stat":
        defaults = {"unit": unit}
    return {
        "type": kind, "title": title, "datasource": DS, "description": BY_NAME[metric].description,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]},
                    "tooltip": {"mode": "multi"}} if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value",
              "graphMode": "area", "textMode": "auto"},
        "targets": [{"expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i), "datasource": DS,
                     "interval": ""} for i, (expr, legend) in enumerate(targets)],
    }


def row(title: str, y: int) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
            "panels": []}


def panels() -> list[dict]:
    exps = f"ray_swarm_experiments_total{{{WHO}}}"
    busy = f"ray_swarm_worker_busy{{{WHO}}}"
    seconds = "ray_swarm_experiment_seconds"
    found = [
        row("Progress", 0),
        panel("Best metric per lane", "swarm_best_metric",
              [(f"max by (run, lane) (ray_swarm_best_metric{{{LANE}}})", "best {{run}} {{lane}}")], 0, 1, decimals=6),
        panel("Last metric per worker", "swarm_last_metric",
              [(f"max by (run, worker, agent, lane) (ray_swarm_last_metric{{{WHO}}})", "{{worker}} {{agent}}")],
              12, 1, decimals=6),
        panel("Experiments", "swarm_experiments", [(f"sum({exps})", "experiments")], 0, 9, w=4, h=4, kind="stat"),
        panel("Kept", "swarm_experiments", [(f'sum(ray_swarm_experiments_total{{{WHO},status="keep"}})', "keep")],
              4, 9, w=4, h=4, kind="stat"),
        panel("Crashes and timeouts", "swarm_experiments",
              [(f'sum(ray_swarm_experiments_total{{{WHO},status=~"crash|timeout"}}) or vector(0)', "crash")],
              8, 9, w=4, h=4, kind="stat"),
        panel("Promotions", "swarm_promotions", [(f"sum(ray_swarm_promotions_total{{{WHO}}})", "promotions")],
              12, 9, w=4, h=4, kind="stat"),
        panel("Workers busy", "swarm_worker_busy", [(f"sum(max by (run, worker) ({busy}))", "busy")],
              16, 9, w=4, h=4, kind="stat"),
        panel("Agent cost", "swarm_agent_cost_usd", [(f"sum(ray_swarm_agent_cost_usd_total{{{WHO}}}) or vector(0)",
                                                      "USD")], 20, 9, w=4, h=4, kind="stat", unit="currencyUSD"),
        panel("Noise sigma", "swarm_noise_sigma",
              [(f"max by (run) (ray_swarm_noise_sigma{{{RUN}}})", "sigma {{run}}")], 0, 13, w=8, decimals=6),
        row("Experiments", 21),
        panel("Experiments by status", "swarm_experiments", [(f"sum by (status) ({exps})", "{{status}}")],
              0, 22, stack=True),
        panel("Experiments per hour by status", "swarm_experiments",
              [(f"sum by (status) (rate({exps}[$__rate_interval])) * 3600", "{{status}}")], 12, 22, stack=True),
        panel("Experiment duration", "swarm_experiment_seconds", [
            (f"histogram_quantile(0.5, sum by (le) (rate({seconds}_bucket{{{WHO}}}[$__rate_interval])))", "p50"),
            (f"histogram_quantile(0.9, sum by (le) (rate({seconds}_bucket{{{WHO}}}[$__rate_interval])))", "p90"),
            (f"sum(rate({seconds}_sum{{{WHO}}}[$__rate_interval])) / sum(rate({seconds}_count{{{WHO}}}"
             "[$__rate_interval]))", "mean"),
        ], 0, 30, unit="s"),
        panel("Experiments by kind", "swarm_experiment_seconds",
              [(f"sum by (kind) ({seconds}_count{{{WHO}}})", "{{kind}}")], 12, 30, stack=True),
        panel("Promotions by lane and agent", "swarm_promotions",
              [(f"sum by (lane, agent) (ray_swarm_promotions_total{{{WHO}}})", "{{lane}} {{agent}}")], 0, 38),
        panel("Confirmations", "swarm_confirmations", [
            (f"sum by (worker) (ray_swarm_confirmations_total{{{WHO}}})", "{{worker}}"),
        ], 12, 38, stack=True),
        row("Workers", 46),
        panel("Busy workers", "swarm_worker_busy", [(f"max by (worker) ({busy})", "{{worker}}")], 0, 47, stack=True),
        panel("Experiments by worker", "swarm_experiments", [(f"sum by (worker) ({exps})", "{{worker}}")],
              12, 47, stack=True),
        row("Agents", 55),
        panel("Agent cost by agent", "swarm_agent_cost_usd",
              [(f"sum by (agent) (ray_swarm_agent_cost_usd_total{{{WHO}}})", "{{agent}}")], 0, 56, unit="currencyUSD"),
        panel("Agent tokens", "swarm_agent_tokens",
              [(f"sum by (agent, direction) (ray_swarm_agent_tokens_total{{{WHO}}})", "{{agent}} {{direction}}")],
              12, 56),
        panel("Keep rate by agent", "swarm_experiments",
              [(f'sum by (agent) (ray_swarm_experiments_total{{{WHO},status="keep"}}) / sum by (agent) ({exps})',
                "{{agent}}")], 0, 64, unit="percentunit"),
        panel("Failed agent attempts", "swarm_agent_errors",
              [(f"sum by (agent) (ray_swarm_agent_errors_total{{{WHO}}})", "{{agent}}")], 12, 64),
    ]
    for i, p in enumerate(found, start=1):
        p["id"] = i
    return found


def build() -> dict:
    return {
        "title": "autoresearch swarm", "uid": UID, "tags": ["autoresearch-swarm", "ray"],
        "description": "The swarm's metrics (exported by its coordinator through Ray's metrics API).",
        "editable": True, "graphTooltip": 1, "refresh": "30s", "schemaVersion": 27, "version": 1,
        "time": {"from": "now-6h", "to": "now"}, "timepicker": {}, "timezone": "",
        "annotations": {"list": [{"builtIn": 1, "datasource": "-- Grafana --", "enable": True, "hide": True,
                                  "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                                  "type": "dashboard"}]},
        "links": [], "templating": templating(), "panels": panels(),
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
