"""The one agent interface: given the context, return a proposal.

An agent turns an `AgentContext` (current file text, program.md, the swarm's shared history, this
worker's last failure, the baseline and measured noise) into a `Proposal`. Agents live inside a
worker and may keep state between calls; they never touch git or run the task. Kinds are built
from a spec string by `swarm.agents.make_agent`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

from swarm.records import HistoryEntry, InFlight, Proposal, Reapply
from swarm.task import TaskSpec


@dataclass(frozen=True)
class AgentContext:
    worker: str
    worktree: Path  # the worker's checkout, synced to baseline_commit (command agents edit it)
    task: TaskSpec
    program: str  # program.md text ("" when the task has none)
    files: Mapping[str, str]  # current text of each mutable file at the baseline
    baseline_commit: str
    baseline_metric: float | None  # the best's metric (None before the first wave is measured)
    noise: float | None = None  # sigma: the pooled standard deviation of repeated measurements
    history: tuple[HistoryEntry, ...] = ()  # finished experiments of the whole swarm, oldest first
    last_failure: str | None = None  # log tail of this worker's last crash / timeout / invalid
    profile: str | None = None  # "gpu" / "cpu" for the GPT task, None for other tasks
    seed: int = 0  # differs per worker and per experiment, for agents that sample
    in_flight: tuple[InFlight, ...] = ()  # experiments running now on other workers: do not repeat them
    reapply: Reapply | None = None  # set: re-apply that win's change onto the current file (it conflicted)

    @property
    def tried_on_baseline(self) -> tuple[HistoryEntry, ...]:
        """Experiments that started from the current baseline commit."""
        return tuple(h for h in self.history if h.parent == self.baseline_commit)

    @property
    def in_flight_on_baseline(self) -> tuple[InFlight, ...]:
        """Experiments running now that started from the current baseline commit."""
        return tuple(f for f in self.in_flight if f.parent == self.baseline_commit)


@runtime_checkable
class Agent(Protocol):
    name: str  # shown in results ("builtin", "openai/gpt-5", "cmd:claude")

    def propose(self, ctx: AgentContext) -> Proposal: ...


@dataclass(frozen=True)
class AgentSpec:
    """How to build an agent; plain data so it can travel to a Ray actor."""

    kind: str  # "builtin" | "llm" | "command"
    name: str  # display name, also the litellm model string for kind "llm"
    options: Mapping[str, Any] = field(default_factory=dict)
