"""Promotion under noise, over the run's state: which commit to measure next, and what a new
measurement means for its commit.

Pure functions of a `RunState` (no Ray, git or clock), used by the coordinator at the edges:
`judge` applies the noise gate (swarm.noise) to a candidate commit with all its measurements
against the best of its lane with all of the best's; `confirm_targets` lists the commits that want
another measurement now (grey-zone candidates first, then a best measured fewer times than the
first-wave baseline, so that the reported best is not the luckiest draw); `reapply_diff` renders the
change a lost win made, for the agent asked to re-apply it. Not covered: journaling the decisions
or moving branches (swarm.coordinator).
"""

from __future__ import annotations

import difflib
from typing import Iterable, Mapping

from swarm.decisions import Assignment, Best
from swarm.noise import GatePolicy, GateResult, Sample, gate
from swarm.records import Kind
from swarm.state import RunState


def judge(state: RunState, commit: str, best: Best, policy: GatePolicy) -> GateResult:
    """The gate's verdict on `commit` (measured at least once) against `best` as measured so far."""
    candidate = state.sample(commit)
    if candidate is None:
        raise ValueError(f"commit {commit[:7]} has no measurement")
    best_sample = state.sample(best.commit) or Sample(1, best.metric)
    return gate(candidate, best_sample, state.noise_model().sigma, state.direction, policy)


def confirm_targets(state: RunState, lane: str, worker: str, running: Iterable[Assignment], best_runs: int) -> list[str]:
    """Commits of `lane` to measure again now, most urgent first.

    A commit already being measured again is left out (one confirmation at a time each, so the gate
    sees every result before asking for more). Among the grey-zone candidates, those this worker has
    not measured yet come first (another worker, another seed). Then the lane's best, when it was
    promoted from fewer measurements than `best_runs`.
    """
    busy = {a.parent for a in running if a.kind == Kind.CONFIRM}
    waiting = [c for c in state.pending_commits(lane) if c not in busy]
    waiting.sort(key=lambda c: worker in state.measured_by.get(c, ()))  # stable: oldest first within each group
    best = state.lane_best(lane)
    if best is not None and best.exp_id is not None and best.commit not in busy:
        sample = state.sample(best.commit)
        if sample is not None and sample.n < best_runs:
            waiting.append(best.commit)
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


__all__ = ["confirm_description", "confirm_targets", "judge", "reapply_diff"]
