"""Agents: the built-in offline agent, the LLM agent (litellm) and the command agent.

`parse_agent_spec` reads a spec string, `make_agent` builds the agent (importing its module only
then: litellm alone takes seconds to import).

Spec strings: `builtin`; `cmd:<command line>` (a headless coding CLI run in the worktree);
`py:package.module:ClassName` (your own agent class, built as `ClassName(seed=..., **options)`);
anything else is a litellm model string such as `anthropic/claude-sonnet-4-5` or `openai/gpt-5`.
"""

from __future__ import annotations

import shlex
from typing import Any, Mapping

from swarm.agents.base import Agent, AgentContext, AgentSpec
from swarm.errors import ConfigError

__all__ = ["Agent", "AgentContext", "AgentSpec", "parse_agent_spec", "parse_agent_list", "make_agent"]


def parse_agent_spec(text: str, options: Mapping[str, Any] | None = None) -> AgentSpec:
    text = text.strip()
    if not text:
        raise ConfigError("empty agent spec")
    options = dict(options or {})
    if text == "builtin":
        return AgentSpec("builtin", "builtin", options)
    if text.startswith("cmd:"):
        argv = shlex.split(text[4:])
        if not argv:
            raise ConfigError(f"agent spec {text!r}: no command after 'cmd:'")
        return AgentSpec("command", f"cmd:{argv[0]}", {**options, "argv": argv})
    if text.startswith("py:"):
        target = text[3:]
        if ":" not in target:
            raise ConfigError(f"agent spec {text!r}: expected 'py:package.module:ClassName'")
        return AgentSpec("python", target.rsplit(":", 1)[1], {**options, "target": target})
    if "/" not in text:
        raise ConfigError(
            f"agent spec {text!r} is not 'builtin', 'cmd:<command>' or a litellm model string like 'openai/gpt-5'"
        )
    return AgentSpec("llm", text, options)


def parse_agent_list(text: str, options: Mapping[str, Any] | None = None) -> list[AgentSpec]:
    """`"a,b,builtin"` -> specs; commas inside a `cmd:` spec are not supported."""
    return [parse_agent_spec(part, options) for part in text.split(",") if part.strip()]


def make_agent(spec: AgentSpec, seed: int = 0) -> Agent:
    if spec.kind == "builtin":
        from swarm.agents.builtin import BuiltinAgent

        return BuiltinAgent(seed=seed, **dict(spec.options))
    if spec.kind == "llm":
        from swarm.agents.llm import LLMAgent

        return LLMAgent(spec.name, **dict(spec.options))
    if spec.kind == "command":
        from swarm.agents.command import CommandAgent

        opts = dict(spec.options)
        return CommandAgent(opts.pop("argv"), **opts)
    if spec.kind == "python":
        import importlib

        opts = dict(spec.options)
        module_name, _, attr = opts.pop("target").rpartition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"agent py:{module_name}:{attr} cannot be imported: {exc}") from None
        return cls(seed=seed, **opts)
    raise ConfigError(f"unknown agent kind {spec.kind!r}")
