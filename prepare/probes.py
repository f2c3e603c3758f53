"""Causality probes: does any prediction depend on a later token (or on what the model saw before)?

A probe is an extra batch that the referee builds from evaluation rows and sends among the real
batches at random places, shaped like any other batch: its row r copies evaluation row `src`
with every token after a random position t replaced by random tokens (the one at t + 1 always
differs). A model whose prediction at position p uses only tokens 0..p gives the same logits at
every position <= t for the probe row and for the real row: bitwise on a CPU, within a small
tolerance under bf16 on a GPU. They are compared at t, the three positions before it (a model
that peeks at the next few tokens) and up to 12 random earlier ones, with two statistics: the
largest |delta logit|, and the mean gain in log-probability of the real row's true next token
over the probe's (what peeking buys), averaged per distance from t. Either above its tolerance
refuses the run. The same
comparison catches a model that changes during evaluation or answers from memory of earlier
batches, since the two copies reach it at different times. Where the probes go, which rows they
copy and where they cut is drawn by the referee from its own entropy, so the trainer cannot
know which batches are probed. Not covered: sending batches and scoring (prepare/referee.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

PROBE_BATCHES = 3  # probe batches per evaluation
NEAR = 4  # positions t, t-1, t-2, t-3 are always compared
FAR = 12  # plus up to this many random positions before them


@dataclass(frozen=True)
class Tolerance:
    max_abs: float  # largest |delta logit| allowed at a compared position
    mean_gain: float  # largest mean gain (nats) of the true next token's log-probability allowed


# float32 end to end on a CPU: the same prefix gives the same logits up to float rounding; bf16
# autocast on a GPU: a few ulps of a logit near the soft cap (0.0625 each). The mean gain is taken per
# distance t - position (0, 1, 2, 3, farther), so a model peeking one token ahead cannot hide its
# gain at position t among the positions where both copies agree.
TOLERANCES = {"cpu": Tolerance(max_abs=1e-4, mean_gain=1e-5), "cuda": Tolerance(max_abs=0.25, mean_gain=5e-3)}


@dataclass(frozen=True)
class ProbeRow:
    src: int  # the evaluation row it copies
    t: int  # the last position kept; every later token is replaced
    positions: tuple[int, ...]  # compared positions, all <= t


def plan(n_rows: int, seq_len: int, batch_size: int, count: int, rng: random.Random) -> list[tuple[ProbeRow, ...]]:
    """`count` probe batches of `batch_size` rows each (distinct source rows within a batch)."""
    probes = []
    for _ in range(count):
        srcs = rng.sample(range(n_rows), batch_size) if batch_size <= n_rows else \
            [rng.randrange(n_rows) for _ in range(batch_size)]
        rows = []
        for src in srcs:
            t = rng.randrange(seq_len - 1)  # at least one token after t is replaced
            near = range(max(0, t - NEAR + 1), t + 1)
            far = rng.sample(range(0, near.start), min(FAR, near.start)) if near.start else []
            rows.append(ProbeRow(src, t, tuple(sorted({*near, *far}))))
        probes.append(tuple(rows))
    return probes


def probe_tokens(rows, probe: tuple[ProbeRow, ...], vocab: int, rng: random.Random):
    """int64 [B, T]: the probe's rows (x part of the evaluation rows [N, T+1]) with random tails."""
    import torch

    T = rows.size(1) - 1
    x = rows[[p.src for p in probe], :T].clone()
    gen = torch.Generator().manual_seed(rng.getrandbits(63))
    for r, p in enumerate(probe):
        tail = torch.randint(0, vocab, (T - p.t - 1,), generator=gen)
        if tail[0] == x[r, p.t + 1]:
            tail[0] = (tail[0] + 1) % vocab
        x[r, p.t + 1 :] = tail
    return x


def _sample(row_logits, positions):
    """float32 copy of the logits at `positions` of one row (ValueError: NaN or +inf among them)."""
    import torch

    out = row_logits[list(positions)].float().cpu().clone()
    if bool(torch.isnan(out).any()) or bool((out == float("inf")).any()):
        raise ValueError("non-finite logits")
    return out


@dataclass
class Comparison:
    """Collects the logits of probed rows from both sides and judges them."""

    rows: object  # int64 [N, T+1]: the evaluation rows (targets of the compared positions)
    probes: list  # list[tuple[ProbeRow, ...]]
    tolerance: Tolerance
    _by_src: dict = field(init=False, default_factory=dict)  # src row -> [(probe index, row index)]
    _real: dict = field(init=False, default_factory=dict)  # (probe, row) -> float32 [K, V']
    _probe: dict = field(init=False, default_factory=dict)
    worst: float = field(init=False, default=0.0)  # after verdict(): the largest |delta logit| seen
    gain: float = field(init=False, default=0.0)  # after verdict(): the largest mean gain of one distance group

    def __post_init__(self) -> None:
        for i, probe in enumerate(self.probes):
            for r, p in enumerate(probe):
                self._by_src.setdefault(p.src, []).append((i, r))

    def on_real(self, first_row: int, logits) -> None:
        """Keep what is needed from a real batch holding evaluation rows first_row, first_row+1, ...
        (ValueError when a kept logit is NaN or +inf)."""
        for local in range(logits.size(0)):
            for i, r in self._by_src.get(first_row + local, ()):
                self._real[(i, r)] = _sample(logits[local], self.probes[i][r].positions)

    def on_probe(self, index: int, logits, first: int = 0) -> None:
        """Keep the compared positions of probe batch `index`, rows first, first+1, ... of it."""
        for local in range(logits.size(0)):
            p = self.probes[index][first + local]
            self._probe[(index, first + local)] = _sample(logits[local], p.positions)

    def verdict(self) -> str | None:
        """None when every probed prediction is consistent; else the one-line reason."""
        import torch

        worst, where, gains = 0.0, None, {}  # gains by distance t - position (NEAR: farther)
        for key, real in self._real.items():
            probe = self._probe.get(key)
            if probe is None:
                continue
            p = self.probes[key[0]][key[1]]
            if real.shape != probe.shape:
                return f"the model answered a probe with logits of another width ({probe.shape[-1]} vs {real.shape[-1]})"
            diff = torch.where(real == probe, torch.zeros_like(real), (real - probe).abs())  # -inf == -inf
            d = float(diff.max())
            if d > worst:
                worst, where = d, (p.t, p.positions[int(diff.max(dim=-1).values.argmax())])
            targets = self.rows[p.src, [q + 1 for q in p.positions]].long()
            lp_real = torch.log_softmax(real.double(), -1).gather(-1, targets[:, None]).squeeze(-1)
            lp_probe = torch.log_softmax(probe.double(), -1).gather(-1, targets[:, None]).squeeze(-1)
            gain = torch.nan_to_num(lp_real - lp_probe, nan=0.0)
            for q, g in zip(p.positions, gain.tolist()):
                gains.setdefault(min(p.t - q, NEAR), []).append(g)
        self.worst = worst
        self.gain = max((sum(g) / len(g) for g in gains.values()), default=0.0)
        if worst > self.tolerance.max_abs:
            t, pos = where
            return (f"predictions depend on future tokens or on earlier batches: changing the tokens after "
                    f"position {t} moved the logits at position {pos} by {worst:.3g} (tolerance {self.tolerance.max_abs:g})")
        if self.gain > self.tolerance.mean_gain:
            return (f"predictions depend on future tokens: the true next token gains {self.gain:.3g} nats on average "
                    f"when the later tokens are the real ones (tolerance {self.tolerance.mean_gain:g})")
        return None

    @property
    def compared(self) -> int:
        return sum(1 for key in self._real if key in self._probe)
