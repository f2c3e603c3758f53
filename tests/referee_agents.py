"""A scripted cheater for the referee's swarm test (`py:tests.referee_agents:CheatAgent`).

`CheatAgent(steps=[name, ...])` proposes, in order, the current train.py with one cheat of
tests.referee_helpers.CHEAT_EDITS applied; then it gives up for good (a permanent AgentError
retires its worker), so each worker runs exactly its own list. Its description says what the
agent saw of its previous experiment's failure ("saw: rejected: ..."), so that a test can check
from the journal that the referee's reason reached the agent.
"""

from __future__ import annotations

from swarm.errors import AgentError
from swarm.records import Proposal, Usage
from tests.referee_helpers import CHEAT_EDITS


class CheatAgent:
    name = "cheater"

    def __init__(self, seed: int = 0, steps=()):
        self.steps = list(steps) or ["no_effect"]
        self.calls = 0

    def propose(self, ctx) -> Proposal:
        if self.calls >= len(self.steps):
            raise AgentError("no cheats left", permanent=True)
        cheat = self.steps[self.calls]
        self.calls += 1
        path = ctx.task.mutable_files[0]
        saw = ""
        for line in (ctx.last_failure or "").splitlines():
            if line.startswith("rejected: "):
                saw = f" (saw: {line[:80]})"
        return Proposal(f"cheat {cheat}{saw}", files={path: CHEAT_EDITS[cheat](ctx.files[path])}, usage=Usage(calls=1))
