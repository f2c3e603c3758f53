"""Scripted agents for swarm tests (used through `py:tests.standin_agents:Class` specs).

`ScriptedAgent(steps=[...])` plays its steps in order (then repeats the last one). A step is a
dict of constant -> new value, plus optional special keys: "__error__" (return an agent error),
"__raise__" (raise), "__outage__" (raise AgentError, as an LLM agent does after its retries;
"__permanent__": True makes it a permanent one), "__touch__" (also write that non-mutable file),
"__write__" ({path: text}: edit the worktree directly, as a command agent does; the proposal then
has files={}), "__noop__" (change nothing),
"__desc__" (description). Asked to re-apply a lost win (`ctx.reapply`), it sets the constants the
win's diff adds, whatever its next step is. `HillClimber` makes random steps on X and Y (a real little search).
For compare runs: `GoodAgent` always improves, `WeakAgent` never does. `SlowAgent` is a
HillClimber that thinks for `delay` seconds like a model does (benchmarks/bench_prefetch.py).
`prefetch=True` lets an agent prepare proposals in the background (swarm.prefetch).
"""

from __future__ import annotations

import random
import re

import time

from swarm.errors import AgentError
from swarm.records import Proposal, Usage


def set_constant(text: str, name: str, value) -> str:
    pattern = re.compile(rf"^({name} = )([^#\n]*?)(\s*#.*)?$", re.M)
    if not pattern.search(text):
        raise KeyError(name)
    return pattern.sub(lambda m: f"{m.group(1)}{value!r}{m.group(3) or ''}", text, count=1)


class ScriptedAgent:
    def __init__(self, seed: int = 0, steps=(), name: str = "scripted", prefetch: bool = False):
        self.steps = list(steps) or [{"X": 1.0}]
        self.name = name
        self.calls = 0
        self.prefetch = prefetch
        self.contexts = []  # every context it was asked with

    def propose(self, ctx) -> Proposal:
        step = dict(self.steps[min(self.calls, len(self.steps) - 1)])
        self.calls += 1
        self.contexts.append(ctx)
        if ctx.reapply is not None:
            step = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\+([A-Z_]+) = ([-0-9.e]+)", ctx.reapply.diff, re.M)}
            step["__desc__"] = f"re-apply #{ctx.reapply.exp_id}: {ctx.reapply.description}"
        if "__outage__" in step:
            exc = AgentError(f"scripted outage: {step['__outage__']}", permanent=bool(step.get("__permanent__")))
            exc.usage = Usage(calls=1, tokens_in=7, tokens_out=0, cost_usd=0.0005)
            raise exc
        if "__raise__" in step:
            raise RuntimeError(step["__raise__"])
        if "__error__" in step:
            return Proposal("scripted error", error=step["__error__"])
        path = ctx.task.mutable_files[0]
        text = ctx.files[path]
        changes = {k: v for k, v in step.items() if not k.startswith("__")}
        for name, value in changes.items():
            text = set_constant(text, name, value)
        files = {path: text}
        if "__touch__" in step:
            files[step["__touch__"]] = "touched\n"
        if "__noop__" in step:
            files = {}
        desc = step.get("__desc__") or " ".join(f"{k}={v}" for k, v in changes.items()) or "no change"
        if "__write__" in step:  # a worktree-editing agent: writes the checkout itself
            for rel, content in {**files, **step["__write__"]}.items():
                target = ctx.worktree / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
            files = {}
        return Proposal(desc, files=files, usage=Usage(calls=1, tokens_in=10, tokens_out=5, cost_usd=0.001))


class HillClimber:
    name = "hill"

    def __init__(self, seed: int = 0, step: float = 0.8):
        self.rng = random.Random(seed)
        self.step = step

    def propose(self, ctx) -> Proposal:
        rng = random.Random(ctx.seed)
        path = ctx.task.mutable_files[0]
        text = ctx.files[path]
        name = rng.choice(["X", "Y"])
        current = float(re.search(rf"^{name} = ([-0-9.e]+)", text, re.M).group(1))
        new = round(current + rng.choice([-1, 1]) * self.step * rng.random(), 3)
        return Proposal(f"{name} {current} -> {new}", files={path: set_constant(text, name, new)})


def _current(text: str, name: str) -> float:
    return float(re.search(rf"^{name} = ([-0-9.e]+)", text, re.M).group(1))


class GoodAgent:
    """Always improves: moves X toward 3 (then Y toward -1) by a fixed step; costs a little."""

    name = "good"

    def __init__(self, seed: int = 0, step: float = 0.75):
        self.step = step

    def propose(self, ctx) -> Proposal:
        path = ctx.task.mutable_files[0]
        text = ctx.files[path]
        for name, goal in (("X", 3.0), ("Y", -1.0)):
            current = _current(text, name)
            if current != goal:
                new = min(goal, current + self.step) if goal > current else max(goal, current - self.step)
                return Proposal(f"{name} {current} -> {new}", files={path: set_constant(text, name, round(new, 3))},
                                usage=Usage(calls=1, tokens_in=100, tokens_out=50, cost_usd=0.002))
        return Proposal("nothing left to improve", files={}, usage=Usage(calls=1, tokens_in=100, tokens_out=5,
                                                                            cost_usd=0.001))


class WeakAgent:
    """Never helps: moves X away from its optimum; free (no usage)."""

    name = "weak"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def propose(self, ctx) -> Proposal:
        path = ctx.task.mutable_files[0]
        text = ctx.files[path]
        new = round(_current(text, "X") - 0.5 - 0.001 * (ctx.seed % 100), 3)
        return Proposal(f"X -> {new}", files={path: set_constant(text, "X", new)})


class SlowAgent(HillClimber):
    """A HillClimber that takes `delay` seconds per proposal (a stand-in for a model's reply)."""

    name = "slow"

    def __init__(self, seed: int = 0, delay: float = 3.0, prefetch: bool = True, step: float = 0.8):
        super().__init__(seed=seed, step=step)
        self.delay = float(delay)
        self.prefetch = prefetch

    def propose(self, ctx) -> Proposal:
        time.sleep(self.delay)
        p = super().propose(ctx)
        return Proposal(p.description, files=p.files, usage=Usage(calls=1))


class DiesOnStart(ScriptedAgent):
    """A ScriptedAgent whose process dies while it is being built (the worker actor's setup)
    as long as the number in `die_file` is above zero (it counts down): a replacement actor that
    fails to start."""

    def __init__(self, seed: int = 0, die_file: str = "", **kw):
        import os
        from pathlib import Path

        left = int(Path(die_file).read_text() or 0) if die_file and Path(die_file).exists() else 0
        if left > 0:
            Path(die_file).write_text(str(left - 1))
            os._exit(1)
        super().__init__(seed, **kw)
