"""Git operations on real tmp repositories: worktrees, refs, bundles, ignored files."""

from __future__ import annotations

import pytest

from swarm import gitops
from swarm.errors import ConfigError, GitError
from tests.standin import git, make_standin_repo


@pytest.fixture()
def repo(tmp_path):
    return make_standin_repo(tmp_path / "task")


def commit_change(repo, old, new, msg="change", path="train.py"):
    p = repo / path
    p.write_text(p.read_text().replace(old, new))
    git(repo, "commit", "-qam", msg)
    return git(repo, "rev-parse", "HEAD")


def test_open_repo_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a git repository"):
        gitops.open_repo(tmp_path)


def test_exclude_and_dirty_paths(repo):
    r = gitops.open_repo(repo)
    gitops.ensure_excluded(r, ".swarm/")
    gitops.ensure_excluded(r, ".swarm/")
    assert (repo / ".git" / "info" / "exclude").read_text().count(".swarm/") == 1
    (repo / ".swarm").mkdir()
    (repo / ".swarm" / "x").write_text("x")
    assert gitops.dirty_paths(r) == []
    (repo / "train.py").write_text("changed")
    (repo / "new.txt").write_text("n")
    assert gitops.dirty_paths(r, ["train.py"]) == ["train.py"]
    assert sorted(gitops.dirty_paths(r)) == ["new.txt", "train.py"]


def test_update_ref_compare_and_swap(repo):
    r = gitops.open_repo(repo)
    base = gitops.head_commit(r)
    c1 = commit_change(repo, "X = 0.0", "X = 1.0")
    gitops.update_ref(r, "refs/heads/swarm/t/best", base)
    gitops.update_ref(r, "refs/heads/swarm/t/best", c1, base)
    with pytest.raises(GitError):
        gitops.update_ref(r, "refs/heads/swarm/t/best", base, base)  # stale expectation
    assert gitops.resolve(r, "swarm/t/best") == c1
    assert gitops.resolve(r, "nope") is None


def test_worktree_create_sync_commit_and_repair(repo):
    r = gitops.open_repo(repo)
    base = gitops.head_commit(r)
    path = repo / ".swarm" / "t" / "worktrees" / "w0"
    gitops.ensure_worktree(r, path, "swarm/t/w0", base)
    wt = gitops.open_repo(path)
    (path / "train.py").write_text("edited\n")
    (path / "junk.txt").write_text("junk")
    c = gitops.commit_all(wt, "edit")
    assert gitops.file_at(r, c, "train.py") == "edited\n"  # shared object store
    gitops.sync(wt, "swarm/t/w0", base)
    assert not (path / "junk.txt").exists() and gitops.changed_paths(wt) == []
    # a killed worker leaves a stale lock; a deleted worktree dir is re-created
    # (a git command killed with its worker: index.lock, HEAD.lock and its branch's ref lock)
    locks = [gitops.common_dir(r) / "worktrees" / "w0" / name for name in ("index.lock", "HEAD.lock")]
    locks.append(gitops.common_dir(r) / "refs" / "heads" / "swarm" / "t" / "w0.lock")
    for lock in locks:
        lock.write_text("")
    gitops.ensure_worktree(r, path, "swarm/t/w0", base)
    assert not any(lock.exists() for lock in locks)
    gitops.sync(gitops.open_repo(path), "swarm/t/w0", c)  # the checkout works again
    import shutil

    shutil.rmtree(path)
    gitops.ensure_worktree(r, path, "swarm/t/w0", base)
    assert (path / "train.py").exists() and gitops.head_commit(gitops.open_repo(path)) == base
    gitops.fsck(r)


def test_git_hooks_planted_in_a_checkout_never_run(repo, tmp_path):
    """Agent-written code could plant a hook in a clone's .git (or a gitdir of its own): the
    worker's git never runs hooks."""
    r = gitops.open_repo(repo)
    base = gitops.head_commit(r)
    clone = gitops.ensure_clone_dir(tmp_path / "clone")
    gitops.fetch_bundle(clone, gitops.create_bundle(r, base), "refs/swarm/t/incoming")
    flag = tmp_path / "hook-ran"
    for name in ("post-checkout", "pre-commit", "post-commit"):
        hook = tmp_path / "clone" / ".git" / "hooks" / name
        hook.parent.mkdir(parents=True, exist_ok=True)
        hook.write_text(f"#!/bin/sh\necho {name} >> {flag}\n")
        hook.chmod(0o755)
    gitops.sync(clone, "swarm/t/w0", base)
    (tmp_path / "clone" / "train.py").write_text("edited\n")
    gitops.commit_all(gitops.ensure_clone_dir(tmp_path / "clone"), "edit")
    assert not flag.exists()


def test_bundle_round_trip_into_a_fresh_repo(repo, tmp_path):
    r = gitops.open_repo(repo)
    base = gitops.head_commit(r)
    clone = gitops.ensure_clone_dir(tmp_path / "clone")
    sha = gitops.fetch_bundle(clone, gitops.create_bundle(r, base), "refs/swarm/t/incoming")
    assert sha == base
    gitops.sync(clone, "swarm/t/w0", base)
    (tmp_path / "clone" / "train.py").write_text("remote edit\n")
    c = gitops.commit_all(clone, "remote")
    thin = gitops.create_bundle(clone, c, exclude=[base])
    assert len(thin) < len(gitops.create_bundle(clone, c))
    assert gitops.fetch_bundle(r, thin, "refs/swarm/t/exp/1") == c
    assert gitops.file_at(r, c, "train.py") == "remote edit\n"
    assert not [ref for ref in git(repo, "for-each-ref", "--format=%(refname)").split() if "swarm-bundle" in ref]
    gitops.fsck(r)


def test_file_at_non_utf8_is_a_git_error(repo):
    r = gitops.open_repo(repo)
    (repo / "train.py").write_bytes(b"X = 1\n\xff\xfe\n")
    c = gitops.commit_all(r, "binary")
    with pytest.raises(GitError, match="not UTF-8"):
        gitops.file_at(r, c, "train.py")
    assert gitops.file_at(r, c, "nope.py") is None


def test_sync_can_clean_ignored_files_and_lists_them(repo, tmp_path):
    r = gitops.open_repo(repo)
    base = gitops.head_commit(r)
    (repo / ".gitignore").write_text("*.cache\n")
    base = gitops.commit_all(r, "ignore caches")
    path = tmp_path / "wt"
    gitops.ensure_worktree(r, path, "swarm/t/w0", base)
    wt = gitops.open_repo(path)
    assert gitops.is_linked_worktree(wt) and not gitops.is_linked_worktree(r)
    (path / "x.cache").write_text("leftover")
    assert gitops.ignored_paths(wt) == ["x.cache"] and gitops.dirty_paths(wt) == []
    gitops.sync(wt, "swarm/t/w0", base)
    assert (path / "x.cache").exists()  # plain sync keeps ignored files
    gitops.sync(wt, "swarm/t/w0", base, ignored=True)
    assert not (path / "x.cache").exists() and gitops.ignored_paths(wt) == []


def test_changed_between(repo):
    r = gitops.open_repo(repo)
    base = gitops.head_commit(r)
    (repo / "new.txt").write_text("n")
    (repo / "train.py").write_text("x")
    (repo / "README.md").chmod(0o755)
    c = gitops.commit_all(r, "three changes")
    assert gitops.changed_between(r, base, c) == ["README.md", "new.txt", "train.py"]
    assert gitops.changed_between(r, c, c) == []
