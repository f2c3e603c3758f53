"""Pure decisions of the swarm: keep or discard, promotion, combination, baseline, scheduling.

Everything here is a function of frozen values: no Ray, no git, no clock, no I/O, so the rules
are tested directly (tests/test_decisions.py). The coordinator applies the results at the edges.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import Sequence

from swarm.records import ExperimentRecord, Kind, Reapply, Status

# Worker verdicts that mean "measured cleanly": the decision then compares the metric.
MEASURED = Status.KEEP


@dataclass(frozen=True)
class Best:
    """The tip of the best branch: always a measured commit with its recorded metric."""

    commit: str
    metric: float
    exp_id: int | None  # None: the first-wave baseline (median of several runs)
    lane: str = "main"  # whose best branch (swarm.lanes); "main" in a shared run


@dataclass(frozen=True)
class Decision:
    status: Status  # final status of the experiment
    reason: str  # one short line for the journal and the progress output
    promote: bool = False  # advance the best branch to the experiment's commit
    combine: bool = False  # also queue the combination with the best it raced against


def improves(metric: float, best: float, direction: str, min_delta: float = 0.0) -> bool:
    """Strictly better than `best` by more than `min_delta` (0: any strict improvement)."""
    if direction == "min":
        return metric < best - min_delta
    if direction == "max":
        return metric > best + min_delta
    raise ValueError(f"direction must be 'min' or 'max', not {direction!r}")


def decide(record: ExperimentRecord, best: Best | None, direction: str, min_delta: float = 0.0) -> Decision:
    """The final status of a finished experiment judged against the current best.

    Worker verdicts other than a clean measurement (crash, timeout, invalid, interrupted) stand.
    A first-wave baseline is kept (it *is* the starting point; its metric feeds the median).
    Anything else is kept and promoted only when strictly better than the current best; when it
    started from an older best than the current one, the combination of both is also asked for.
    """
    if record.status != MEASURED:
        return Decision(record.status, record.error or record.status.value)
    if record.metric is None:
        return Decision(Status.CRASH, "no metric in the summary")
    if record.kind == Kind.BASELINE:
        return Decision(Status.KEEP, "baseline")
    if best is None:
        return Decision(Status.DISCARD, "no best to compare with yet")
    if not improves(record.metric, best.metric, direction, min_delta):
        return Decision(Status.DISCARD, f"not better than best {best.metric:.6f}")
    raced = record.parent != best.commit
    reason = f"improves on best {best.metric:.6f}"
    if raced:
        reason += " (started from an older best: combination queued)"
    return Decision(Status.KEEP, reason, promote=True, combine=raced)


def baseline_stats(metrics: Sequence[float]) -> tuple[float, float | None]:
    """(mean, standard deviation) of the first wave's baseline metrics (None for one run)."""
    if not metrics:
        raise ValueError("no baseline metrics")
    return float(statistics.fmean(metrics)), (float(statistics.stdev(metrics)) if len(metrics) > 1 else None)


@dataclass(frozen=True)
class SchedulerView:
    """What scheduling needs to know about the run, as plain numbers."""

    started: int  # experiments of the whole run that count towards the limit: finished or running, not interrupted
    baseline_done: bool  # the first wave has been measured (the worker's lane has a best)
    baselines_to_start: int  # first-wave runs still to hand out
    queued_combinations: int  # of the worker's lane (re-applied wins included)
    max_experiments: int | None  # total for the run, across resumes; None: no limit
    stopping: bool = False  # Ctrl-C, --hours reached, or a fatal error
    confirms_wanted: int = 0  # measurements the noise gate asks for in the worker's lane, not yet running
    best_unsettled: bool = False  # one of them: the lane's best, promoted on fewer runs than it needs


def next_kind(view: SchedulerView) -> Kind | None:
    """What an idle worker should run next, or None (nothing for it now: wait or stop).

    Order: the first wave's baselines; nothing until they are all measured; then re-measuring a
    best promoted on few runs (every candidate is judged against it); then queued combinations and
    re-applied wins (two measured wins together: the likeliest gains); then confirmations of
    candidates in the noise gate's grey zone; then fresh proposals.
    """
    if view.stopping:
        return None
    if view.max_experiments is not None and view.started >= view.max_experiments:
        return None
    if not view.baseline_done:
        return Kind.BASELINE if view.baselines_to_start > 0 else None
    if view.best_unsettled:
        return Kind.CONFIRM
    if view.queued_combinations > 0:
        return Kind.COMBINATION
    if view.confirms_wanted > 0:
        return Kind.CONFIRM
    return Kind.PROPOSAL


def experiment_seed(run_seed: int, exp_id: int) -> int:
    """A per-experiment seed for agents that sample: differs per experiment, stable on resume."""
    return (run_seed * 1_000_003 + exp_id * 7919) % (2**31)


@dataclass(frozen=True)
class Assignment:
    """One experiment handed to a worker (the journal's `experiment_started` body, minus bulk).

    `parent` is the commit to start from: the current best, or for a combination the promoted
    candidate it was computed on. `files` (combinations only) are the merged mutable files.
    `history` and `files` travel to the worker but are not written with the assignment.
    """

    exp_id: int
    worker: str
    agent: str
    kind: Kind
    parent: str
    parent_metric: float | None
    noise: float | None = None
    description: str = ""
    files: tuple[tuple[str, str], ...] = ()
    combo_id: int | None = None
    seed: int = 0
    started_at: float = 0.0
    history: tuple = ()  # tuple[HistoryEntry, ...]
    lane: str = "main"  # the lane the experiment races for (swarm.lanes)
    reapply: Reapply | None = None  # a proposal that re-applies a lost win's change (its agent is asked)

    def to_dict(self) -> dict:
        return {
            "exp_id": self.exp_id,
            "worker": self.worker,
            "agent": self.agent,
            "kind": self.kind.value,
            "parent": self.parent,
            "parent_metric": self.parent_metric,
            "noise": self.noise,
            "description": self.description,
            "combo_id": self.combo_id,
            "seed": self.seed,
            "started_at": self.started_at,
            "lane": self.lane,
            **({"reapply": dataclasses.asdict(self.reapply)} if self.reapply else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Assignment":
        return cls(
            exp_id=int(d["exp_id"]),
            worker=d["worker"],
            agent=d.get("agent", ""),
            kind=Kind(d["kind"]),
            parent=d["parent"],
            parent_metric=d.get("parent_metric"),
            noise=d.get("noise"),
            description=d.get("description", ""),
            combo_id=d.get("combo_id"),
            seed=int(d.get("seed", 0)),
            started_at=float(d.get("started_at", 0.0)),
            lane=d.get("lane", "main"),
            reapply=Reapply(**d["reapply"]) if d.get("reapply") else None,
        )


def unfinished_record(a: Assignment, status: Status, error: str, now: float) -> ExperimentRecord:
    """The record of an experiment that never reported (interrupted run, dead worker actor)."""
    return ExperimentRecord(
        exp_id=a.exp_id,
        worker=a.worker,
        agent=a.agent,
        kind=a.kind,
        parent=a.parent,
        commit="",
        description=a.description or a.kind.value,
        status=status,
        parent_metric=a.parent_metric,
        started_at=a.started_at,
        finished_at=now,
        lane=a.lane,
        error=error,
    )
