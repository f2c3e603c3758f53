"""How experiment commits move between the coordinator's repository and its workers.

A bundle-transport worker gets the commit it starts from as a git bundle, thin against what it
already has (`bundle_for`). A worker whose actor died after committing its proposal left that
commit on its branch: `recover_commit` finds it (in the shared repository for a worktree, through
a Ray task on the worker's node for a clone) and stores it under the experiment's ref, so that no
tried diff is lost. Not covered: a worker's own git work (swarm.worker), refs of the best branch
(swarm.promoter).
"""

from __future__ import annotations

from typing import Any

import git

from swarm import gitops
from swarm.decisions import Assignment
from swarm.errors import GitError
from swarm.records import Kind


def bundle_for(repo: git.Repo, commit: str, worker_has: str | None) -> bytes:
    """A bundle of `commit`, thin against what the worker already has when that works."""
    if worker_has:
        try:
            return gitops.create_bundle(repo, commit, exclude=[worker_has])
        except GitError:  # e.g. nothing new relative to it: send the whole history
            pass
    return gitops.create_bundle(repo, commit)


def recover_commit(repo: git.Repo, tag: str, slot: Any, a: Assignment) -> str:
    """The commit the dead worker of `slot` made for `a`, stored under `refs/swarm/<tag>/exp/<id>`;
    "" when it made none (it died before committing, or `a` measured an existing commit) or its
    node is gone."""
    if a.kind in (Kind.BASELINE, Kind.CONFIRM):
        return ""
    marker, exp_ref = gitops.exp_marker(tag, a.exp_id), f"refs/swarm/{tag}/exp/{a.exp_id}"
    try:
        if slot.transport == "bundle":  # the commit is in the worker's clone, on its node
            from swarm.worker_actor import recover_commit as fetch_from_node

            data = fetch_from_node(slot.info, slot.spec.branch, a.parent, marker)
            return gitops.fetch_bundle(repo, data, exp_ref) if data else ""
        commit = gitops.find_exp_commit(repo, slot.spec.branch, a.parent, marker)
        if commit:
            gitops.write_ref(repo, exp_ref, commit)
        return commit or ""
    except GitError:
        return ""


__all__ = ["bundle_for", "recover_commit"]
