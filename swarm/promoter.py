"""Applying promotion decisions: the noise gate's verdicts, the best branch, combinations, re-applies.

`Promoter` is the part of the coordinator that turns a clean measurement into decisions and moves
the best branch: it asks the noise gate (swarm.promotion, swarm.noise) about the measured commit,
journals `pending` or the commit's final status for every experiment of it, advances the lane's
best branch with a compare-and-swap ref update, and when the winner raced against a newer best
queues their combination (a 3-way merge) or, when they conflict, a re-apply of the displaced win
by an agent of the lane. It writes only through the coordinator's journal function, so the run's state stays
a replay of the journal. Not covered: scheduling (swarm.decisions), the first wave (coordinator),
workers.
"""

from __future__ import annotations

from typing import Any, Callable

from swarm import gitops
from swarm.config import SwarmConfig
from swarm.decisions import Best
from swarm.errors import GitError
from swarm.journal import EventType
from swarm.lanes import best_ref
from swarm.merge import merge_versions
from swarm.noise import GatePolicy, GateResult, Verdict
from swarm.promotion import judge, judge_against_parent, reapply_diff
from swarm.records import ExperimentRecord, Kind, Status
from swarm.state import RunState


class Promoter:
    def __init__(self, config: SwarmConfig, repo: Any, log: Callable[..., None], state: Callable[[], RunState]):
        """`log(event, **body)` journals and applies an event; `state()` is the run's current state."""
        self.config = config
        self.repo = repo
        self._log = log
        self._state = state
        self.policy = GatePolicy(config.confidence, config.max_runs, config.min_delta)

    @property
    def state(self) -> RunState:
        return self._state()

    def judge(self, record: ExperimentRecord, best: Best) -> None:
        """The noise gate's decision on a clean measurement of a proposal, combination or confirmation.

        The verdict is about the commit (all its measurements): promote or discard decides every
        experiment of it still pending; "measure again" leaves this one pending and a confirmation
        is scheduled ahead of fresh proposals. A re-measurement of the best itself is kept."""
        s, commit = self.state, record.commit
        if record.kind == Kind.CONFIRM and commit not in s.pending:
            is_best = commit == best.commit
            sample = s.sample(commit)
            self._log(EventType.DECISION, exp_id=record.exp_id, status=(Status.KEEP if is_best else Status.DISCARD).value,
                      reason=("re-measured the best: " if is_best else "its commit was decided meanwhile: ")
                      + f"mean {sample.mean:.6f} over {sample.n} runs", best_metric=best.metric)
            if is_best:  # the best's recorded metric is the mean of all its runs, not its luckiest draw
                self._log(EventType.BEST_MEASURED, commit=commit, metric=sample.mean, runs=sample.n,
                          exp_id=record.exp_id, lane=record.lane)
            return
        first = min((r for r in [*s.records.values(), record] if r.commit == commit and r.kind != Kind.CONFIRM),
                    key=lambda r: r.exp_id, default=record)
        result = judge(s, commit, best, self.policy)
        to_combine = False
        if result.verdict != Verdict.PROMOTE and first.parent != best.commit:
            # it raced a newer best: a real gain over its own parent still belongs in a combination,
            # unless the best holds its change already (then more runs of it would teach nothing)
            vs_parent = judge_against_parent(s, commit, first.parent, self.policy)
            if vs_parent is not None and vs_parent.verdict != Verdict.DISCARD and self._contains(best.commit, first):
                vs_parent = None
                result = GateResult(Verdict.DISCARD, f"its change is in the best already ({result.reason})", result.z)
            if vs_parent is not None and vs_parent.verdict == Verdict.MEASURE_AGAIN:
                result = vs_parent
            elif vs_parent is not None and vs_parent.verdict == Verdict.PROMOTE:
                result, to_combine = vs_parent, True
        if result.verdict == Verdict.MEASURE_AGAIN:
            self._log(EventType.DECISION, exp_id=record.exp_id, status=Status.PENDING.value, reason=result.reason,
                      best_metric=best.metric, z=result.z)
            return
        status = Status.KEEP if result.verdict == Verdict.PROMOTE and not to_combine else Status.DISCARD
        reason = result.reason
        if to_combine:
            reason = f"a real gain over its parent, not over the newer best: combined with the best ({reason})"
        for exp_id in [*s.pending.get(commit, []), record.exp_id]:
            if exp_id == record.exp_id or s.records[exp_id].status == Status.PENDING:
                self._log(EventType.DECISION, exp_id=exp_id, status=status.value, reason=reason,
                          best_metric=best.metric, z=result.z)
        if status == Status.KEEP:
            self.promote(first.replace(metric=s.sample(commit).mean), best, combine=first.parent != best.commit)
        elif to_combine and best.exp_id is not None and best.exp_id in s.records:
            onto = s.records[best.exp_id].replace(commit=best.commit, metric=best.metric)
            self._combine(onto, first.parent, commit, first, first.exp_id)

    def _contains(self, commit: str, change: ExperimentRecord) -> bool:
        """Whether `commit` holds `change` (its parent -> commit) already: merging adds nothing."""
        paths = self.config.task.mutable_files
        try:
            base, ours, theirs = ({p: gitops.file_at(self.repo, c, p) for p in paths}
                                  for c in (change.parent, commit, change.commit))
        except GitError:
            return False
        merged = merge_versions(base, ours, theirs, paths)
        return merged is not None and all(merged.get(p) == ours[p] for p in paths)

    def confirm_failed(self, record: ExperimentRecord) -> None:
        """A confirmation crashed or timed out: after two such failures the candidate is discarded."""
        s, commit = self.state, record.commit
        failed = sum(1 for r in s.records.values() if r.kind == Kind.CONFIRM and r.commit == commit
                     and r.status not in (Status.KEEP, Status.DISCARD, Status.PENDING, Status.INTERRUPTED))
        if failed < 2:
            return
        for exp_id in list(s.pending.get(commit, [])):
            self._log(EventType.DECISION, exp_id=exp_id, status=Status.DISCARD.value,
                      reason=f"its confirmations failed {failed} times (last: {record.error[:120]})")

    def promote(self, record: ExperimentRecord, old: Best, combine: bool) -> None:
        """Advance the lane's best branch to `record.commit` (its metric: the mean of its runs).

        `combine`: it started from an older best than `old`, so what `old` holds beyond that parent
        is merged onto it as a queued combination (or, on a conflict, re-applied by its agent)."""
        try:
            gitops.update_ref(self.repo, best_ref(self.config.tag, record.lane), record.commit, old.commit)
        except GitError as exc:  # the journal stays the truth: a resume re-tries the promotion (_settle)
            self._log(EventType.NOTE, text=f"#{record.exp_id} not promoted: {exc}")
            return
        self._log(EventType.BEST_ADVANCED, commit=record.commit, metric=record.metric, exp_id=record.exp_id,
                  previous_commit=old.commit, previous_metric=old.metric, lane=record.lane)
        if combine:
            displaced = self.state.records.get(old.exp_id) if old.exp_id is not None else None
            self._combine(record, record.parent, old.commit, displaced, old.exp_id)

    def _combine(self, onto: ExperimentRecord, base: str, other: str, lost: ExperimentRecord | None,
                 other_id: int | None) -> None:
        """Queue `onto` + the change base -> `other` as a combination on `onto.commit`; when the two
        conflict, queue `lost` (the experiment behind `other`) to be re-applied by an agent of the lane."""
        paths = self.config.task.mutable_files
        try:
            base_f, ours, theirs = ({p: gitops.file_at(self.repo, c, p) for p in paths} for c in (base, onto.commit, other))
        except GitError as exc:  # e.g. a mutable file that is not UTF-8 text
            self._log(EventType.COMBINATION_SKIPPED, exp_id=onto.exp_id, lane=onto.lane,
                      reason=f"cannot read the versions to combine: {exc}")
            return
        files = merge_versions(base_f, ours, theirs, paths)
        if files is None:
            self._queue_reapply(onto, lost, other)
            return
        if all(files.get(p) == ours[p] for p in paths):
            self._log(EventType.COMBINATION_SKIPPED, exp_id=onto.exp_id, lane=onto.lane,
                      reason="nothing to combine: the other change is already in")
            return
        description = (f"combine #{onto.exp_id} ({onto.description}) + "
                       f"#{other_id} ({lost.description if lost else 'best'})")
        self._log(EventType.COMBINATION_QUEUED, combo_id=self.state.combos_queued + 1,
                  parent=onto.commit, parent_metric=onto.metric, files=files, description=description,
                  sources=[onto.exp_id, other_id], lane=onto.lane)

    def _queue_reapply(self, onto: ExperimentRecord, lost: ExperimentRecord | None, other: str) -> None:
        """`lost`'s change conflicts with the best `onto`: it is not dropped but queued for an agent of
        the lane (the next idle worker's) to re-apply on top of that best."""
        if lost is None:
            self._log(EventType.COMBINATION_SKIPPED, exp_id=onto.exp_id, lane=onto.lane,
                      reason=f"its change conflicts with the best it raced against ({other[:7]})")
            return
        paths = self.config.task.mutable_files
        before, after = ({p: gitops.file_at(self.repo, c, p) for p in paths} for c in (lost.parent, lost.commit))
        reapply = {"exp_id": lost.exp_id, "description": lost.description, "diff": reapply_diff(before, after)}
        self._log(EventType.COMBINATION_QUEUED, combo_id=self.state.combos_queued + 1, parent=onto.commit,
                  parent_metric=onto.metric, files={}, reapply=reapply, sources=[onto.exp_id, lost.exp_id],
                  description=f"re-apply #{lost.exp_id} ({lost.description}) on #{onto.exp_id}: they conflict",
                  lane=onto.lane)
