"""The plain Worker (no Ray): one experiment of each outcome on the stand-in task."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from swarm import gitops
from swarm.agents import parse_agent_spec
from swarm.decisions import Assignment
from swarm.records import Kind, Status
from swarm.worker import Worker, WorkerSpec
from tests.standin import git, make_standin_repo, standin_task

AGENT = "py:tests.standin_agents:ScriptedAgent"


@pytest.fixture()
def repo(tmp_path):
    return make_standin_repo(tmp_path / "task", sleep=0.05)


def make_worker(repo: Path, steps, *, task=None, transport="worktree", name="w0", sandbox="auto") -> Worker:
    base = git(repo, "rev-parse", "HEAD")
    checkout = repo / ".swarm" / "t" / "worktrees" / name
    if transport == "worktree":
        gitops.ensure_worktree(gitops.open_repo(repo), checkout, f"swarm/t/{name}", base)
    spec = WorkerSpec(
        name=name, tag="t", task=task or standin_task(timeout=10), agent=parse_agent_spec(AGENT, {"steps": steps}),
        checkout=str(checkout), log_dir=str(repo / ".swarm" / "t" / "logs"), transport=transport,
        clone_dir=str(repo.parent / "clone" / name), sandbox=sandbox,
    )
    w = Worker(spec)
    w.setup()
    return w


def assign(repo: Path, exp_id: int, kind=Kind.PROPOSAL, **kw) -> Assignment:
    return Assignment(exp_id=exp_id, worker="w0", agent="scripted", kind=kind,
                      parent=git(repo, "rev-parse", "HEAD"), parent_metric=2.0, **kw)


def test_baseline_measures_parent_commit(repo):
    w = make_worker(repo, [])
    rec = w.run(assign(repo, 1, Kind.BASELINE)).record
    assert rec.status == Status.KEEP and rec.commit == rec.parent
    assert rec.metric == pytest.approx(2.0, abs=0.001)
    assert rec.memory_gb == 0.5 and rec.task_seconds > 0
    assert Path(rec.log_path).name == "1.log" and "val_bpb" in Path(rec.log_path).read_text()


def test_proposal_is_committed_and_measured(repo):
    w = make_worker(repo, [{"X": 3.0}])
    rec = w.run(assign(repo, 2)).record
    assert rec.status == Status.KEEP and rec.commit != rec.parent
    assert rec.metric == pytest.approx(1.1, abs=0.001)
    assert rec.description == "X=3.0" and rec.usage.calls == 1
    assert "X = 3.0" in git(repo, "show", f"{rec.commit}:train.py")


@pytest.mark.parametrize(
    "step, status, error",
    [
        ({"CRASH": 1}, Status.CRASH, "exit status"),
        ({"NAN": 1}, Status.CRASH, "no finite val_bpb"),
        ({"SLEEP": 30.0}, Status.TIMEOUT, "hard timeout"),
        ({"__error__": "model said no"}, Status.INVALID, "model said no"),
        ({"__raise__": "boom"}, Status.INVALID, "RuntimeError: boom"),
        ({"X": 1.0, "__touch__": "README.md"}, Status.INVALID, "other than"),
        ({"__noop__": True}, Status.INVALID, "changed nothing"),
    ],
)
def test_failures_are_recorded_not_raised(repo, step, status, error):
    w = make_worker(repo, [step], task=standin_task(timeout=1.5))
    rec = w.run(assign(repo, 3)).record
    assert rec.status == status and error in rec.error
    assert rec.metric is None
    # the worktree is clean and usable afterwards
    wt = gitops.open_repo(w.checkout)
    if status == Status.INVALID:
        assert gitops.changed_paths(wt) == []
        assert (w.checkout / "README.md").read_text() == "stand-in task\n"
    assert w.last_failure


def test_invalid_with_commit_keeps_the_commit(repo):
    """A worktree-editing agent (command agent: files={}) that changed another file: its commit stays."""
    w = make_worker(repo, [{"X": 1.0, "__write__": {"README.md": "touched\n"}}])
    rec = w.run(assign(repo, 4)).record
    assert rec.status == Status.INVALID and rec.commit and rec.commit != rec.parent and "other than" in rec.error
    assert git(repo, "show", f"{rec.commit}:README.md") == "touched"


@pytest.mark.parametrize("path", ["README.md", ".git/config", ".git", "../escape.txt", "sub/new.py"])
def test_proposal_outside_the_mutable_files_is_invalid_before_writing(repo, path):
    w = make_worker(repo, [{"X": 1.0, "__touch__": path}, {"X": 2.0}])
    git_entry = (w.checkout / ".git").read_bytes()
    rec = w.run(assign(repo, 4)).record
    assert rec.status == Status.INVALID and rec.commit == "" and "other than" in rec.error
    assert (w.checkout / ".git").read_bytes() == git_entry and not (repo / ".swarm" / "t" / "worktrees" / "escape.txt").exists()
    assert (w.checkout / "README.md").read_text() == "stand-in task\n" and not (w.checkout / "sub").exists()
    assert "X = 0.0" in (w.checkout / "train.py").read_text()  # nothing was written
    assert w.run(assign(repo, 5)).record.status == Status.KEEP  # the worker goes on


def test_worktree_agent_writing_git_files_is_invalid_not_a_crash(repo):
    w = make_worker(repo, [{"X": 1.0, "__write__": {".git": "gitdir: /nowhere\n"}}, {"X": 2.0}])
    git_entry = (w.checkout / ".git").read_bytes()
    rec = w.run(assign(repo, 4)).record
    assert rec.status == Status.INVALID and ".git" in rec.error and rec.commit == ""
    assert (w.checkout / ".git").read_bytes() == git_entry  # restored
    assert w.run(assign(repo, 5)).record.status == Status.KEEP


def test_ignored_files_are_invalid_and_never_outlive_an_experiment(tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.05)
    (repo / ".gitignore").write_text("*.cache\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-qm", "ignore caches")
    w = make_worker(repo, [{"X": 1.0, "__write__": {"helper.cache": "import os\n"}}, {"X": 2.0}])
    rec = w.run(assign(repo, 4)).record
    assert rec.status == Status.INVALID and "git-ignored" in rec.error and "helper.cache" in rec.error
    assert not (w.checkout / "helper.cache").exists()
    (w.checkout / "left.cache").write_text("a task's leftover")
    (w.checkout / "__pycache__").mkdir()
    (w.checkout / "__pycache__" / "x.pyc").write_text("")
    assert w.run(assign(repo, 5)).record.status == Status.KEEP  # __pycache__ alone is not the agent's doing
    assert not (w.checkout / "left.cache").exists()  # sync cleaned the worker's own worktree (git clean -x)
    assert not (repo / "left.cache").exists()


def test_task_env_is_scrubbed_and_marked(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("SWARM_TEST_API_KEY", "sekret")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    dump = tmp_path / "env"
    task = standin_task(env={"STANDIN_ENV_DUMP": str(dump), "STANDIN_FORBIDDEN": "SWARM_TEST_API_KEY"})
    w = make_worker(repo, [], task=task, sandbox="off")  # the dump goes outside the worktree: no sandbox
    rec = w.run(assign(repo, 5, Kind.BASELINE)).record
    assert rec.status == Status.KEEP, rec.error
    env = json.loads((dump / "5.json").read_text())
    assert "SWARM_TEST_API_KEY" not in env and "sekret" not in json.dumps(env)
    assert env["CUDA_VISIBLE_DEVICES"] == "3"
    assert env["AUTORESEARCH_EXP_ID"] == "5" and env["AUTORESEARCH_WORKER"] == "w0"
    assert os.environ["SWARM_TEST_API_KEY"] == "sekret"  # the worker never touched its own env


def test_bundle_transport_round_trip(repo):
    """A worker with its own clone gets the parent as a bundle and returns its commit as one."""
    coord = gitops.open_repo(repo)
    w = make_worker(repo, [{"Y": -1.0}], transport="bundle")
    assert w.checkout == repo.parent / "clone" / "w0" and not (w.checkout / "train.py").exists()
    a = assign(repo, 6)
    bundle = gitops.create_bundle(coord, a.parent)
    res = w.run(a, bundle)
    assert res.record.status == Status.KEEP and res.bundle
    assert not gitops.has_commit(coord, res.record.commit)  # nothing shared
    sha = gitops.fetch_bundle(coord, res.bundle, "refs/swarm/t/exp/6")
    assert sha == res.record.commit and "Y = -1.0" in git(repo, "show", f"{sha}:train.py")
    gitops.fsck(coord)


def test_kill_strays_ends_only_this_runs_tasks(tmp_path):
    import subprocess
    import sys

    from swarm.proc import kill_strays

    def start(run, worker):
        env = {**os.environ, "AUTORESEARCH_RUN": run, "AUTORESEARCH_WORKER": worker}
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env, start_new_session=True)

    mine, other_run, other_worker = start("/r/a", "w1"), start("/r/b", "w1"), start("/r/a", "w2")
    try:
        kill_strays("/r/a", "w1")
        assert mine.wait(timeout=10) != 0
        assert other_run.poll() is None and other_worker.poll() is None
    finally:
        for p in (mine, other_run, other_worker):
            p.kill()
            p.wait()
