"""The built-in offline agent: a bandit over hyperparameter edits. No network, no key.

Each proposal changes one UPPER_CASE constant of the mutable file (the effective assignment for
the context's profile), through `swarm.agents.hyperparams`, and is described as
`NAME old -> new`. Arms are (constant, direction) pairs such as ("MATRIX_LR", "up"). The agent
learns from the whole swarm's history, parsed back from descriptions in that format (so learning
survives restarts and is shared between workers): an arm's reward is its experiment's improvement
over the baseline it started from (the mean of its commit's measurements when there are several),
in units of the typical |delta| (crash, timeout, invalid and rejected are a fixed penalty; a
pending result counts with its mean so far; duplicates, interruptions and confirmation runs teach
nothing), older results weigh less. Thompson sampling on a Gaussian posterior picks
the arm (untried arms get the prior, so they are explored); the arm of the edit that made the
current baseline gets a momentum bonus. Within an arm the smallest step not yet tried on this
baseline is used, so a direction that keeps paying widens its steps. An edit already tried on
the same baseline (per the history), running now on another worker (`in_flight`), or still in
flight from this agent is never proposed again; reverting the change that produced the baseline
is only proposed when nothing else is left.

Re-apply (`ctx.reapply`: a win whose change no longer merges onto the best): instead of choosing,
the agent sets the constants that win changed to the values it set them to, on the current file,
described `re-apply #12: NAME old -> new` (old: the value now). The edits come from the win's
description, else from the `NAME = value` lines its diff adds. When nothing can be set (no such
constants, all already at those values, or the same change already tried or running on this
baseline) the proposal carries `error` saying why, never a random edit.
Not covered: combining edits (the coordinator composes parallel wins), running anything.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from swarm.agents.base import AgentContext
from swarm.agents.hyperparams import (
    DEFAULT_EXCLUDE,
    Edit,
    all_edits,
    apply_edits,
    coordinate,
    describe,
    effective_constants,
    parse_description,
)
from swarm.agents.reapply import diff_assignments, setting_edits
from swarm.records import HistoryEntry, Proposal, Reapply, Status, Usage

NOTHING_LEFT = "no untried edit on this baseline"
FAILED = (Status.CRASH, Status.TIMEOUT, Status.INVALID, Status.REJECTED)  # a fixed penalty
MEASURED = (Status.KEEP, Status.DISCARD, Status.PENDING)  # rewarded by their delta (PENDING: the mean so far)
# not learned from: Status.DUPLICATE (it repeats another entry), Status.INTERRUPTED (never measured)

Arm = tuple[str, str]


@dataclass
class ArmStats:
    """Weighted sums of one arm's normalised rewards."""

    weight: float = 0.0
    total: float = 0.0
    count: int = 0

    def posterior(self, prior_strength: float) -> tuple[float, float]:
        """Mean and standard deviation of the arm's mean reward (prior N(0, 1/prior_strength))."""
        precision = prior_strength + self.weight
        return self.total / precision, 1.0 / math.sqrt(precision)


def measured_delta(h: HistoryEntry) -> float | None:
    """The entry's commit metric minus its baseline's: the mean of its measurements when known,
    else its own metric; None when it was not measured or is not finite."""
    value = h.mean if h.mean is not None else h.metric
    if value is None or h.parent_metric is None:
        return None
    delta = value - h.parent_metric
    return delta if math.isfinite(delta) else None


def reward_scale(history: Iterable[HistoryEntry], noise: float | None = None) -> float:
    """The unit rewards are measured in: the median |delta| of measured runs, at least the noise."""
    deltas = [abs(d) for h in history if h.status in MEASURED and (d := measured_delta(h)) is not None]
    scale = statistics.median(deltas) if deltas else 0.0
    scale = max(scale, noise or 0.0)
    return scale if scale > 0 else 1.0


def opposite(direction: str) -> str | None:
    """`up` <-> `down` (also for tuple elements: `up[1]` <-> `down[1]`); None for flips."""
    for a, b in (("up", "down"), ("down", "up")):
        if direction.startswith(a):
            return b + direction[len(a):]
    return None


def similarity(name: str, old: Any, current: Any, direction: str, bandwidth: float = math.log(2)) -> float:
    """How relevant a result from value `old` is at value `current`: 1 at the same place, halving
    about every `bandwidth` (one x2 step) apart on the constant's own scale."""
    if current is None:
        return 1.0
    a, b = coordinate(name, old, direction), coordinate(name, current, direction)
    if a is None or b is None:
        return 1.0 if repr(old) == repr(current) else 0.5
    return math.exp(-abs(a - b) / bandwidth)


def arm_statistics(
    history: tuple[HistoryEntry, ...],
    direction: str = "min",
    noise: float | None = None,
    current: Mapping[str, Any] | None = None,
    crash_penalty: float = 2.0,
    clip: float = 3.0,
    discount: float = 0.98,
    mirror: float = 0.5,
) -> dict[Arm, ArmStats]:
    """Per-arm rewards from every history entry whose description parses as edits.

    Reward = improvement over the entry's own baseline (`measured_delta`) / `reward_scale`,
    clipped to +-`clip`; crash / timeout / invalid / rejected = -`crash_penalty`. The i-th newest
    entry weighs `discount**i`, times the `similarity` of the value it started from to the
    constant's `current` value (name -> value); an entry of k edits credits each arm with 1/k of
    that. A measured loss also counts, `mirror` times as much, as a gain for the opposite
    direction (a landscape is locally monotone).
    """
    scale = reward_scale(history, noise)
    sign = -1.0 if direction == "min" else 1.0
    current = current or {}
    stats: dict[Arm, ArmStats] = {}
    n = len(history)

    def add(arm: Arm, weight: float, reward: float) -> None:
        s = stats.setdefault(arm, ArmStats())
        s.weight += weight
        s.total += weight * reward
        s.count += 1

    for i, h in enumerate(history):
        edits = parse_description(h.description)
        if not edits:
            continue
        delta = measured_delta(h)
        if h.status in FAILED:
            reward = -crash_penalty
        elif h.status in MEASURED and delta is not None:
            reward = max(-clip, min(clip, sign * delta / scale))
        else:
            continue
        for e in edits:
            weight = discount ** (n - 1 - i) / len(edits) * similarity(e.name, e.old_value, current.get(e.name), e.direction)
            add(e.arm, weight, reward)
            other = opposite(e.direction)
            if mirror > 0 and other and h.status in MEASURED and reward < 0:
                add((e.name, other), mirror * weight, -reward)
    return stats


def lineage_hints(history: tuple[HistoryEntry, ...], current: Mapping[str, str]) -> tuple[set[Arm], set[tuple[str, str]]]:
    """From kept edits whose new value is still in force (`current`: name -> repr of value):
    the arms of the newest such keep (momentum) and the reverting edit keys (known worse)."""
    momentum: set[Arm] = set()
    worse: set[tuple[str, str]] = set()
    for h in reversed(history):
        if h.status != Status.KEEP:
            continue
        live = [e for e in parse_description(h.description) if current.get(e.name) == repr(e.new_value)]
        if live and not momentum:
            momentum = {e.arm for e in live}
        worse.update((e.name, repr(e.old_value)) for e in live)
    return momentum, worse


class BuiltinAgent:
    """Thompson-sampling bandit over (constant, direction) arms; see the module docstring."""

    name = "builtin"

    def __init__(
        self,
        seed: int = 0,
        *,
        max_level: int = 3,
        exclude: Iterable[str] = DEFAULT_EXCLUDE,
        only: Iterable[str] | None = None,
        crash_penalty: float = 2.0,
        discount: float = 0.98,
        momentum: float = 0.5,
        mirror: float = 0.5,
        prior_strength: float = 1.0,
    ):
        self.seed = seed
        self.max_level = max_level
        self.exclude = tuple(exclude)
        self.only = tuple(only) if only is not None else None
        self.crash_penalty = crash_penalty
        self.discount = discount
        self.momentum = momentum
        self.mirror = mirror
        self.prior_strength = prior_strength
        self._calls = 0
        self._in_flight: dict[str, set[tuple[str, str]]] = {}  # baseline commit -> keys proposed on it
        self._in_flight_changes: dict[str, set[frozenset[tuple[str, str]]]] = {}  # ... re-applied changes

    @staticmethod
    def _changes_on_baseline(ctx: AgentContext) -> list[frozenset[tuple[str, str]]]:
        """The edit keys of each experiment finished on, or running now from, this baseline."""
        descriptions = [h.description for h in ctx.tried_on_baseline]
        descriptions += [f.description for f in ctx.in_flight_on_baseline]
        return [frozenset(e.key for e in parse_description(d)) for d in descriptions]

    def _tried(self, ctx: AgentContext) -> set[tuple[str, str]]:
        """Edit keys tried on this baseline: finished, running on other workers, or proposed by us."""
        tried = set().union(*self._changes_on_baseline(ctx))
        return tried | self._in_flight.get(ctx.baseline_commit, set())

    def _tried_changes(self, ctx: AgentContext) -> set[frozenset[tuple[str, str]]]:
        """The key sets of whole changes tried or running on this baseline (ours included)."""
        changes = set(self._changes_on_baseline(ctx))
        changes |= {frozenset({k}) for k in self._in_flight.get(ctx.baseline_commit, set())}
        changes |= self._in_flight_changes.get(ctx.baseline_commit, set())
        return changes - {frozenset()}

    def choose(self, ctx: AgentContext, text: str) -> Edit | None:
        """The edit to try next on this baseline, or None when every candidate was tried."""
        consts = effective_constants(text, ctx.profile)
        current = {name: repr(c.value) for name, c in consts.items()}
        tried = self._tried(ctx)
        momentum_arms, worse = lineage_hints(ctx.history, current)
        fresh = [e for e in all_edits(text, ctx.profile, self.max_level, self.exclude, self.only) if e.key not in tried]
        preferred = [e for e in fresh if e.key not in worse] or fresh
        by_arm: dict[Arm, Edit] = {}
        for e in preferred:  # smallest step first within each arm
            if e.arm not in by_arm or e.level < by_arm[e.arm].level:
                by_arm[e.arm] = e
        if not by_arm:
            return None
        values = {name: c.value for name, c in consts.items()}
        stats = arm_statistics(ctx.history, ctx.task.direction, ctx.noise, values, self.crash_penalty,
                               discount=self.discount, mirror=self.mirror)
        rng = random.Random(f"builtin:{self.seed}:{ctx.seed}:{self._calls}")
        best, best_score = None, -math.inf
        for arm in sorted(by_arm):
            mean, sd = stats.get(arm, ArmStats()).posterior(self.prior_strength)
            score = rng.gauss(mean, sd) + (self.momentum if arm in momentum_arms else 0.0)
            if score > best_score:
                best, best_score = by_arm[arm], score
        return best

    def reapply_edits(self, ctx: AgentContext, text: str, reapply: Reapply) -> tuple[list[Edit], str]:
        """The edits that re-apply `reapply`'s change on `text`, or ([], why not)."""
        path = ctx.task.mutable_files[0]
        parsed = parse_description(reapply.description)
        if parsed:
            source = "its description"
            targets = [(e.name, e.new, None) for e in parsed]
        else:
            source = "its diff"  # an indented line sits in a profile block (with a profile)
            targets = [(name, value, indented if ctx.profile is not None else None)
                       for name, value, indented in diff_assignments(reapply.diff, path)]
        if not targets:
            return [], f"cannot re-apply #{reapply.exp_id}: no `NAME old -> new` edit in its description or diff"
        edits, skipped = setting_edits(text, ctx.profile, targets)
        if not edits:
            why = "; ".join(skipped) or "nothing to set"
            return [], f"nothing to re-apply from #{reapply.exp_id} ({source}): {why}"
        if frozenset(e.key for e in edits) in self._tried_changes(ctx):
            return [], f"#{reapply.exp_id}'s change ({describe(edits)}) was already tried or runs now on this baseline"
        return edits, ""

    def propose(self, ctx: AgentContext) -> Proposal:
        self._calls += 1
        path = ctx.task.mutable_files[0]
        text = ctx.files.get(path)
        if text is None:
            return Proposal(f"builtin: {path} missing", error=f"the context has no text for {path}")
        if ctx.reapply is not None:
            return self._propose_reapply(ctx, path, text, ctx.reapply)
        try:
            edit = self.choose(ctx, text)
        except SyntaxError as exc:
            return Proposal(f"builtin: {path} does not parse", error=f"{path} does not parse: {exc}")
        if edit is None:
            return Proposal(NOTHING_LEFT, error=NOTHING_LEFT)
        try:
            new_text = apply_edits(text, [edit])
        except ValueError as exc:  # a bug of ours, not the file's: say so instead of crashing the worker
            return Proposal(f"builtin: {edit.describe()}", error=str(exc))
        self._remember(ctx, [edit])
        return Proposal(edit.describe(), files={path: new_text}, usage=Usage())

    def _propose_reapply(self, ctx: AgentContext, path: str, text: str, reapply: Reapply) -> Proposal:
        label = f"re-apply #{reapply.exp_id}"
        try:
            edits, why = self.reapply_edits(ctx, text, reapply)
        except SyntaxError as exc:
            return Proposal(f"{label}: {path} does not parse", error=f"{path} does not parse: {exc}")
        if not edits:
            return Proposal(label, error=why)
        description = f"{label}: {describe(edits)}"
        try:
            new_text = apply_edits(text, edits)
        except ValueError as exc:
            return Proposal(description, error=str(exc))
        self._remember(ctx, edits)
        return Proposal(description, files={path: new_text}, usage=Usage())

    def _remember(self, ctx: AgentContext, edits: list[Edit]) -> None:
        """Note what was proposed on this baseline (older baselines are forgotten)."""
        commit = ctx.baseline_commit
        keys = {e.key for e in edits}
        self._in_flight = {commit: self._in_flight.get(commit, set()) | keys}
        self._in_flight_changes = {commit: self._in_flight_changes.get(commit, set()) | {frozenset(keys)}}
