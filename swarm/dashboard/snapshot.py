"""Everything the swarm page shows, as one JSON-able document built from the run directory.

`build(source, now)` reads the journal (through `RunSource`, cached) and returns the header (state,
workers alive, when the journal last moved, best, counts), the plotly figures of every view
(swarm.dashboard.figures), the experiments' rows, the workers' duty cycles and rates, the best
branch's lineage, the per-agent report (the same cells as `autoresearch report`) and the cost. Rows
carry raw strings: the page puts them into the DOM as text. Only a fixed list of settings is shown
(`SETTINGS`): the run's config holds agent options, and nothing else from it reaches the page.
Not covered: HTTP (swarm.dashboard.server), the diff and log of one experiment (RunSource.detail).
"""

from __future__ import annotations

import time
from typing import Any

from swarm.dashboard import figures
from swarm.dashboard.source import Phase, RunSource
from swarm.report import report_of, table_rows
from swarm.table import RunTable, none_if_nan, records_of

SETTINGS = ("workers", "max_experiments", "hours", "max_cost", "confidence", "gate", "max_runs", "compare", "profile",
            "sandbox")  # the config keys the page shows (never agent options)
ROW_COLUMNS = ("exp_id", "status", "kind", "worker", "agent", "lane", "metric", "delta", "runs", "mean", "description",
               "started_at", "finished_at", "task_seconds", "cost_usd", "tokens", "reason", "error")


def build(source: RunSource, now: float | None = None) -> dict[str, Any]:
    now = now or time.time()
    reading = source.read()
    status = source.run_state(reading, now)
    doc: dict[str, Any] = {"tag": source.tag, "now": now, "state": status.state.value, "state_detail": status.detail,
                           "last_event_t": status.last_event_t, "heartbeat_t": status.heartbeat_t}
    if reading is None:
        return {**doc, "empty": True}
    table = reading.table
    s = table.state
    end = now if status.state == Phase.RUNNING else (s.last_event_t or now)
    config = s.config
    workers = reading.session_workers or config.get("workers")
    if status.state == Phase.RUNNING and workers is not None:
        alive = max(0, int(workers) - len(reading.retired))
    else:  # a stopped run has none; a dead coordinator's (or a copy's) are unknown
        alive = 0 if status.state == Phase.STOPPED else None
    best = s.best
    agent_report = report_of(table, "agent")
    header, cells = table_rows(agent_report)
    doc.update({
        "empty": False,
        "metric": table.metric,
        "direction": table.direction,
        "started_at": s.started_at,
        "workers": workers,
        "workers_alive": alive,
        "busy": int(len(table.running)) if status.state == Phase.RUNNING else 0,
        "best": None if best is None else {"metric": best.metric, "commit": best.commit[:7], "exp_id": best.exp_id,
                                           "lane": best.lane},
        "baseline": s.baseline_metric,
        "sigma": s.noise_model().sigma,
        "counts": table.counts(),
        "experiments_total": int(len(table.experiments)),
        "settings": {k: config.get(k) for k in SETTINGS if config.get(k) is not None},
        "cost": _cost(table, config.get("max_cost")),
        "rows": _rows(table),
        "gpus": _gpus(table, s.started_at, end, now, status.state == Phase.RUNNING, workers),
        "lineage": _lineage(table),
        "agents": {"header": header, "rows": cells},
        "figures": {
            "progress": figures.progress(table, end),
            "timeline": figures.timeline(table, now),
            "lineage": figures.lineage(table),
            "agents": _curves(table, agent_report),
            "cost": figures.cost(table, config.get("max_cost")),
        },
    })
    return doc


def _rows(table: RunTable) -> list[dict[str, Any]]:
    return records_of(table.experiments[list(ROW_COLUMNS)].iloc[::-1])  # newest first


def _curves(table: RunTable, agent_report) -> dict[str, Any]:
    """The agents' best lines; in a compare run one best line per lane."""
    report = report_of(table, "lane") if table.state.compare else agent_report
    return figures.curves(report.rows, report.baseline, report.metric, report.by)


def _gpus(table: RunTable, started_at: float, end: float, now: float, live: bool,
          workers: int | None) -> dict[str, Any]:
    """Per worker and for the run: experiments, busy time, duty cycle (share of the run's time its
    GPU spent inside the task command), experiments per hour and per GPU-hour. The run's GPUs are
    the workers asked for (or, when more, those that ran something), idle ones included."""
    df = table.experiments
    span = max(end - started_at, 1e-9)
    began = df["started_at"].where(df["started_at"] > 0, df["finished_at"])  # no start recorded: no busy time
    per = df.assign(busy_seconds=(df["finished_at"] - began).clip(lower=0)).groupby("worker").agg(
        experiments=("exp_id", "size"), task_seconds=("task_seconds", "sum"), busy_seconds=("busy_seconds", "sum"))
    running = table.running
    if live and not running.empty:
        extra = (now - running["started_at"]).groupby(running["worker"]).sum()
        per = per.reindex(per.index.union(extra.index), fill_value=0)
        per["busy_seconds"] = per["busy_seconds"] + extra.reindex(per.index, fill_value=0)
    per["experiments"] = per["experiments"].astype(int)
    per["duty_cycle"] = per["task_seconds"] / span
    per["experiments_per_hour"] = per["experiments"] / (span / 3600)
    rows = [{"worker": w, **{k: none_if_nan(v) for k, v in r.items()}}
            for w, r in per.loc[figures.natural(per.index)].iterrows()]
    n_workers = max(len(per), int(workers or 0), 1)
    hours = span / 3600
    return {
        "span_seconds": span,
        "workers": rows,
        "experiments_per_hour": len(df) / hours,
        "experiments_per_gpu_hour": len(df) / (hours * n_workers),
        "duty_cycle": float(df["task_seconds"].sum()) / (span * n_workers),
    }


def _lineage(table: RunTable) -> list[dict[str, Any]]:
    """Every promotion of a best branch, oldest first; a combination (a merge of parallel wins) is marked."""
    adv = table.bests[table.bests["event"] == "best_advanced"]
    by_id = table.experiments.set_index("exp_id")
    out = []
    for b in adv.itertuples(index=False):
        exp_id = none_if_nan(b.exp_id)
        row = by_id.loc[int(exp_id)] if exp_id is not None and int(exp_id) in by_id.index else None
        kind = "baseline" if exp_id is None else (row["kind"] if row is not None else "proposal")
        previous = none_if_nan(b.previous_metric)
        out.append({
            "t": b.t, "lane": b.lane, "exp_id": None if exp_id is None else int(exp_id), "commit": (b.commit or "")[:7],
            "metric": b.metric, "previous_metric": previous,
            "improvement": None if previous is None else b.metric - float(previous),
            "kind": kind, "merge": kind == "combination",
            "agent": None if row is None else row["agent"], "worker": None if row is None else row["worker"],
            "description": "first-wave baseline" if row is None else row["description"],
        })
    return out


def _cost(table: RunTable, max_cost: float | None) -> dict[str, Any]:
    usage = table.state.total_usage()
    return {"usd": usage.cost_usd, "calls": usage.calls, "tokens_in": usage.tokens_in, "tokens_out": usage.tokens_out,
            "max_cost": max_cost, "agent_errors": int(len(table.agent_errors))}


__all__ = ["ROW_COLUMNS", "SETTINGS", "build"]
