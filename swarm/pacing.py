"""Pure rules about asking agents: outage backoff, the cost limit, whether to prefetch.

No clock, no I/O: the coordinator and the worker apply these at their edges.

An agent that cannot answer (its API is down past its own retries: `AgentError`) does not end
the run and burns no experiment: that worker waits `outage_delay(n)` seconds after its n-th
failure in a row (exponential, capped) and asks again while the other workers go on.
"""

from __future__ import annotations

from typing import Iterable

from swarm.records import Usage

DEFAULT_BACKOFF = 5.0  # seconds after the first failed attempt
DEFAULT_BACKOFF_MAX = 300.0  # the longest wait between two attempts


def outage_delay(failures: int, base: float = DEFAULT_BACKOFF, cap: float = DEFAULT_BACKOFF_MAX) -> float:
    """Seconds to wait after `failures` (>= 1) failed agent attempts in a row: base, 2 base, ... cap."""
    if failures < 1:
        return 0.0
    return float(min(cap, base * 2 ** min(failures - 1, 60)))


def total_usage(usages: Iterable[Usage]) -> Usage:
    total = Usage()
    for u in usages:
        total = total + u
    return total


def over_budget(spent_usd: float, max_cost: float | None) -> bool:
    """True once the run's spending reached `max_cost` (None: no limit)."""
    return max_cost is not None and spent_usd >= max_cost


def prefetch_enabled(enabled: bool, agent_kind: str, agent_says: bool | None) -> bool:
    """Whether a worker prepares its next proposal while its experiment runs.

    Never for agents that edit the worktree (the command agent: the worktree is busy with the
    running experiment). An agent may say so itself with a `prefetch` attribute; otherwise LLM
    agents prefetch (a reply takes seconds to minutes) and the others (the built-in agent answers
    in milliseconds and does better with the newest results) do not.
    """
    if not enabled or agent_kind == "command":
        return False
    if agent_says is not None:
        return bool(agent_says)
    return agent_kind == "llm"


__all__ = ["DEFAULT_BACKOFF", "DEFAULT_BACKOFF_MAX", "outage_delay", "total_usage", "over_budget", "prefetch_enabled"]
