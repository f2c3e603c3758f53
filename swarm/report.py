"""Comparing agents, workers or lanes of a run: the report behind `autoresearch report`.

Pure functions of the journal's events: `build_report(events, by=...)` reads the run's one table of
experiments (swarm.table, pandas) and groups the decided experiments by agent, worker or lane;
per group:

- experiments: its proposals and combinations (the shared first-wave baselines, the noise gate's
  confirmations and experiments interrupted by a stop are not the group's work and are left out
  of every column; the run's share of GPU time on confirmations is reported once);
- keep, crash (crash + timeout) and invalid rates over those experiments;
- best: the best metric among its kept experiments (the shared baseline when it kept none), and
  gain: the improvement over the baseline in the metric's good direction (positive = better);
- GPU-hours: the sum of its experiments' `task_seconds` (time inside the task command: training
  and evaluation, not the agent's thinking) / 3600, and gain per GPU-hour;
- tokens in / out and cost (from the agents' usage, failed agent attempts of `agent_error`
  events included; those are also counted as agent_errors), gain per dollar (None when free);
- time to target: seconds from the run's start until its best first reached the target
  (metric <= target for a minimised metric), None when it never did;
- a curve: its best metric over time (a step function, starting at the baseline at t = 0).

Rendering is here too since it is pure: the aligned text table, and CSV and JSON through the
report's DataFrame (`Report.frame`). The plots and file output live in swarm.commands.report.
Not covered: reading the journal file, plotting.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import pandas as pd

from swarm.table import GROUP_COLUMNS, GROUPINGS, RunTable, group_table, records_of

COLUMNS = GROUP_COLUMNS  # the CSV's columns, in order


@dataclass(frozen=True)
class GroupRow:
    group: str
    experiments: int
    kept: int
    crashed: int  # crash + timeout
    invalid: int
    agent_errors: int  # failed agent attempts (outages): no experiment ran, their usage is counted
    keep_rate: float | None
    crash_rate: float | None
    invalid_rate: float | None
    best: float | None
    gain: float | None  # improvement over the baseline, positive = better
    gpu_hours: float
    gain_per_gpu_hour: float | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    gain_per_dollar: float | None
    time_to_target_s: float | None
    curve: tuple[tuple[float, float], ...]  # (seconds since run start, best so far), steps


@dataclass(frozen=True)
class Report:
    tag: str
    metric: str
    direction: str
    by: str
    baseline: float | None
    target: float | None
    started_at: float  # unix seconds of the run's start
    compare: bool
    rows: tuple[GroupRow, ...]
    confirm_share: float = 0.0  # share of the run's GPU time spent on confirmations (noise gate)
    sigma: float | None = None  # the noise model's sigma

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (COLUMNS plus `curve`), best group first."""
        return pd.DataFrame([asdict(r) for r in self.rows], columns=[*COLUMNS, "curve"])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = records_of(self.frame())
        return d


def build_report(events: Iterable[Mapping[str, Any]], by: str = "agent", target: float | None = None) -> Report:
    """The report of one run from its journal events."""
    return report_of(RunTable.from_events(events), by, target)


def report_of(table: RunTable, by: str = "agent", target: float | None = None) -> Report:
    """The report of a run's experiment table (swarm.table), grouped `by` agent, worker or lane."""
    s = table.state
    frame = group_table(table, by, target)
    rows = tuple(GroupRow(**row) for row in records_of(frame))
    return Report(tag=s.tag, metric=table.metric, direction=table.direction, by=by, baseline=s.baseline_metric,
                  target=target, started_at=s.started_at, compare=s.compare, rows=rows,
                  confirm_share=s.confirm_share(), sigma=s.noise_model().sigma)


# ---- rendering -----------------------------------------------------------------------------

def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.0f}%"
    if kind == "metric":
        return f"{value:.6f}"
    if kind == "gain":
        return f"{value:+.6f}"
    if kind == "hours":
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    if kind == "money":
        return f"{value:.4f}"
    if kind == "seconds":
        return f"{value:.0f}s" if value < 3600 else f"{value / 3600:.2f}h"
    if kind == "rate":
        return f"{value:+.4g}"
    return str(value)


def table_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the text table, every cell a string."""
    header = [report.by, "exps", "keep", "crash", "invalid", f"best {report.metric}", "gain", "GPU-h", "gain/GPU-h",
              "tok in", "tok out", "cost $", "gain/$"]
    if report.target is not None:
        header.append(f"t->{report.target:g}")
    outages = any(r.agent_errors for r in report.rows)
    if outages:
        header.insert(5, "agent err")
    rows = []
    for r in report.rows:
        row = [r.group, str(r.experiments), _fmt(r.keep_rate, "pct"), _fmt(r.crash_rate, "pct"),
               _fmt(r.invalid_rate, "pct"), _fmt(r.best, "metric"), _fmt(r.gain, "gain"), _fmt(r.gpu_hours, "hours"),
               _fmt(r.gain_per_gpu_hour, "rate"), str(r.tokens_in), str(r.tokens_out),
               _fmt(r.cost_usd if r.cost_usd else None, "money"), _fmt(r.gain_per_dollar, "rate")]
        if report.target is not None:
            row.append(_fmt(r.time_to_target_s, "seconds"))
        if outages:
            row.insert(5, str(r.agent_errors))
        rows.append(row)
    return header, rows


def format_table(report: Report) -> str:
    header, rows = table_rows(report)
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    left = {0}

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    base = f"{report.baseline:.6f}" if report.baseline is not None else "not measured yet"
    mode = "compare run (one best per lane)" if report.compare else "shared run (one best)"
    out = [f"run {report.tag}: {mode}, baseline {report.metric} {base}; by {report.by}",
           line(header), line(["-" * w for w in widths])]
    out += [line(row) for row in rows] or ["(no experiments yet)"]
    out.append("gain: improvement over the baseline (positive = better); GPU-h: time inside the task command; "
               "baselines, confirmations and interrupted runs not counted")
    sigma = f"noise sigma {report.sigma:.6f}; " if report.sigma else ""
    out.append(f"{sigma}confirmations (re-measuring candidates and the best) took {100 * report.confirm_share:.0f}% "
               "of the run's GPU time")
    return "\n".join(out)


def to_csv(report: Report) -> str:
    """The rows as CSV (COLUMNS; a missing value is an empty cell)."""
    return report.frame()[list(COLUMNS)].to_csv(index=False, lineterminator="\r\n")


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2)


__all__ = ["COLUMNS", "GROUPINGS", "GroupRow", "Report", "build_report", "report_of", "format_table", "table_rows",
           "to_csv", "to_json"]
