"""The built-in offline agent: a bandit over hyperparameter edits. No network, no key.

Each proposal changes one UPPER_CASE constant of the mutable file (the effective assignment for
the context's profile), through `swarm.agents.hyperparams`, and is described as
`NAME old -> new`. Arms are (constant, direction) pairs such as ("MATRIX_LR", "up"). The agent
learns from the whole swarm's history, parsed back from descriptions in that format (so learning
survives restarts and is shared between workers): an arm's reward is its experiment's improvement
over the baseline it started from, in units of the typical |delta| (crash, timeout and invalid
are a fixed penalty), older results weigh less. Thompson sampling on a Gaussian posterior picks
the arm (untried arms get the prior, so they are explored); the arm of the edit that made the
current baseline gets a momentum bonus. Within an arm the smallest step not yet tried on this
baseline is used, so a direction that keeps paying widens its steps. An edit already tried on
the same baseline (per the history, or still in flight from this agent) is never proposed again;
reverting the change that produced the baseline is only proposed when nothing else is left.
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
    effective_constants,
    parse_description,
)
from swarm.records import HistoryEntry, Proposal, Status, Usage

NOTHING_LEFT = "no untried edit on this baseline"
FAILED = (Status.CRASH, Status.TIMEOUT, Status.INVALID)
MEASURED = (Status.KEEP, Status.DISCARD)

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


def reward_scale(history: Iterable[HistoryEntry], noise: float | None = None) -> float:
    """The unit rewards are measured in: the median |delta| of measured runs, at least the noise."""
    deltas = [abs(h.delta) for h in history if h.status in MEASURED and h.delta is not None and math.isfinite(h.delta)]
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

    Reward = improvement over the entry's own baseline / `reward_scale`, clipped to +-`clip`;
    crash / timeout / invalid = -`crash_penalty`. The i-th newest entry weighs `discount**i`,
    times the `similarity` of the value it started from to the constant's `current` value (name ->
    value); an entry of k edits credits each arm with 1/k of that. A measured loss also counts,
    `mirror` times as much, as a gain for the opposite direction (a landscape is locally monotone).
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
        if h.status in FAILED:
            reward = -crash_penalty
        elif h.status in MEASURED and h.delta is not None and math.isfinite(h.delta):
            reward = max(-clip, min(clip, sign * h.delta / scale))
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

    def _tried(self, ctx: AgentContext) -> set[tuple[str, str]]:
        tried = {e.key for h in ctx.tried_on_baseline for e in parse_description(h.description)}
        return tried | self._in_flight.get(ctx.baseline_commit, set())

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

    def propose(self, ctx: AgentContext) -> Proposal:
        self._calls += 1
        path = ctx.task.mutable_files[0]
        text = ctx.files.get(path)
        if text is None:
            return Proposal(f"builtin: {path} missing", error=f"the context has no text for {path}")
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
        self._in_flight = {ctx.baseline_commit: self._in_flight.get(ctx.baseline_commit, set()) | {edit.key}}
        return Proposal(edit.describe(), files={path: new_text}, usage=Usage())
