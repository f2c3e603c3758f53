"""Promotion under noise, over the run's state: which commit to measure next, and what a new
measurement means for its commit.

Pure functions of a `RunState` (no Ray, git or clock), used by the coordinator at the edges:
`judge` applies the noise gate (swarm.noise) to a candidate commit with all its measurements
against a reference commit with all of its own (the best of its lane, or the candidate's parent);
`confirm_targets` lists the commits that want another measurement now (a best promoted on few runs
first, so that the reported best is not the luckiest draw, then grey-zone candidates); `reapply_diff` renders the
change a lost win made, for the agent asked to re-apply it. Not covered: journaling the decisions
or moving branches (swarm.coordinator).
"""

from __future__ import annotations

import difflib
from collections import Counter
from typing import Iterable, Mapping

from swarm.decisions import Assignment, Best
from swarm.noise import GatePolicy, GateResult, Sample, gate
from swarm.records import Kind
from swarm.state import RunState


BEST_EXTRA_RUNS = 2  # a new best is re-measured until it has --max-runs + this many runs (the winner's curse) ...
WORKERS_PER_BEST_RUN = 2  # ... and one more for every this many workers
PARALLEL_CONFIRMS = 2  # confirmations of one candidate running at once (fewer rounds until it is decided)


def judge(state: RunState, commit: str, best: Best, policy: GatePolicy) -> GateResult:
    """The gate's verdict on `commit` (measured at least once) against `best` as measured so far."""
    candidate = state.sample(commit)
    if candidate is None:
        raise ValueError(f"commit {commit[:7]} has no measurement")
    best_sample = state.sample(best.commit) or Sample(1, best.metric)
    return gate(candidate, best_sample, state.noise_model().sigma, state.direction, policy)


def judge_against_parent(state: RunState, commit: str, parent: str, policy: GatePolicy) -> GateResult | None:
    """The gate's verdict on `commit` against the commit it started from (None: parent unmeasured).

    For a candidate that raced a newer best: it may not beat that best (which holds another win)
    and still be a real gain over its own parent; then its change belongs in a combination."""
    candidate, base = state.sample(commit), state.sample(parent)
    if candidate is None or base is None:
        return None
    return gate(candidate, base, state.noise_model().sigma, state.direction, policy)


def best_runs_wanted(max_runs: int, workers: int) -> int:
    """How many measurements a new best gets before it stops being re-measured.

    It was promoted on its luckiest draws, and every candidate is judged against it: a best measured
    too well makes real gains look like losses, one measured too badly lets noise through. Both
    grow with the number of workers, since more candidates are judged against the same best, and
    the best that survives the most challenges is the one whose mean flatters it most. So the bar
    is --max-runs + BEST_EXTRA_RUNS, plus one run for every WORKERS_PER_BEST_RUN workers (10 runs at
    8 workers with the default --max-runs 4). With --max-runs 1 every decision rests on one run.
    """
    if max_runs <= 1:
        return 1
    return max_runs + BEST_EXTRA_RUNS + -(-max(workers, 1) // WORKERS_PER_BEST_RUN)


def confirm_targets(state: RunState, lane: str, worker: str, running: Iterable[Assignment], best_runs: int) -> list[str]:
    """Commits of `lane` to measure again now, most urgent first.

    First the lane's best, while it rests on fewer than `best_runs` measurements (it was promoted on
    its luckiest draws: more runs pull its mean to its truth, and every candidate is judged against
    it). Then the grey-zone candidates, oldest first, those this worker has not measured yet ahead
    (another worker, another seed). Up to PARALLEL_CONFIRMS confirmations of one candidate run at
    once, those with fewer running first: the gate decides in fewer rounds, at the price of a run
    it may turn out not to need.
    """
    busy = Counter(a.parent for a in running if a.kind == Kind.CONFIRM)
    waiting = [c for c in state.pending_commits(lane) if busy[c] < PARALLEL_CONFIRMS]
    waiting.sort(key=lambda c: (busy[c], worker in state.measured_by.get(c, ())))  # stable: oldest first
    best = state.lane_best(lane)
    if best is not None and best.exp_id is not None and not busy[best.commit]:
        sample = state.sample(best.commit)
        if sample is not None and sample.n < best_runs:
            waiting.insert(0, best.commit)
    return waiting


def confirm_description(state: RunState, commit: str) -> str:
    """`confirm #12 (MATRIX_LR 0.04 -> 0.05)`: which experiment's commit is measured again."""
    first = next((r for r in state.result_records() if r.commit == commit and r.kind != Kind.CONFIRM), None)
    if first is None:
        return f"confirm {commit[:7]}"
    return f"confirm #{first.exp_id} ({first.description})"


def reapply_diff(before: Mapping[str, str | None], after: Mapping[str, str | None]) -> str:
    """Unified diff of the mutable files from `before` to `after` (what a win changed)."""
    out: list[str] = []
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path) or "", after.get(path) or ""
        if a == b:
            continue
        out.extend(difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True),
                                        f"a/{path}", f"b/{path}", n=2))
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


__all__ = ["best_runs_wanted", "confirm_description", "confirm_targets", "judge", "judge_against_parent", "reapply_diff"]
