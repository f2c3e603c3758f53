"""The run's configuration: one frozen `SwarmConfig`, built at the edge (CLI flags, the journal).

Also the pure helpers around it: run tags (`nov21`, `nov21-2`), where a run lives
(`.swarm/<tag>/`), how many workers fit the cluster and with which resources, and the
(de)serialisation of the config into the journal's `run_started` event so that `--resume`
continues with the same task, agents and margin. Not covered: starting anything.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from swarm.agents import AgentSpec, parse_agent_list
from swarm.errors import ConfigError
from swarm.proc import scrub_env
from swarm.sandbox import MODES as SANDBOX_MODES
from swarm.lanes import Lane, lane_of_worker, plan_lanes
from swarm.task import TaskSpec

SWARM_DIR = ".swarm"
TRANSPORTS = ("auto", "worktree", "bundle")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# option names that hold a secret value: api_key, token, client_secret, ... (not max_tokens, not
# api_key_env, which names a variable rather than holding its value)
_SECRET_OPTION = re.compile(r"(^|_)(api_?key|key|token|secret|password|passwd|credentials?)$", re.IGNORECASE)


@dataclass(frozen=True)
class SwarmConfig:
    repo: Path  # the task repository (top level of a git checkout)
    tag: str
    task: TaskSpec
    agents: tuple[AgentSpec, ...]  # cycled over workers
    workers: int | None = None  # None: one per GPU, or what fits the cores on a CPU-only cluster
    max_experiments: int | None = None  # total for the run, across resumes
    hours: float | None = None  # wall-clock limit of this invocation
    min_delta: float = 0.0  # an improvement must beat the best by more than this (an extra floor)
    confidence: float = 0.99  # noise gate: how sure a promotion must be (higher: more confirmation runs)
    gate: bool = True  # False: the classic rule, keep any measured improvement at once (no confirmations)
    max_runs: int = 4  # runs of a candidate before the gate must decide; a new best is re-measured up to this
    baseline_runs: int = 3  # first-wave baseline runs at least (one per worker, at least this many)
    address: str | None = None  # Ray cluster to join; None: start a local one
    profile: str | None = None  # "gpu" / "cpu" (GPT task), passed to the task as AUTORESEARCH_PROFILE
    source: str | None = None  # data source for prepare (GPT task)
    resume: bool = False
    seed: int = 0
    transport: str = "auto"  # how code moves: "auto" (worktree on the coordinator's node, else bundle)
    prepare_data: bool = False  # call prepare.ensure_prepared in each worker (the GPT task)
    progress: bool = True  # one line per finished experiment on stdout
    compare: bool = False  # one lane (own best branch) per distinct agent spec: a fair race (swarm.lanes)
    max_cost: float | None = None  # USD: no new proposals once the agents' summed cost reaches it
    prefetch: bool = True  # agents that support it prepare the next proposal while the task runs
    agent_backoff: float = 5.0  # seconds a worker waits after its agent's first failed attempt (doubling)
    agent_backoff_max: float = 300.0  # the longest such wait
    sandbox: str = "auto"  # where agent-written code runs: "auto" | "bwrap" | "off" (swarm.sandbox)

    def __post_init__(self) -> None:
        check_tag(self.tag)
        if self.workers is not None and self.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if not self.agents:
            raise ConfigError("no agents configured")
        if self.max_experiments is not None and self.max_experiments < 1:
            raise ConfigError("--max-experiments must be at least 1")
        if self.hours is not None and self.hours <= 0:
            raise ConfigError("--hours must be positive")
        if self.min_delta < 0:
            raise ConfigError("--min-delta must be >= 0")
        if not 0.5 < self.confidence < 1:
            raise ConfigError("--confidence must be between 0.5 and 1 (e.g. 0.95)")
        if self.max_runs < 1 or self.baseline_runs < 1:
            raise ConfigError("--max-runs and --baseline-runs must be at least 1")
        if self.max_cost is not None and self.max_cost <= 0:
            raise ConfigError("--max-cost must be positive")
        if self.agent_backoff < 0 or self.agent_backoff_max < self.agent_backoff:
            raise ConfigError("agent_backoff must be >= 0 and agent_backoff_max >= agent_backoff")
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"transport must be one of {TRANSPORTS}")
        if self.sandbox not in SANDBOX_MODES:
            raise ConfigError(f"--sandbox must be one of {', '.join(SANDBOX_MODES)}, not {self.sandbox!r}")

    @property
    def run_dir(self) -> Path:
        return run_dir(self.repo, self.tag)

    @property
    def journal_path(self) -> Path:
        return self.run_dir / "journal.jsonl"

    def agent_for(self, index: int) -> AgentSpec:
        if self.compare:
            return self.lane_for(index).agent
        return self.agents[index % len(self.agents)]

    @property
    def lanes(self) -> tuple[Lane, ...]:
        """`(main,)` for a shared run; one lane per distinct agent spec with --compare."""
        return plan_lanes(self.agents, self.compare)

    def lane_for(self, index: int) -> Lane:
        lanes = self.lanes
        return lanes[lane_of_worker(index, len(lanes))]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the journal (agent options that look like secrets are left out)."""
        return {
            "repo": str(self.repo),
            "tag": self.tag,
            "task": task_to_dict(self.task),
            "agents": [agent_to_dict(a) for a in self.agents],
            "workers": self.workers,
            "max_experiments": self.max_experiments,
            "hours": self.hours,
            "min_delta": self.min_delta,
            "confidence": self.confidence,
            "gate": self.gate,
            "max_runs": self.max_runs,
            "baseline_runs": self.baseline_runs,
            "address": self.address,
            "profile": self.profile,
            "source": self.source,
            "seed": self.seed,
            "transport": self.transport,
            "prepare_data": self.prepare_data,
            "compare": self.compare,
            "lanes": [lane.name for lane in self.lanes],
            "max_cost": self.max_cost,
            "prefetch": self.prefetch,
            "agent_backoff": self.agent_backoff,
            "agent_backoff_max": self.agent_backoff_max,
            "sandbox": self.sandbox,
        }


def check_tag(tag: str) -> str:
    """`tag` when it can name a run (and a branch, and a directory under .swarm/); else a
    one-line ConfigError: an empty or blank --tag never means the default."""
    if not tag.strip():
        raise ConfigError("--tag is empty: give the run a name, or leave --tag out")
    if not _TAG.match(tag):
        raise ConfigError(f"tag {tag!r}: use letters, digits, '.', '_' or '-' (max 64)")
    return tag


def run_dir(repo: Path, tag: str) -> Path:
    return Path(repo) / SWARM_DIR / tag


def task_to_dict(task: TaskSpec) -> dict[str, Any]:
    d = asdict(task)
    d["mutable_files"] = list(task.mutable_files)
    d["command"] = list(task.command)
    d["env"] = scrub_env(task.env)  # the journal never holds a credential
    return d


def task_from_dict(d: Mapping[str, Any]) -> TaskSpec:
    d = dict(d)
    d["mutable_files"] = tuple(d["mutable_files"])
    d["command"] = tuple(d["command"])
    d["env"] = dict(d.get("env", {}))
    return TaskSpec(**{k: v for k, v in d.items() if k in TaskSpec.__dataclass_fields__})


def agent_to_dict(spec: AgentSpec) -> dict[str, Any]:
    """The spec as the journal stores it: options holding secrets are left out (at any depth;
    a nested mapping such as a command agent's `env` is scrubbed like an environment)."""
    return {"kind": spec.kind, "name": spec.name, "options": _without_secrets(spec.options)}


def _without_secrets(options: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: _without_secrets(scrub_env(value)) if isinstance(value, Mapping) else value
        for name, value in options.items()
        if not _SECRET_OPTION.search(name)
    }


def agent_from_dict(d: Mapping[str, Any]) -> AgentSpec:
    return AgentSpec(d["kind"], d["name"], dict(d.get("options", {})))


def parse_agents(text: str | None) -> tuple[AgentSpec, ...]:
    return tuple(parse_agent_list(text or "builtin"))


def default_tag(repo: Path, today: _dt.date | None = None) -> str:
    """`nov21` for a new run today, `nov21-2`, `nov21-3`... when that tag already exists."""
    today = today or _dt.date.today()
    stem = today.strftime("%b").lower() + str(today.day)
    tag, n = stem, 1
    while run_dir(repo, tag).exists():
        n += 1
        tag = f"{stem}-{n}"
    return tag


def list_runs(repo: Path) -> list[str]:
    """Tags of the runs under .swarm/ of `repo`, most recently written journal last."""
    root = Path(repo) / SWARM_DIR
    journals = [p for p in root.glob("*/journal.jsonl") if p.is_file()] if root.is_dir() else []
    return [p.parent.name for p in sorted(journals, key=lambda p: p.stat().st_mtime)]


def latest_tag(repo: Path) -> str:
    runs = list_runs(repo)
    if not runs:
        raise ConfigError(f"no swarm runs in {Path(repo) / SWARM_DIR} (start one with `autoresearch run`)")
    return runs[-1]


def existing_journal(repo: Path, tag: str | None) -> tuple[str, Path]:
    """(tag, journal path) of a run that exists: `tag`, or the most recent run when None (an
    empty tag is an error, never the most recent run)."""
    tag = check_tag(tag) if tag is not None else latest_tag(repo)
    path = run_dir(repo, tag) / "journal.jsonl"
    if not path.is_file():
        known = ", ".join(list_runs(repo)) or "none"
        raise ConfigError(f"no run tagged {tag!r} in {repo} (runs: {known})")
    return tag, path


@dataclass(frozen=True)
class WorkerPlan:
    """How many workers and what each asks Ray for."""

    count: int
    num_gpus: float
    num_cpus: float
    threads: int  # OMP_NUM_THREADS for the task
    on_gpu: bool


def plan_workers(resources: Mapping[str, float], requested: int | None) -> WorkerPlan:
    """One worker per GPU; on a CPU-only cluster, min(cores, 4) workers sharing the cores."""
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    if gpus > 0:
        count = requested or gpus
        if count > gpus:
            raise ConfigError(f"--workers {count}: the cluster has only {gpus} GPUs (one worker per GPU)")
        per = min(8, cpus // count)
        return WorkerPlan(count, 1.0, float(per), max(1, per), True)
    count = requested or max(1, min(cpus, 4))
    per = cpus / count
    return WorkerPlan(count, 0.0, per if per < 1 else float(int(per)), max(1, int(per)), False)


__all__ = [
    "SwarmConfig",
    "WorkerPlan",
    "plan_workers",
    "default_tag",
    "latest_tag",
    "list_runs",
    "run_dir",
    "check_tag",
    "parse_agents",
    "task_to_dict",
    "task_from_dict",
    "agent_to_dict",
    "agent_from_dict",
]
