"""The noise model and the promotion gate: pure statistics over measurements.

One experiment is one measurement of one commit. A commit's metric is the mean of all its
measurements, with a standard error sigma / sqrt(n). Sigma, the noise of one measurement, is a
standard deviation pooled from every commit measured more than once (the first-wave baselines,
confirmations of candidates, re-measurements of the best): sum of squared deviations from each
commit's own mean over the summed degrees of freedom.

The gate compares a candidate's mean with the best's mean in units of the standard error of their
difference (a z score). It promotes on a clear win (z at least the one-sided normal quantile of
the confidence, e.g. 2.33 at the default 0.99; on a single run at least 3), discards on a loss or when a candidate still is not clearly
better after `max_runs` measurements, and otherwise asks for another measurement. The futility
bound rises with each measurement, so that a candidate has to look steadily better to earn more
GPU time. Not covered: which commits are candidates or what happens on a promotion (the
coordinator), scheduling the measurements (swarm.decisions.next_kind).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from statistics import NormalDist
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Sample:
    """The measurements of one commit, summarised."""

    n: int
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Sample":
        if not values:
            raise ValueError("a sample needs at least one measurement")
        return cls(len(values), math.fsum(values) / len(values))

    def stderr(self, sigma: float) -> float:
        return sigma / math.sqrt(self.n)


@dataclass(frozen=True)
class Noise:
    """Sigma of one measurement and what it rests on."""

    sigma: float | None  # None: no commit was measured twice yet
    runs: int  # measurements in the commits that were measured more than once
    dof: int  # degrees of freedom: runs minus the number of such commits

    def describe(self) -> str:
        if self.sigma is None:
            return "unknown (no commit measured twice yet)"
        return f"{self.sigma:.6f} (pooled over {self.runs} runs, {self.dof} degrees of freedom)"


def pooled_noise(groups: Iterable[Sequence[float]]) -> Noise:
    """Pooled standard deviation of the measurements, each group being one commit's."""
    squares, runs, dof = 0.0, 0, 0
    for values in groups:
        if len(values) < 2:
            continue
        mean = math.fsum(values) / len(values)
        squares += math.fsum((v - mean) ** 2 for v in values)
        runs += len(values)
        dof += len(values) - 1
    if dof == 0:
        return Noise(None, 0, 0)
    return Noise(math.sqrt(squares / dof), runs, dof)


AT_ONCE_Z = 3.0  # a single run is promoted only when it wins by at least this many standard errors
FUTILE_Z = 0.5  # a single run below this many standard errors better than the best is not measured again


class Verdict(str, Enum):
    PROMOTE = "promote"
    DISCARD = "discard"
    MEASURE_AGAIN = "measure_again"


@dataclass(frozen=True)
class GateResult:
    verdict: Verdict
    reason: str  # one line for the journal and the progress output
    z: float | None = None  # the gain over the best in standard errors (None: no noise model)


@dataclass(frozen=True)
class GatePolicy:
    """How sure a promotion must be. `confidence` is the one knob users turn."""

    confidence: float = 0.99
    max_runs: int = 4  # measurements of a candidate before the gate must decide
    min_delta: float = 0.0  # an extra floor: the mean must also beat the best's by more than this

    @property
    def z_promote(self) -> float:
        return NormalDist().inv_cdf(self.confidence)

    @property
    def z_at_once(self) -> float:
        """The bar for promoting on a single measurement: several standard errors (at least 3)."""
        return max(AT_ONCE_Z, self.z_promote)

    def z_bar(self, n: int) -> float:
        """The promotion bar after n measurements of the candidate."""
        return self.z_at_once if n <= 1 else self.z_promote

    def z_futile(self, n: int) -> float:
        """Below this z after n measurements the candidate is discarded: FUTILE_Z after the first
        (it measured worse than the best, or barely better), rising linearly to the promotion bar
        at `max_runs`."""
        if self.max_runs <= 1:
            return self.z_promote
        return FUTILE_Z + (self.z_promote - FUTILE_Z) * (n - 1) / (self.max_runs - 1)


def gain(candidate: float, best: float, direction: str) -> float:
    """How much better `candidate` is than `best` (positive: better), for either direction."""
    if direction == "min":
        return best - candidate
    if direction == "max":
        return candidate - best
    raise ValueError(f"direction must be 'min' or 'max', not {direction!r}")


def gate(candidate: Sample, best: Sample, sigma: float | None, direction: str, policy: GatePolicy) -> GateResult:
    """Promote, discard, or measure the candidate again, judged against the best under noise.

    Without a noise model (sigma None or 0: nothing measured twice, or a deterministic task) any
    gain beyond `min_delta` is promoted at once, as in the classic loop.
    """
    g = gain(candidate.mean, best.mean, direction)
    runs = f"{candidate.n} run{'s' if candidate.n != 1 else ''}"
    if not sigma:
        if g > policy.min_delta:
            return GateResult(Verdict.PROMOTE, f"better than the best's {best.mean:.6f} by {g:.6f} (no noise model)")
        return GateResult(Verdict.DISCARD, f"not better than the best's {best.mean:.6f}")
    se = sigma * math.sqrt(1.0 / candidate.n + 1.0 / best.n)
    z = g / se
    where = f"mean {candidate.mean:.6f} over {runs} vs best {best.mean:.6f} over {best.n}: {z:+.1f} SE"
    if z >= policy.z_bar(candidate.n) and g > policy.min_delta:
        return GateResult(Verdict.PROMOTE, f"clear win: {where}", z)
    if z >= policy.z_bar(candidate.n):
        return GateResult(Verdict.DISCARD, f"gain {g:.6f} not above --min-delta {policy.min_delta}: {where}", z)
    if candidate.n >= policy.max_runs:
        return GateResult(Verdict.DISCARD, f"not clearly better after {runs}: {where}", z)
    if z < policy.z_futile(candidate.n):
        return GateResult(Verdict.DISCARD, f"{'worse' if g <= 0 else 'not clearly better'}: {where}", z)
    return GateResult(Verdict.MEASURE_AGAIN, f"grey zone, measuring again: {where}", z)


__all__ = ["GatePolicy", "GateResult", "Noise", "Sample", "Verdict", "gain", "gate", "pooled_noise"]
