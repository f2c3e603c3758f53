"""`autoresearch run --config FILE`: run defaults and per-agent options from a TOML file.

```toml
[run]                     # any `autoresearch run` flag, spelled with underscores
agents = ["openai/gpt-5", "anthropic/claude-sonnet-4-5", "builtin"]   # or one comma-separated string
compare = true
workers = 6
max_experiments = 120

[agents."openai/gpt-5"]   # options for the agent whose spec is exactly this string
price_in_per_mtok = 1.25
price_out_per_mtok = 10.0
```

The file fills in what the command line leaves out (flags always win); `[agents."SPEC"]` tables
become `AgentSpec.options` of that spec. Unknown tables, keys and agent options are a one-line
`ConfigError` naming the key. Pure apart from reading the file: the run command passes in which
flags exist and turns the result into the frozen `SwarmConfig` (swarm.commands.run). Option
values that look like secrets (api_key...) reach the agent but never the journal
(swarm.config.agent_to_dict leaves them out); prefer `api_key_env`, the name of a variable.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from swarm.errors import ConfigError
from swarm.task import read_toml


TABLES = ("run", "agents")
# Flags that only make sense on the command line (the page beside a run is this invocation's, like
# Ctrl-C: `autoresearch dashboard` serves any run).
NOT_IN_FILE = ("config", "resume", "help", "dashboard", "dashboard_host", "dashboard_port")


@dataclass(frozen=True)
class OptionType:
    """What a `[run]` key accepts: the flag's value type, its choices, whether it is a switch."""

    kind: type  # int, float, str or bool
    choices: tuple = ()
    switch: bool = False  # a store_true flag: False on the command line means "not given"


@dataclass(frozen=True)
class RunFile:
    path: str
    run: Mapping[str, Any] = field(default_factory=dict)  # flag dest -> value, checked
    agents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # spec text -> options
    switches: frozenset = frozenset()  # [run] keys that are store_true flags

    def options_for(self, spec_text: str) -> dict[str, Any]:
        return dict(self.agents.get(spec_text.strip(), {}))


def option_types(parser) -> dict[str, OptionType]:
    """The `[run]` keys a parser's flags allow (read from its actions)."""
    import argparse

    table: dict[str, OptionType] = {}
    for action in parser._actions:  # noqa: SLF001 - argparse has no public list of actions
        if not action.option_strings or action.dest in NOT_IN_FILE:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):  # --x / --no-x: None means "not given"
            table[action.dest] = OptionType(bool)
        elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            table[action.dest] = OptionType(bool, switch=True)
        else:
            table[action.dest] = OptionType(action.type or str, tuple(action.choices or ()))
    return table


def load_run_file(path: str | Path, types: Mapping[str, OptionType]) -> RunFile:
    path = Path(path)
    data = read_toml(path, "config file")
    for key in data:
        if key not in TABLES:
            raise ConfigError(f"config file {path}: unknown key {key!r} (tables: [run], [agents.\"SPEC\"])")
    run_table = data.get("run", {})
    agents_table = data.get("agents", {})
    if not isinstance(run_table, dict) or not isinstance(agents_table, dict):
        raise ConfigError(f"config file {path}: [run] and [agents] must be tables")
    run = {key: _check(path, key, value, types) for key, value in run_table.items()}
    agents: dict[str, dict[str, Any]] = {}
    for spec_text, options in agents_table.items():
        if not isinstance(options, dict):
            raise ConfigError(f"config file {path}: agents.{spec_text!r} must be a table of options")
        _check_agent_options(path, spec_text, options)
        agents[spec_text.strip()] = dict(options)
    switches = frozenset(k for k in run if types[k].switch)
    return RunFile(str(path), run, agents, switches)


def _check(path: Path, key: str, value: Any, types: Mapping[str, OptionType]) -> Any:
    if key not in types:
        raise ConfigError(f"config file {path}: unknown key run.{key} (known: {', '.join(sorted(types))})")
    t = types[key]
    if key == "agents":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        if isinstance(value, str):
            return value
        raise ConfigError(f"config file {path}: run.agents must be a list of agent specs or one comma-separated string")
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(t.kind, isinstance(value, str))
    if not ok:
        raise ConfigError(f"config file {path}: run.{key} must be {t.kind.__name__}, not {type(value).__name__}")
    if t.kind is float:
        value = float(value)
    if t.choices and value not in t.choices:
        raise ConfigError(f"config file {path}: run.{key} must be one of {list(t.choices)}, not {value!r}")
    return value


def _check_agent_options(path: Path, spec_text: str, options: Mapping[str, Any]) -> None:
    """Unknown options of the built-in kinds fail here, not later inside a worker actor."""
    from swarm.agents import parse_agent_spec

    spec = parse_agent_spec(spec_text)
    known = _known_options(spec.kind)
    if known is None:
        return
    for key in options:
        if key not in known:
            raise ConfigError(f"config file {path}: unknown option {key!r} for agent {spec_text!r} "
                              f"(known: {', '.join(sorted(known))})")


def _known_options(kind: str) -> set[str] | None:
    if kind == "builtin":
        from swarm.agents.builtin import BuiltinAgent as cls
    elif kind == "llm":
        from swarm.agents.llm import LLMAgent as cls
    elif kind == "command":
        from swarm.agents.command import CommandAgent as cls
    else:
        return None  # py: agents take what their own class takes
    params = inspect.signature(cls.__init__).parameters
    return {name for name, p in params.items()
            if name not in ("self", "seed", "model", "argv") and p.kind is not inspect.Parameter.VAR_KEYWORD}


def fill_args(args: Any, run_file: RunFile) -> None:
    """Set every flag the command line left unset from the file's `[run]` table (None; for a plain
    switch such as --quiet also False: it cannot be turned off on the command line)."""
    for key, value in run_file.run.items():
        given = getattr(args, key, None)
        if given is None or (given is False and key in run_file.switches):
            setattr(args, key, value)


__all__ = ["OptionType", "RunFile", "option_types", "load_run_file", "fill_args"]
