"""Finding the task repository: the git checkout holding trainer/train.py and prepare/.

Not covered: git operations on it (swarm.gitops).
"""

from __future__ import annotations

from pathlib import Path

from swarm.errors import ConfigError


def find_repo_root(start: str | Path | None = None) -> Path:
    """The git top level containing `start` (default: the current directory)."""
    path = Path(start or Path.cwd()).resolve()
    for candidate in (path, *path.parents):
        if (candidate / ".git").exists():
            return candidate
    raise ConfigError(f"{path} is not inside a git repository (clone autoresearch-swarm and run from there, or pass --repo)")


def find_trainer_root(start: str | Path | None = None) -> Path:
    """The directory holding trainer/train.py: the current checkout, else this package's source."""
    candidates = [Path(start or Path.cwd()).resolve()]
    candidates += list(candidates[0].parents)
    candidates.append(Path(__file__).resolve().parents[1])
    for candidate in candidates:
        if (candidate / "trainer" / "train.py").is_file() and (candidate / "prepare").is_dir():
            return candidate
    raise ConfigError("no trainer/train.py found: run from an autoresearch-swarm checkout")
