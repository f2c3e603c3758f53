"""The cheap checks of a run's settings against its repository, before anything expensive.

`autoresearch run` calls `preflight` right after building its config, before data preparation
and before Ray starts (5-10 s), so that bad input is one line at once; `Coordinator._open_run`
calls it again (library users skip the CLI, and the repository may have changed meanwhile).

A new run needs: no run under its tag yet, a HEAD commit, its mutable files committed there
as files, and no uncommitted change to them (the swarm starts from HEAD). A resumed run needs:
its journal, no live coordinator (swarm.runlock), the same lanes as it started with (the same
--agents and --compare), and its mutable files in the run's base commit. Every refusal is a
one-line ConfigError. Not covered: what needs the cluster (worker counts, GPUs) or the task's own
command (its first run tells).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from swarm import gitops
from swarm.errors import ConfigError

if TYPE_CHECKING:
    import git

    from swarm.config import SwarmConfig
    from swarm.state import RunState


def preflight(config: "SwarmConfig", repo: "git.Repo | None" = None) -> "RunState | None":
    """Refuse `config` (ConfigError, one line) when it cannot run in its repository.

    Returns the replayed state of the run to resume (`config.resume`), None for a new run.
    `repo`: the task repository when the caller has it open already.
    """
    repo = repo if repo is not None else gitops.open_repo(config.repo)
    if config.resume:
        return _check_resume(config, repo)
    if config.journal_path.exists():
        raise ConfigError(f"a run tagged {config.tag!r} exists; continue it with --resume or pick another --tag")
    head = gitops.head_commit(repo)
    files = list(config.task.mutable_files)
    dirty = gitops.dirty_paths(repo, files)
    if dirty:
        raise ConfigError(f"uncommitted changes in {', '.join(dirty)}: commit them first (the swarm starts from HEAD)")
    _check_files(repo, head, files, "HEAD")
    return None


def _check_resume(config: "SwarmConfig", repo) -> "RunState":
    from swarm.config import list_runs
    from swarm.journal import read_events
    from swarm.runlock import refuse_if_running
    from swarm.state import replay

    if not config.journal_path.exists():
        known = ", ".join(list_runs(config.repo)) or "none"
        raise ConfigError(f"no run tagged {config.tag!r} to resume in {config.repo} (runs: {known})")
    refuse_if_running(config.run_dir)  # its coordinator is alive: one line now (the run lock decides later)
    state = replay(read_events(config.journal_path))
    lanes = [lane.name for lane in config.lanes]
    if lanes != state.lanes:
        raise ConfigError(f"run {config.tag!r} races lanes {state.lanes}; these settings give {lanes} "
                          "(resume with the run's own --agents and --compare)")
    if state.base_commit and gitops.has_commit(repo, state.base_commit):
        _check_files(repo, state.base_commit, list(config.task.mutable_files), f"the run's base {state.base_commit[:7]}")
    return state


def _check_files(repo, commit: str, files: Sequence[str], where: str) -> None:
    """Every mutable file must be a file committed at `commit`: agents edit only what exists."""
    tree = repo.commit(commit).tree
    missing = []
    for path in files:
        try:
            found = tree / path.strip("/")
        except (KeyError, ValueError):
            found = None
        if found is None or found.type != "blob":
            missing.append(path)
    if missing:
        raise ConfigError(f"the task's mutable_files: {', '.join(missing)} not found in {repo.working_tree_dir} at "
                          f"{where} (commit them, or fix mutable_files in the task)")


__all__ = ["preflight"]
