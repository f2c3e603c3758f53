"""One table of a run's experiments, built from its journal: what `report`, `status` and the dashboard read.

`RunTable.from_events(events)` replays the journal (swarm.state) once and holds pandas DataFrames:

- `experiments`: one row per decided experiment (a candidate waiting for its confirmation has
  status `pending`), in decision order: the rows of results.tsv, with the same runs / mean /
  stderr (the commit's measurements, as the noise gate sees them) plus the fields the views need
  (lane, delta against the best it started from, timings, usage, the decision's reason, log path);
- `running`: experiments started but not finished (in flight, or interrupted if the run died);
- `agent_errors`: failed agent attempts (no experiment ran; their usage counts);
- `bests`: every move of a best branch (`best_advanced`, and `best_measured` as its mean moves).

`group_table` is the per-agent / worker / lane comparison behind `autoresearch report` (the
figures are documented in swarm.report), computed with pandas group-bys. Not covered: reading
files (callers pass events), rendering (swarm.report, swarm.dashboard), deciding anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pandas as pd

from swarm.exports import sample_stats
from swarm.journal import EventType
from swarm.lanes import MAIN
from swarm.state import RunState, replay

EXPERIMENT_COLUMNS = (
    "exp_id", "worker", "agent", "lane", "kind", "status", "metric", "parent_metric", "delta", "runs", "mean",
    "stderr", "commit", "parent", "description", "reason", "error", "memory_gb", "started_at", "finished_at",
    "task_seconds", "agent_seconds", "calls", "tokens_in", "tokens_out", "tokens", "cost_usd", "prefetched",
    "log_path",
)
RUNNING_COLUMNS = ("exp_id", "worker", "agent", "lane", "kind", "parent", "description", "started_at")
ERROR_COLUMNS = ("t", "worker", "agent", "lane", "error", "calls", "tokens_in", "tokens_out", "cost_usd")
BEST_COLUMNS = ("t", "event", "lane", "commit", "metric", "exp_id", "previous_commit", "previous_metric", "runs")
GROUPINGS = ("agent", "worker", "lane")
GROUP_COLUMNS = (
    "group", "experiments", "kept", "crashed", "invalid", "agent_errors", "keep_rate", "crash_rate", "invalid_rate",
    "best", "gain", "gpu_hours", "gain_per_gpu_hour", "tokens_in", "tokens_out", "cost_usd", "gain_per_dollar",
    "time_to_target_s",
)
NOT_GROUP_WORK = ("baseline", "confirm")  # shared first-wave runs and the gate's re-measurements


def none_if_nan(value: Any) -> Any:
    """A DataFrame cell as plain Python: NaN / NaT / pd.NA become None, numpy scalars Python ones."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):  # lists, tuples: not a missing scalar
        return value
    return value.item() if hasattr(value, "item") else value


def records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of `frame` as dicts of plain Python values (missing values None)."""
    return [{k: none_if_nan(v) for k, v in row.items()} for row in frame.to_dict("records")]


@dataclass(frozen=True)
class RunTable:
    """A run's experiments as DataFrames, and the replayed state they were read from."""

    state: RunState
    experiments: pd.DataFrame
    running: pd.DataFrame
    agent_errors: pd.DataFrame
    bests: pd.DataFrame

    @classmethod
    def from_events(cls, events: Iterable[Mapping[str, Any]]) -> "RunTable":
        events = list(events)
        state = replay(events)
        return cls(state, _experiments(state), _running(state), _errors(events), _bests(events))

    @property
    def metric(self) -> str:
        return self.state.config.get("task", {}).get("metric", "val_bpb")

    @property
    def direction(self) -> str:
        return self.state.direction

    def counts(self) -> dict[str, int]:
        """Experiments by status (pending included), most common first."""
        return {str(k): int(v) for k, v in self.experiments["status"].value_counts().items()}

    def recent(self, n: int) -> pd.DataFrame:
        return self.experiments.tail(n) if n > 0 else self.experiments.iloc[0:0]

    def group_table(self, by: str = "agent", target: float | None = None) -> pd.DataFrame:
        return group_table(self, by, target)


def _experiments(s: RunState) -> pd.DataFrame:
    sigma = s.noise_model().sigma
    rows = []
    for r in s.result_records():
        runs, mean, stderr = sample_stats(r, s.measurements, sigma)
        a = s.assignments.get(r.exp_id)
        parent_metric = r.parent_metric if r.parent_metric is not None else (a.parent_metric if a else None)
        delta = r.metric - parent_metric if r.metric is not None and parent_metric is not None else None
        rows.append({
            "exp_id": r.exp_id, "worker": r.worker, "agent": r.agent, "lane": r.lane, "kind": r.kind.value,
            "status": r.status.value, "metric": r.metric, "parent_metric": parent_metric, "delta": delta,
            "runs": runs, "mean": mean, "stderr": stderr,
            "commit": r.commit, "parent": r.parent, "description": r.description,
            "reason": s.reasons.get(r.exp_id, ""), "error": r.error, "memory_gb": r.memory_gb,
            "started_at": r.started_at, "finished_at": r.finished_at, "task_seconds": r.task_seconds,
            "agent_seconds": r.agent_seconds, "calls": r.usage.calls, "tokens_in": r.usage.tokens_in,
            "tokens_out": r.usage.tokens_out, "tokens": r.usage.tokens_in + r.usage.tokens_out,
            "cost_usd": r.usage.cost_usd, "prefetched": r.prefetched, "log_path": r.log_path,
        })
    frame = pd.DataFrame(rows, columns=list(EXPERIMENT_COLUMNS))
    for name in ("metric", "parent_metric", "delta", "mean", "stderr"):
        frame[name] = pd.to_numeric(frame[name]).astype("float64")
    return frame


def _running(s: RunState) -> pd.DataFrame:
    rows = [{"exp_id": a.exp_id, "worker": a.worker, "agent": a.agent, "lane": a.lane, "kind": a.kind.value,
             "parent": a.parent, "description": a.description, "started_at": a.started_at} for a in s.running()]
    return pd.DataFrame(rows, columns=list(RUNNING_COLUMNS))


def _errors(events: list[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for e in events:
        if e.get("event") != EventType.AGENT_ERROR.value:
            continue
        usage = e.get("usage") or {}
        rows.append({"t": float(e.get("t", 0.0)), "worker": e.get("worker") or "?", "agent": e.get("agent") or "?",
                     "lane": e.get("lane") or MAIN, "error": str(e.get("error", "")),
                     "calls": int(usage.get("calls", 0)), "tokens_in": int(usage.get("tokens_in", 0)),
                     "tokens_out": int(usage.get("tokens_out", 0)), "cost_usd": float(usage.get("cost_usd", 0.0))})
    return pd.DataFrame(rows, columns=list(ERROR_COLUMNS))


def _bests(events: list[Mapping[str, Any]]) -> pd.DataFrame:
    kinds = (EventType.BEST_ADVANCED.value, EventType.BEST_MEASURED.value)
    rows = [{"t": float(e.get("t", 0.0)), "event": e["event"], "lane": e.get("lane", MAIN), "commit": e.get("commit"),
             "metric": float(e["metric"]), "exp_id": e.get("exp_id"), "previous_commit": e.get("previous_commit"),
             "previous_metric": e.get("previous_metric"), "runs": e.get("runs")}
            for e in events if e.get("event") in kinds]
    return pd.DataFrame(rows, columns=list(BEST_COLUMNS))


# ---- the comparison behind `autoresearch report` -------------------------------------------

def _better(a: float, b: float, direction: str) -> bool:
    return a < b if direction == "min" else a > b


def best_curve(kept: pd.DataFrame, baseline: float | None, direction: str,
               started_at: float) -> tuple[tuple[float, float], ...]:
    """(seconds since the start, best so far) at every improvement of `kept` (a step function that
    starts at the baseline at t = 0): the rows in order of finishing, each a new point when it beats
    the best so far."""
    curve: list[tuple[float, float]] = [(0.0, baseline)] if baseline is not None else []
    best = baseline
    for t, m in kept.sort_values("finished_at", kind="stable")[["finished_at", "metric"]].itertuples(index=False):
        if best is None or _better(m, best, direction):
            best = float(m)
            curve.append((max(0.0, float(t) - started_at), best))
    return tuple(curve)


def group_table(table: RunTable, by: str = "agent", target: float | None = None) -> pd.DataFrame:
    """One row per group (GROUP_COLUMNS plus `curve`), best group first; see swarm.report."""
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {GROUPINGS}, not {by!r}")
    s, df, errors = table.state, table.experiments, table.agent_errors
    baseline, direction = s.baseline_metric, table.direction
    work = df[~df["kind"].isin(NOT_GROUP_WORK) & (df["status"] != "interrupted")].copy()
    work["group"] = work[by].astype(str)
    work["is_kept"] = (work["status"] == "keep") & work["metric"].notna()
    work["is_crash"] = work["status"].isin(("crash", "timeout"))
    work["is_invalid"] = work["status"] == "invalid"
    usage = ["tokens_in", "tokens_out", "cost_usd"]
    done = work.groupby("group").agg(
        experiments=("exp_id", "size"), kept=("is_kept", "sum"), crashed=("is_crash", "sum"),
        invalid=("is_invalid", "sum"), task_seconds=("task_seconds", "sum"),
        **{u: (u, "sum") for u in usage})
    failed = errors.assign(group=errors[by].astype(str)).groupby("group").agg(
        agent_errors=("t", "size"), **{f"failed_{u}": (u, "sum") for u in usage})
    rows = done.join(failed, how="outer").fillna(0)
    for u in usage:
        rows[u] = rows[u] + rows[f"failed_{u}"]
    out = []
    for name, g in rows.iterrows():
        kept = work[(work["group"] == name) & work["is_kept"]]
        curve = best_curve(kept, baseline, direction, s.started_at)
        best = curve[-1][1] if curve else None
        gain = None if best is None or baseline is None else (baseline - best if direction == "min" else best - baseline)
        n, hours, cost = int(g["experiments"]), float(g["task_seconds"]) / 3600, float(g["cost_usd"])
        reached = next((t for t, m in curve if m == target or _better(m, target, direction)), None) \
            if target is not None else None
        out.append({
            "group": str(name), "experiments": n, "kept": int(g["kept"]), "crashed": int(g["crashed"]),
            "invalid": int(g["invalid"]), "agent_errors": int(g["agent_errors"]),
            "keep_rate": g["kept"] / n if n else None, "crash_rate": g["crashed"] / n if n else None,
            "invalid_rate": g["invalid"] / n if n else None, "best": best, "gain": gain, "gpu_hours": hours,
            "gain_per_gpu_hour": gain / hours if gain is not None and hours > 0 else None,
            "tokens_in": int(g["tokens_in"]), "tokens_out": int(g["tokens_out"]), "cost_usd": cost,
            "gain_per_dollar": gain / cost if gain is not None and cost > 0 else None,
            "time_to_target_s": reached, "curve": curve,
        })
    frame = pd.DataFrame(out, columns=[*GROUP_COLUMNS, "curve"])
    if frame.empty:
        return frame
    order = frame["gain"].isna(), -frame["gain"].fillna(0.0), frame["group"]
    frame = frame.assign(_none=order[0], _neg=order[1]).sort_values(["_none", "_neg", "group"], kind="stable")
    return frame.drop(columns=["_none", "_neg"]).reset_index(drop=True)


__all__ = ["EXPERIMENT_COLUMNS", "GROUPINGS", "GROUP_COLUMNS", "RunTable", "best_curve", "group_table",
           "none_if_nan", "records_of"]
