"""Git operations of the swarm, through GitPython: refs, worktrees, commits, bundles.

Small functions over a `git.Repo`, each doing one git thing and raising `GitError` with a
one-line message when git refuses. Who calls what, and when, is decided elsewhere (coordinator
and worker). Not covered: journal, decisions, running the task.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Sequence

import git

from swarm.errors import ConfigError, GitError

# Identity of commits the swarm makes (the user's own git config is never touched).
COMMIT_ENV = {
    "GIT_AUTHOR_NAME": "autoresearch-swarm",
    "GIT_AUTHOR_EMAIL": "swarm@autoresearch.invalid",
    "GIT_COMMITTER_NAME": "autoresearch-swarm",
    "GIT_COMMITTER_EMAIL": "swarm@autoresearch.invalid",
}


def open_repo(path: str | os.PathLike) -> git.Repo:
    """The repository at `path` (its top level); ConfigError when it is not a git checkout."""
    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise ConfigError(f"{path} is not a git repository (pass --repo PATH to the task's checkout)") from None
    if repo.bare:
        raise ConfigError(f"{path} is a bare repository; the swarm needs a checkout")
    return _no_hooks(repo)


# Every git command the swarm runs ignores hooks and fsmonitor: agent-written code could have
# planted one in a checkout (the sandbox binds .git read-only; this holds with --sandbox off too),
# and a user's pre-commit hook must not refuse an experiment's commit.
_NO_HOOKS = {"GIT_CONFIG_COUNT": "2", "GIT_CONFIG_KEY_0": "core.hooksPath", "GIT_CONFIG_VALUE_0": os.devnull,
             "GIT_CONFIG_KEY_1": "core.fsmonitor", "GIT_CONFIG_VALUE_1": "false"}


def _no_hooks(repo: git.Repo) -> git.Repo:
    repo.git.update_environment(**_NO_HOOKS)
    return repo


def _git(repo: git.Repo, cmd: str, *args: str, **kwargs) -> str:
    try:
        return getattr(repo.git, cmd.replace("-", "_"))(*args, **kwargs)
    except git.GitCommandError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise GitError(f"git {cmd} {' '.join(args)} failed: {detail[-1] if detail else exc}") from None


def common_dir(repo: git.Repo) -> Path:
    """The shared .git directory (the same for every worktree of the repository)."""
    path = Path(_git(repo, "rev-parse", "--git-common-dir"))
    return path if path.is_absolute() else Path(repo.working_tree_dir) / path


def ensure_excluded(repo: git.Repo, pattern: str = ".swarm/") -> None:
    """Add `pattern` to .git/info/exclude (never the repository's tracked .gitignore)."""
    exclude = common_dir(repo) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    text = exclude.read_text() if exclude.exists() else ""
    if pattern not in text.splitlines():
        with open(exclude, "a") as f:
            f.write(("" if text.endswith("\n") or not text else "\n") + pattern + "\n")


def resolve(repo: git.Repo, rev: str) -> str | None:
    """Full sha of `rev` as a commit, or None when it does not exist."""
    try:
        return repo.git.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}")
    except git.GitCommandError:
        return None


def head_commit(repo: git.Repo) -> str:
    sha = resolve(repo, "HEAD")
    if sha is None:
        raise ConfigError(f"{repo.working_tree_dir} has no commits yet")
    return sha


def has_commit(repo: git.Repo, sha: str) -> bool:
    return bool(sha) and resolve(repo, sha) == sha


def dirty_paths(repo: git.Repo, paths: Sequence[str] | None = None) -> list[str]:
    """Paths with uncommitted changes (tracked or untracked), limited to `paths` when given."""
    out = _git(repo, "status", "--porcelain", "-z", "--untracked-files=all", *(["--", *paths] if paths else []))
    return _porcelain_paths(out)


def _porcelain_paths(out: str) -> list[str]:
    entries = out.split("\0")
    paths: list[str] = []
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        paths.append(path)
        if "R" in code or "C" in code:  # renames/copies carry the old path as the next entry
            paths.append(entries[i])
            i += 1
    return paths


def update_ref(repo: git.Repo, ref: str, new: str, old: str | None = None) -> None:
    """Point `ref` at `new`; with `old`, only if it still points there (compare-and-swap)."""
    _git(repo, "update-ref", "-m", "autoresearch-swarm", ref, new, *([old] if old else []))


def write_ref(repo: git.Repo, ref: str, sha: str) -> None:
    """Create or move `ref` in-process (no subprocess); for refs only the coordinator writes."""
    try:
        git.Reference.create(repo, ref, sha, force=True)
    except (ValueError, OSError, git.GitCommandError) as exc:
        raise GitError(f"cannot write {ref}: {exc}") from None


def delete_ref(repo: git.Repo, ref: str) -> None:
    _git(repo, "update-ref", "-d", ref)


def ensure_worktree(repo: git.Repo, path: Path, branch: str, commit: str) -> Path:
    """A usable worktree of `repo` at `path` on `branch`: reused when healthy, else re-created.

    Repairs what a killed worker leaves behind: pruned registrations, a half-removed directory,
    a stale index.lock.
    """
    _git(repo, "worktree", "prune")
    path = Path(path)
    if path.exists():
        try:
            wt = git.Repo(path)
            if Path(wt.working_tree_dir).resolve() == path.resolve() and resolve(wt, "HEAD"):
                _drop_stale_locks(wt, branch)
                return path
        except (git.InvalidGitRepositoryError, git.NoSuchPathError, git.GitCommandError):
            pass
        shutil.rmtree(path, ignore_errors=True)
        _git(repo, "worktree", "prune")
    path.parent.mkdir(parents=True, exist_ok=True)
    _git(repo, "worktree", "add", "--force", "-B", branch, str(path), commit)
    return path


def _drop_stale_locks(wt: git.Repo, branch: str | None = None) -> None:
    """Remove the lock files a git command killed with its worker left behind (index.lock,
    HEAD.lock, ... of this checkout, and the lock of its own branch): every later checkout would
    fail on them. Only for a checkout the swarm owns, whose worker is gone."""
    for lock in Path(wt.git_dir).glob("*.lock"):
        lock.unlink(missing_ok=True)
    if branch:
        (common_dir(wt) / "refs" / "heads" / f"{branch}.lock").unlink(missing_ok=True)
    else:
        for lock in (Path(wt.git_dir) / "refs" / "heads").rglob("*.lock"):
            lock.unlink(missing_ok=True)


def ensure_clone_dir(path: Path) -> git.Repo:
    """A standalone repository at `path` (bundle transport: nothing shared with the coordinator)."""
    path = Path(path)
    if (path / ".git").exists():
        try:
            repo = git.Repo(path)
            _drop_stale_locks(repo)
            return _no_hooks(repo)
        except git.InvalidGitRepositoryError:
            shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return _no_hooks(git.Repo.init(path))


def sync(wt: git.Repo, branch: str, commit: str, ignored: bool = False) -> None:
    """Put the checkout on `branch` at `commit` with a pristine tree.

    Ignored files survive unless `ignored` (git clean -x): only for a checkout the swarm owns (a
    worker's worktree or clone), never the user's repository.
    """
    _git(wt, "checkout", "--force", "-B", branch, commit)
    _git(wt, "clean", "-ffdx" if ignored else "-ffd")


def is_linked_worktree(repo: git.Repo) -> bool:
    """Whether `repo` is a linked worktree (`git worktree add`), not a repository's main checkout."""
    git_dir = Path(_git(repo, "rev-parse", "--absolute-git-dir")).resolve()
    return git_dir != common_dir(repo).resolve()


def ignored_paths(wt: git.Repo) -> list[str]:
    """Git-ignored files and directories present in the checkout."""
    out = _git(wt, "status", "--porcelain", "-z", "--ignored", "--untracked-files=all")
    return sorted(e[3:] for e in out.split("\0") if e.startswith("!! "))


def changed_paths(wt: git.Repo) -> list[str]:
    return dirty_paths(wt)


def changed_between(repo: git.Repo, a: str, b: str) -> list[str]:
    """Paths whose content or mode differ between two commits (read in-process, no subprocess)."""

    def blobs(sha: str) -> dict[str, tuple[bytes, int]]:
        return {i.path: (i.binsha, i.mode) for i in repo.commit(sha).tree.traverse() if i.type != "tree"}

    x, y = blobs(a), blobs(b)
    return sorted(p for p in x.keys() | y.keys() if x.get(p) != y.get(p))


def commit_all(wt: git.Repo, message: str) -> str:
    """Stage every change of the checkout and commit it; returns the new sha."""
    _git(wt, "add", "--all")
    _git(wt, "commit", "--quiet", "--no-verify", "--allow-empty", "-m", message, env=COMMIT_ENV)
    return wt.head.commit.hexsha


def file_at(repo: git.Repo, commit: str, path: str) -> str | None:
    """Text of `path` at `commit`, exactly (None when it does not exist there).

    GitError when it is not UTF-8 text or cannot be read.
    """
    try:
        blob = repo.commit(commit).tree / path
    except (KeyError, ValueError, git.BadName):
        return None
    try:
        return blob.data_stream.read().decode("utf-8")
    except UnicodeDecodeError:
        raise GitError(f"{path} at {commit[:7]} is not UTF-8 text") from None
    except (OSError, ValueError, git.GitCommandError) as exc:
        raise GitError(f"cannot read {path} at {commit[:7]}: {exc}") from None


# ---- bundles: how code moves between nodes that share no filesystem -----------------------


def find_exp_commit(repo: git.Repo, branch: str, parent: str, marker: str) -> str | None:
    """The tip of `branch` when it is the commit of one experiment: its only parent is `parent`
    and its message holds `marker` (a worker's `swarm-exp: <tag>/<id> (` line); else None.
    How a dead worker's tried diff is found again."""
    sha = resolve(repo, f"refs/heads/{branch}")
    if sha is None:
        return None
    commit = repo.commit(sha)
    if [p.hexsha for p in commit.parents] != [parent] or marker not in commit.message:
        return None
    return sha


def exp_marker(tag: str, exp_id: int) -> str:
    """The line a worker writes into an experiment's commit message (found by `find_exp_commit`)."""
    return f"swarm-exp: {tag}/{exp_id} ("


def create_bundle(repo: git.Repo, commit: str, exclude: Sequence[str] = ()) -> bytes:
    """A git bundle (bytes) holding `commit` and its history, minus what `exclude` has."""
    ref = f"refs/swarm-bundle/{uuid.uuid4().hex}"
    update_ref(repo, ref, commit)
    try:
        with tempfile.TemporaryDirectory(prefix="swarm-bundle-") as tmp:
            path = Path(tmp) / "x.bundle"
            _git(repo, "bundle", "create", "--quiet", str(path), ref, *[f"^{c}" for c in exclude if c and c != commit])
            return path.read_bytes()
    finally:
        delete_ref(repo, ref)


def fetch_bundle(repo: git.Repo, data: bytes, dest_ref: str) -> str:
    """Fetch the one head of bundle `data` into `dest_ref` of `repo`; returns its sha."""
    with tempfile.TemporaryDirectory(prefix="swarm-bundle-") as tmp:
        path = Path(tmp) / "x.bundle"
        path.write_bytes(data)
        heads = _git(repo, "bundle", "list-heads", str(path)).split()
        if len(heads) < 2:
            raise GitError("bundle has no head")
        sha, ref = heads[0], heads[1]
        _git(repo, "fetch", "--quiet", "--no-tags", str(path), f"+{ref}:{dest_ref}")
    return sha


def fsck(repo: git.Repo) -> str:
    """Output of `git fsck --strict` (raises GitError when the object store is damaged)."""
    return _git(repo, "fsck", "--strict", "--no-progress")
