"""Lanes: independent best branches inside one run, for comparing agent models side by side.

A shared run has one lane, `main`, whose best branch is `swarm/<tag>/best`: every worker merges
into it. A `--compare` run has one lane per distinct agent spec, named after the agent (made safe
for a git ref component), each with its own best branch `swarm/<tag>/<lane>/best`; workers are
split evenly over the lanes (worker i runs lane i mod L), so every lane gets the same share of
GPUs. Everything here is pure: names, the worker split, ref names. Not covered: what a lane's
state is (swarm.state) or how the coordinator drives it (swarm.coordinator).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from swarm.agents.base import AgentSpec
from swarm.errors import ConfigError

MAIN = "main"  # the one lane of a shared run
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_RESERVED = re.compile(r"^(w\d+|best|main|exp|incoming)$")  # would clash with other refs of the run


@dataclass(frozen=True)
class Lane:
    name: str
    agent: AgentSpec


def lane_name(agent_name: str) -> str:
    """A git-ref-safe lane name for an agent: `openai/gpt-5` -> `openai-gpt-5`."""
    name = _UNSAFE.sub("-", agent_name.strip())
    name = re.sub(r"\.{2,}", ".", name)
    name = re.sub(r"-{2,}", "-", name).strip("-.")
    if name.endswith(".lock"):
        name = name[: -len(".lock")] + "-lock"
    name = name[:48].strip("-.") or "agent"
    return f"lane-{name}" if _RESERVED.match(name) else name


def _same_spec(a: AgentSpec, b: AgentSpec) -> bool:
    return a.kind == b.kind and a.name == b.name and dict(a.options) == dict(b.options)


def plan_lanes(agents: Sequence[AgentSpec], compare: bool) -> tuple[Lane, ...]:
    """The run's lanes: `(main,)` for a shared run, one per distinct agent spec (in first-seen
    order, names made unique with -2, -3...) for a compare run."""
    if not agents:
        raise ConfigError("no agents configured")
    if not compare:
        return (Lane(MAIN, agents[0]),)
    distinct: list[AgentSpec] = []
    for spec in agents:
        if not any(_same_spec(spec, seen) for seen in distinct):
            distinct.append(spec)
    lanes: list[Lane] = []
    used: set[str] = set()
    for spec in distinct:
        base = lane_name(spec.name)
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        lanes.append(Lane(name, spec))
    return tuple(lanes)


def split_workers(count: int, lanes: int) -> int:
    """How many workers a compare run uses: the largest multiple of `lanes` <= `count` (an equal
    share each). Fewer workers than lanes is an error."""
    if lanes < 1:
        raise ConfigError("no lanes")
    if count < lanes:
        raise ConfigError(f"--compare with {lanes} agents needs at least {lanes} workers (one per lane), "
                          f"have {count}")
    return count - count % lanes


def lane_of_worker(index: int, lanes: int) -> int:
    """Worker i races for lane i mod L (round robin: lanes spread over the nodes alike)."""
    return index % lanes


def best_branch(tag: str, lane: str) -> str:
    """`swarm/<tag>/best` for the main lane, `swarm/<tag>/<lane>/best` for a compare lane."""
    return f"swarm/{tag}/best" if lane == MAIN else f"swarm/{tag}/{lane}/best"


def best_ref(tag: str, lane: str) -> str:
    return f"refs/heads/{best_branch(tag, lane)}"


__all__ = ["MAIN", "Lane", "lane_name", "plan_lanes", "split_workers", "lane_of_worker", "best_branch", "best_ref"]
