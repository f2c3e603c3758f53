"""Frozen records the parts of the swarm exchange: statuses, proposals, experiment results.

These are plain data; they know how to turn into and from JSON-able dicts (for the journal and
for Ray), nothing else. Decisions over them live in `swarm.decisions`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping


class Status(str, Enum):
    """Outcome of one experiment. `str` so it serialises as its value."""

    KEEP = "keep"  # improved on the best: the best branch advanced to it
    DISCARD = "discard"  # measured, but not better than the best
    CRASH = "crash"  # non-zero exit, no summary, metric missing or not finite, dead worker
    TIMEOUT = "timeout"  # killed at the task's hard timeout
    INVALID = "invalid"  # the edit did not apply or touched a file it may not
    INTERRUPTED = "interrupted"  # the run stopped while the experiment was running
    REJECTED = "rejected"  # the referee refused the run (it broke a rule: time, data, causality, ...)
    DUPLICATE = "duplicate"  # the same change (same resulting files) already ran or runs on that parent
    PENDING = "pending"  # measured, waiting for another measurement before keep or discard (never final)


class Kind(str, Enum):
    """Why an experiment was run."""

    BASELINE = "baseline"  # first wave: the unmodified starting commit, once per worker
    PROPOSAL = "proposal"  # an agent's edit of the current best
    COMBINATION = "combination"  # a promoted candidate combined with the best it raced against
    CONFIRM = "confirm"  # another measurement of an existing commit (a candidate in the grey zone)


@dataclass(frozen=True)
class Usage:
    """What producing a proposal cost (summed over all model calls for it)."""

    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.calls + other.calls,
            self.tokens_in + other.tokens_in,
            self.tokens_out + other.tokens_out,
            self.cost_usd + other.cost_usd,
        )


@dataclass(frozen=True)
class Proposal:
    """An agent's answer: what it changed and why.

    `files` maps repository-relative paths to their complete new text. An agent that edits the
    worktree in place (the command agent) returns `files={}`; the worker reads the change from
    git either way. `error` set means the agent failed to produce a usable edit: the experiment
    is recorded `invalid` with that message.
    """

    description: str
    files: Mapping[str, str] = field(default_factory=dict)
    usage: Usage = Usage()
    error: str | None = None


@dataclass(frozen=True)
class AgentFailure:
    """An agent attempt that gave no proposal (`AgentError`: an outage past the agent's own retries).

    Not an experiment: nothing is recorded for it but a journal `agent_error` event, whose usage
    counts towards the run's cost.
    """

    error: str
    usage: Usage = Usage()
    at: float = 0.0  # unix seconds it gave up
    seconds: float = 0.0  # how long the attempt took
    prefetched: bool = False  # it was a prefetch (made while an experiment ran)
    permanent: bool = False  # asking again will not help (AgentError.permanent): the worker is retired

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class InFlight:
    """An experiment running now, as agents see it (so that nobody starts the same edit twice)."""

    exp_id: int
    worker: str
    agent: str
    parent: str  # the commit it started from
    description: str


@dataclass(frozen=True)
class Reapply:
    """A win whose change no longer merges onto the best: the agent is asked to re-apply it."""

    exp_id: int  # the experiment whose change is re-applied
    description: str
    diff: str  # unified diff of that experiment against its own parent (the mutable files)


@dataclass(frozen=True)
class HistoryEntry:
    """One finished experiment as agents see it in their context."""

    exp_id: int
    worker: str
    agent: str
    description: str
    status: Status
    metric: float | None
    parent: str  # commit the experiment started from
    parent_metric: float | None  # the best's metric when it started
    runs: int = 1  # measurements of its commit so far (the experiment's own included)
    mean: float | None = None  # mean of those measurements (None: not measured)
    confirmed: bool = False  # decided (not pending) on two or more measurements

    @property
    def delta(self) -> float | None:
        """metric - parent_metric (negative is better for a minimised metric)."""
        if self.metric is None or self.parent_metric is None:
            return None
        return self.metric - self.parent_metric


@dataclass(frozen=True)
class ExperimentRecord:
    """Everything measured about one experiment; the journal's `experiment` event body."""

    exp_id: int
    worker: str
    agent: str
    kind: Kind
    parent: str  # commit it started from (the best when it was handed out)
    commit: str  # the measured commit (== parent for a baseline run)
    description: str
    status: Status  # the worker's verdict: KEEP for a clean measured run before the decision
    metric: float | None = None
    parent_metric: float | None = None
    summary: Mapping[str, Any] = field(default_factory=dict)  # every parsed key: value
    memory_gb: float = 0.0
    started_at: float = 0.0  # unix seconds
    finished_at: float = 0.0
    task_seconds: float = 0.0  # wall time inside the task command
    agent_seconds: float = 0.0  # wall time the agent took to propose
    usage: Usage = Usage()
    lane: str = "main"
    error: str = ""  # short reason for crash / timeout / invalid
    log_path: str = ""
    prefetched: bool = False  # the proposal was prepared while this worker's previous experiment ran
    proposed_on: str = ""  # commit the agent saw, when not `parent` (a prefetched proposal rebased)
    proposed_at: float = 0.0  # unix seconds the proposal was ready (0: no agent involved)
    content_hash: str = ""  # sha256 of the mutable files at `commit` (duplicate detection)
    seed: int = 0  # the seed the task ran with

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = self.kind.value
        d["status"] = self.status.value
        d["summary"] = dict(self.summary)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ExperimentRecord":
        d = dict(d)
        d["kind"] = Kind(d["kind"])
        d["status"] = Status(d["status"])
        d["usage"] = Usage(**d.get("usage", {}))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes: Any) -> "ExperimentRecord":
        return dataclasses.replace(self, **changes)
