"""The command agent: a headless coding CLI edits the worktree; the worktree diff is the proposal.

Examples: `cmd:claude -p --permission-mode acceptEdits`, `cmd:codex exec --sandbox
workspace-write`. The prompt (`swarm.agents.prompt.build_command_prompt`) goes as the last
argument (`prompt_via="arg"`, the default; an argument `{prompt}` is replaced instead when
present) or on stdin (`prompt_via="stdin"`); otherwise stdin is closed. The CLI runs through
`swarm.proc.run_process` with `cwd=` the worktree and a timeout.

The CLI needs its own API key, so it gets this process's environment unchanged (plus `env`
extras): unlike the trainer's, it is not scrubbed. Run only CLIs you trust with those keys.

Option `sandbox` ("auto", the default | "bwrap" | "off"): where bubblewrap works (swarm.sandbox,
`command_policy`), the CLI runs with the whole file system read-only except the worktree, the
existing paths of option `writable` (e.g. `["~/.claude", "~/.claude.json"]` for a CLI that keeps
its state in your home) and a private /tmp (TMPDIR); it keeps its environment and the network,
and sees only its own processes. "bwrap" refuses to build the agent when bwrap does not work;
"auto" then runs it unsandboxed; "off" always does.

Returns `Proposal(description, files={})`: the description is the `Description:` line of the
CLI's output, else its first line (labelled `re-apply #N: ...` when the context asked to
re-apply a lost win); the worker reads the change from git and rejects changes
outside the mutable files. A CLI that exits non-zero, fails to start or times out gives a
proposal with `error` set. Not covered: git (the worker), cost (CLIs report it their own way).
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any, Mapping, Sequence

from swarm.agents.base import AgentContext
from swarm.agents.prompt import DEFAULT_BUDGET, build_command_prompt, reapply_description
from swarm.errors import ConfigError
from swarm.proc import run_process
from swarm.sandbox import command_policy, resolve, wrap
from swarm.records import Proposal, Usage

_DESCRIPTION = re.compile(r"^[\W_]*description[\W_]*:\s*[*_`]*\s*(.+?)\s*[*_`]*\s*$", re.IGNORECASE)
PROMPT_PLACEHOLDER = "{prompt}"


def describe_output(output: str, limit: int = 200) -> str:
    """The `Description:` line of a CLI's output, else its first non-empty line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    found = next((m.group(1) for m in map(_DESCRIPTION.match, lines) if m), None)
    text = " ".join((found or (lines[0] if lines else "")).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CommandAgent:
    """Runs `argv` (a coding CLI) headless in the worker's worktree."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        prompt_via: str = "arg",
        timeout: float = 1800.0,
        context_tokens: int = DEFAULT_BUDGET,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        tail_lines: int = 200,
        sandbox: str = "auto",
        writable: Sequence[str] = (),
        **unknown: Any,
    ) -> None:
        argv = [str(a) for a in argv]
        if unknown:
            raise ConfigError(
                f"command agent {argv[:1]}: unknown option(s) {sorted(unknown)}; known: prompt_via, timeout, "
                "context_tokens, env, name, tail_lines, sandbox, writable"
            )
        if not argv:
            raise ConfigError("command agent: empty command")
        if prompt_via not in ("arg", "stdin"):
            raise ConfigError(f"command agent {argv[0]}: prompt_via must be 'arg' or 'stdin', not {prompt_via!r}")
        self.argv = argv
        self.prompt_via = prompt_via
        self.timeout = float(timeout)
        self.context_tokens = int(context_tokens)
        self.env = dict(env or {})
        self.name = name or f"cmd:{os.path.basename(argv[0])}"
        self.tail_lines = int(tail_lines)
        if isinstance(writable, str):
            raise ConfigError(f"command agent {argv[0]}: writable must be a list of paths, not {writable!r}")
        self.writable = [str(p) for p in writable]
        self.sandbox, _ = resolve(sandbox, kind="command")  # "bwrap" | "off"

    def command(self, prompt: str) -> list[str]:
        """The argument list for one run, with the prompt placed as `prompt_via` says."""
        if self.prompt_via == "stdin":
            return list(self.argv)
        if any(PROMPT_PLACEHOLDER in a for a in self.argv):
            return [a.replace(PROMPT_PLACEHOLDER, prompt) for a in self.argv]
        return [*self.argv, prompt]

    def propose(self, ctx: AgentContext) -> Proposal:
        prompt = build_command_prompt(ctx, self.context_tokens)
        env = {**os.environ, **self.env}  # the CLI needs its own key: passed through, not scrubbed
        argv = self.command(prompt)
        if self.sandbox == "bwrap" and _found(argv[0], ctx.worktree, env):  # (a missing CLI: status 127, unwrapped)
            argv, env = wrap(argv, env, command_policy(ctx.worktree, self.writable), private_home=False)
        result = run_process(
            argv,
            cwd=ctx.worktree,
            env=env,
            timeout=self.timeout,
            stdin_text=prompt if self.prompt_via == "stdin" else None,
            tail_lines=self.tail_lines,
        )
        usage = Usage(calls=1)
        description = describe_output(result.output_tail) or f"{self.name} edit"
        if ctx.reapply is not None:
            description = reapply_description(ctx.reapply, description)
        if result.timed_out:
            return Proposal(description, {}, usage, error=f"{self.name} timed out after {self.timeout:g} s")
        if result.returncode != 0:
            last = next((x for x in reversed(result.output_tail.splitlines()) if x.strip()), "")
            return Proposal(
                description,
                {},
                usage,
                error=f"{self.name} exited with status {result.returncode}: {' '.join(last.split())[:200]}",
            )
        return Proposal(description, {}, usage)


def _found(program: str, cwd, env) -> bool:
    """Whether `program` exists as run from `cwd` (a path with a slash is relative to it)."""
    if "/" in program:
        return os.path.exists(os.path.join(cwd, program))
    return shutil.which(program, path=env.get("PATH")) is not None
