"""Asking a worker's agent for a proposal, now or in the background (prefetch).

`ask_agent` is the one place an agent is called: it times the call and sorts its outcomes into a
proposal (an agent bug becomes a proposal with `error`: recorded invalid) or an `AgentFailure`
(`AgentError`: an outage; the worker reports it and records no experiment).

`Prefetcher` runs `ask_agent` in a thread while the worker's experiment runs, so the GPU is not
idle while the model thinks: proposal k+1 is prepared from the best as it was when experiment k
started. `carry_over` then fits it to the assignment it is used for: as is when the best did not
move, rebased onto the new best (`swarm.merge.rebase_files`) when it did, or None (ask again) when
the change no longer applies, is already in the new best, or answered another request (a free
proposal where the assignment asks to re-apply a lost win). A prefetched proposal saw the
experiments running when it was asked for, not those started since: a repeat of one of those is
caught by the coordinator's duplicate check. Not covered: git, the worktree (agents that edit
the worktree never prefetch), scheduling.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from swarm.errors import AgentError
from swarm.merge import rebase_files
from swarm.records import AgentFailure, Proposal, Usage


@dataclass(frozen=True)
class Attempt:
    """One call of an agent's `propose`: exactly one of `proposal` and `failure` is set."""

    proposal: Proposal | None
    failure: AgentFailure | None
    base_commit: str  # the commit the agent saw
    base_files: Mapping[str, str] = field(default_factory=dict)  # the mutable files it saw
    seconds: float = 0.0
    finished_at: float = 0.0  # unix seconds
    prefetched: bool = False
    reapply: int | None = None  # the exp id of the lost win the context asked to re-apply, if any

    @property
    def usage(self) -> Usage:
        if self.proposal is not None:
            return self.proposal.usage
        return self.failure.usage if self.failure is not None else Usage()


def ask_agent(agent: Any, ctx: Any, *, prefetched: bool = False) -> Attempt:
    """Call `agent.propose(ctx)`; never raises (a bug in the agent is an invalid proposal)."""
    t0 = time.monotonic()
    proposal, failure = None, None
    try:
        proposal = agent.propose(ctx)
        if not isinstance(proposal, Proposal):
            proposal = Proposal("agent failed", error=f"agent returned {type(proposal).__name__}, not a Proposal")
    except AgentError as exc:
        usage = getattr(exc, "usage", None)
        failure = AgentFailure(
            error=" ".join(str(exc).split())[:300] or type(exc).__name__,
            usage=usage if isinstance(usage, Usage) else Usage(),
            at=time.time(),
            seconds=time.monotonic() - t0,
            prefetched=prefetched,
            permanent=bool(getattr(exc, "permanent", False)),
        )
    except Exception as exc:  # noqa: BLE001 - any other agent failure is a recorded invalid
        proposal = Proposal("agent failed", error=f"{type(exc).__name__}: {exc}")
    reapply = getattr(ctx, "reapply", None)
    return Attempt(proposal, failure, ctx.baseline_commit, dict(ctx.files), time.monotonic() - t0, time.time(),
                   prefetched, reapply.exp_id if reapply is not None else None)


def carry_over(attempt: Attempt, parent: str, files: Mapping[str, str], reapply: int | None = None) -> Proposal | None:
    """The prefetched proposal fitted to an assignment starting from `parent` (mutable `files`).

    Made on `parent`: as is. Made on an older best: its change re-applied onto `files` by a
    three-way merge. None when it conflicts, or the change is already all in `files`: ask again.
    An errored proposal stands as it is (it is recorded invalid either way). `reapply`: the exp
    id of the lost win the assignment asks to re-apply; a proposal made for another request (a
    free proposal for a re-apply, or the other way round) is None too.
    """
    proposal = attempt.proposal
    if proposal is None or attempt.reapply != reapply:
        return None
    if attempt.base_commit == parent or proposal.error:
        return proposal
    changed = {p: t for p, t in proposal.files.items() if t != attempt.base_files.get(p)}
    rebased = rebase_files(attempt.base_files, changed, files)
    if rebased is None or not changed or all(rebased[p] == files.get(p) for p in rebased):
        return None
    return dataclasses.replace(proposal, files=rebased)


class Prefetcher:
    """At most one background proposal of one worker's agent."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._result: Attempt | None = None

    @property
    def pending(self) -> bool:
        return self._thread is not None

    def start(self, agent: Any, ctx: Any) -> None:
        if self._thread is not None:
            raise RuntimeError("a prefetch is already pending")

        def work() -> None:
            self._result = ask_agent(agent, ctx, prefetched=True)

        self._result = None
        self._thread = threading.Thread(target=work, name="swarm-prefetch", daemon=True)
        self._thread.start()

    def take(self) -> Attempt | None:
        """The prefetched attempt (waiting for it to finish), or None when none was started."""
        if self._thread is None:
            return None
        self._thread.join()
        self._thread, result, self._result = None, self._result, None
        return result


def prefetch_seed(seed: int) -> int:
    """The seed a prefetch made during the experiment with `seed` passes to its agent."""
    return (seed * 48271 + 11) % (2**31)


__all__ = ["Attempt", "ask_agent", "carry_over", "Prefetcher", "prefetch_seed"]
