"""Comparing agents, workers or lanes of a run: the report behind `autoresearch report`.

Pure functions of the journal's events: `build_report(events, by=...)` groups the decided
experiments by agent, worker or lane and computes, per group:

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

Rendering (aligned text, CSV rows, JSON) is here too since it is pure; the plot and file output
live in swarm.commands.report. Not covered: reading the journal file, matplotlib.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

from swarm.records import ExperimentRecord, Kind, Status, Usage
from swarm.state import replay

GROUPINGS = ("agent", "worker", "lane")
COLUMNS = (
    "group", "experiments", "kept", "crashed", "invalid", "agent_errors", "keep_rate", "crash_rate", "invalid_rate",
    "best", "gain", "gpu_hours", "gain_per_gpu_hour", "tokens_in", "tokens_out", "cost_usd", "gain_per_dollar", "time_to_target_s",
)


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = [{k: v for k, v in asdict(r).items()} for r in self.rows]
        return d


def _better(a: float, b: float, direction: str) -> bool:
    return a < b if direction == "min" else a > b


def _gain(best: float | None, baseline: float | None, direction: str) -> float | None:
    if best is None or baseline is None:
        return None
    return baseline - best if direction == "min" else best - baseline


def _ratio(num: float | None, den: float) -> float | None:
    return num / den if num is not None and den > 0 else None


def group_rows(records: Sequence[ExperimentRecord], by: str, baseline: float | None, direction: str,
               started_at: float, target: float | None = None,
               agent_errors: Sequence[Mapping[str, Any]] = ()) -> tuple[GroupRow, ...]:
    """One row per group of the decided `records` (pending ones count as run, not kept), best group first.

    `agent_errors`: the bodies of the journal's `agent_error` events (worker, agent, lane, usage).
    """
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {GROUPINGS}, not {by!r}")
    groups: dict[str, list[ExperimentRecord]] = {}
    for r in records:
        if r.kind in (Kind.BASELINE, Kind.CONFIRM) or r.status == Status.INTERRUPTED:
            continue
        groups.setdefault(str(getattr(r, by)), []).append(r)
    failed: dict[str, list[Usage]] = {}
    for e in agent_errors:
        name = str(e.get(by) or ("main" if by == "lane" else "?"))
        failed.setdefault(name, []).append(Usage(**e.get("usage", {})))
        groups.setdefault(name, [])
    rows = [_row(name, rs, baseline, direction, started_at, target, failed.get(name, []))
            for name, rs in groups.items()]
    return tuple(sorted(rows, key=lambda r: (r.gain is None, -(r.gain or 0.0), r.group)))


def _row(name: str, rs: list[ExperimentRecord], baseline: float | None, direction: str, started_at: float,
         target: float | None, failed: list[Usage]) -> GroupRow:
    n = len(rs)
    kept = [r for r in rs if r.status == Status.KEEP and r.metric is not None]
    crashed = sum(1 for r in rs if r.status in (Status.CRASH, Status.TIMEOUT))
    invalid = sum(1 for r in rs if r.status == Status.INVALID)
    best, curve = baseline, []
    if baseline is not None:
        curve.append((0.0, baseline))
    for r in sorted(kept, key=lambda r: r.finished_at):
        if best is None or _better(r.metric, best, direction):
            best = r.metric
            curve.append((max(0.0, r.finished_at - started_at), best))
    reached = None
    if target is not None:
        for t, m in curve:
            if m == target or _better(m, target, direction):
                reached = t
                break
    gain = _gain(best, baseline, direction)
    gpu_hours = sum(r.task_seconds for r in rs) / 3600
    usage = sum((r.usage for r in rs), Usage()) + sum(failed, Usage())
    cost = usage.cost_usd
    return GroupRow(
        group=name, experiments=n, kept=len(kept), crashed=crashed, invalid=invalid, agent_errors=len(failed),
        keep_rate=len(kept) / n if n else None, crash_rate=crashed / n if n else None,
        invalid_rate=invalid / n if n else None, best=best, gain=gain, gpu_hours=gpu_hours,
        gain_per_gpu_hour=_ratio(gain, gpu_hours), tokens_in=usage.tokens_in,
        tokens_out=usage.tokens_out, cost_usd=cost, gain_per_dollar=_ratio(gain, cost),
        time_to_target_s=reached, curve=tuple(curve),
    )


def build_report(events: Iterable[Mapping[str, Any]], by: str = "agent", target: float | None = None) -> Report:
    """The report of one run from its journal events."""
    events = list(events)
    s = replay(events)
    failures = [e for e in events if e.get("event") == "agent_error"]
    task = s.config.get("task", {})
    direction = task.get("direction", "min")
    rows = group_rows(s.result_records(), by, s.baseline_metric, direction, s.started_at, target, failures)
    return Report(tag=s.tag, metric=task.get("metric", "val_bpb"), direction=direction, by=by,
                  baseline=s.baseline_metric, target=target, started_at=s.started_at, compare=s.compare, rows=rows,
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
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in report.rows:
        d = asdict(r)
        w.writerow(["" if d[c] is None else d[c] for c in COLUMNS])
    return buf.getvalue()


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2)


__all__ = ["GROUPINGS", "GroupRow", "Report", "build_report", "group_rows", "format_table", "table_rows",
           "to_csv", "to_json"]
