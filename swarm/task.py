"""What the swarm optimises: a small task spec, the default GPT task, and loading one from TOML.

A task is: the mutable file(s) agents may edit, the command that runs one experiment (from the
worktree root), the metric key printed in the summary block and its direction, the time budget
and the hard timeout (default 2 x budget + startup allowance). Any repository whose command
prints the summary block of `swarm.summary` can be a task. A task may name a referee: a command
that runs the task's command itself (it gets it as JSON in AUTORESEARCH_TASK_COMMAND), measures
the result and prints the summary block; a refusal is exit status 3 with a last line
`rejected: <reason>` (swarm.summary.referee_rejection). The GPT task's referee is
`python -m prepare.referee`. Not covered: running it (the worker).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from swarm.errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PYTHON = "{python}"  # placeholder in a command for the interpreter running the swarm


@dataclass(frozen=True)
class TaskSpec:
    name: str
    mutable_files: tuple[str, ...]
    command: tuple[str, ...]
    metric: str = "val_bpb"
    direction: str = "min"  # "min" or "max"
    time_budget: float = 300.0
    startup_allowance: float = 120.0
    timeout: float | None = None  # None: 2 x time_budget + startup_allowance
    program_file: str | None = "program.md"  # the agents' protocol, relative to the repo
    env: Mapping[str, str] = field(default_factory=dict)  # extra variables for the command
    referee: tuple[str, ...] = ()  # a command that runs `command` and measures it (empty: none)

    def __post_init__(self) -> None:
        for name in ("mutable_files", "command", "referee"):  # lists from JSON / TOML become tuples
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.direction not in ("min", "max"):
            raise ConfigError(f"task {self.name!r}: direction must be 'min' or 'max', not {self.direction!r}")
        if not self.mutable_files:
            raise ConfigError(f"task {self.name!r}: mutable_files is empty")
        if not self.command:
            raise ConfigError(f"task {self.name!r}: command is empty")

    @property
    def hard_timeout(self) -> float:
        return self.timeout if self.timeout is not None else 2 * self.time_budget + self.startup_allowance

    def argv(self) -> list[str]:
        """The command with the interpreter placeholder filled in."""
        return [sys.executable if part == PYTHON else part for part in self.command]

    def run_argv(self) -> list[str]:
        """What the worker runs for one experiment: the referee when there is one, else the command."""
        if not self.referee:
            return self.argv()
        return [sys.executable if part == PYTHON else part for part in self.referee]

    def run_env(self) -> dict[str, str]:
        """Extra environment for `run_argv`: the referee learns the command from AUTORESEARCH_TASK_COMMAND."""
        return {"AUTORESEARCH_TASK_COMMAND": json.dumps(self.argv())} if self.referee else {}

    def better(self, a: float, b: float) -> bool:
        """True when metric `a` is strictly better than `b`."""
        return a < b if self.direction == "min" else a > b

    def with_changes(self, **changes) -> "TaskSpec":
        return replace(self, **changes)


def gpt_task(profile_name: str | None = None) -> TaskSpec:
    """The default task: trainer/train.py trained for the profile's budget, refereed by prepare.

    The hard timeout (2 x budget + startup) stays above the referee's own limits (budget +
    start-up allowance + a margin + evaluation allowance, plus its set-up), so the referee
    refuses a slow run before the worker would kill it.
    """
    from prepare.profiles import PROFILES, active_profile

    profile = PROFILES[profile_name] if profile_name else active_profile()
    startup = profile.startup_allowance + profile.eval_allowance + 30.0
    return TaskSpec(
        name=f"gpt-{profile.name}",
        mutable_files=("trainer/train.py",),
        command=(PYTHON, "-m", "trainer.train"),
        referee=(PYTHON, "-m", "prepare.referee"),
        metric="val_bpb",
        direction="min",
        time_budget=profile.time_budget,
        startup_allowance=startup,
        env={"AUTORESEARCH_PROFILE": profile.name},
    )


def read_toml(path: Path, what: str) -> dict:
    """The TOML document at `path`; a missing, unreadable (a directory, no permission, not text) or
    malformed file is a one-line ConfigError naming `what` ("task file", "config file")."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory: give the TOML file itself") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a text file (TOML is UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


def load_task(path: str | Path) -> TaskSpec:
    """Read a task from a TOML file with a [task] table (keys as TaskSpec's fields)."""
    path = Path(path)
    data = read_toml(path, "task file")
    table = data.get("task")
    if not isinstance(table, dict):
        raise ConfigError(f"task file {path} has no [task] table")
    known = set(TaskSpec.__dataclass_fields__)
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"task file {path}: unknown keys {unknown}; known: {sorted(known)}")
    for key in ("mutable_files", "command", "referee"):
        if key in table:
            if not isinstance(table[key], list) or not all(isinstance(x, str) for x in table[key]):
                raise ConfigError(f"task file {path}: {key} must be a list of strings")
            table[key] = tuple(table[key])
    table.setdefault("name", path.stem)
    try:
        return TaskSpec(**table)
    except TypeError as exc:
        raise ConfigError(f"task file {path}: {exc}") from None
