"""Bad input to `autoresearch run` (and the run-reading commands) is refused with one line and exit
status 2 before anything expensive: no Ray cluster, no data preparation (swarm.preflight)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from swarm.cli import main
from swarm.config import SwarmConfig
from swarm.journal import EventType, Journal
from tests.standin import git, make_standin_repo, standin_task

GOOD = "py:tests.standin_agents:GoodAgent"


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Reaching the coordinator or data preparation fails the test; so does a Ray left started."""
    from swarm.coordinator import Coordinator

    def started(*_a, **_k):
        pytest.fail("the bad input reached the coordinator (Ray would start)")

    def prepared(*_a, **_k):
        pytest.fail("the bad input reached data preparation")

    monkeypatch.setattr(Coordinator, "run", started)
    import prepare

    monkeypatch.setattr(prepare, "ensure_prepared", prepared)
    yield
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


@pytest.fixture()
def repo(tmp_path) -> Path:
    return make_standin_repo(tmp_path / "task")


def task_toml(path: Path, mutable: str = "train.py") -> Path:
    path.write_text(f'[task]\nname = "standin"\nmutable_files = ["{mutable}"]\ncommand = ["{{python}}", "train.py"]\n'
                    'time_budget = 1.0\ntimeout = 20.0\n')
    return path


def refused(capsys, argv: list[str], message: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line, no traceback
    assert message in err, err
    return err


def started_run(repo: Path, tag: str, **kw) -> None:
    """A run's journal as its first coordinator leaves it (started, then stopped)."""
    from swarm.agents import parse_agent_spec

    cfg = SwarmConfig(repo=repo, tag=tag, task=standin_task(), agents=(parse_agent_spec("builtin"),), **kw)
    journal = Journal(cfg.journal_path)
    journal.append(EventType.RUN_STARTED, tag=tag, base_commit=git(repo, "rev-parse", "HEAD"),
                   config={**cfg.to_dict(), "workers": 2, "wave_size": 3})
    journal.append(EventType.RUN_STOPPED, reason="interrupted")


def test_task_that_is_a_directory(repo, tmp_path, capsys):
    refused(capsys, ["run", "--repo", str(repo), "--task", str(tmp_path)], "is a directory")


@pytest.mark.parametrize("tag", ["", "  "])
def test_empty_tag(repo, tmp_path, capsys, tag):
    toml = task_toml(tmp_path / "t.toml")
    refused(capsys, ["run", "--repo", str(repo), "--task", str(toml), "--tag", tag], "--tag is empty")
    assert not (repo / ".swarm").exists()
    started_run(repo, "real")
    refused(capsys, ["status", "--repo", str(repo), "--tag", tag], "--tag is empty")
    refused(capsys, ["report", "--repo", str(repo), "--tag", tag], "--tag is empty")
    refused(capsys, ["run", "--repo", str(repo), "--resume", "--tag", tag], "--tag is empty")


def test_tag_with_a_path_in_it(repo, capsys):
    started_run(repo, "real")
    refused(capsys, ["status", "--repo", str(repo), "--tag", "../real"], "tag '../real': use letters")


def test_mutable_files_missing_from_the_repository(repo, tmp_path, capsys):
    toml = task_toml(tmp_path / "t.toml", mutable="src/model.py")
    refused(capsys, ["run", "--repo", str(repo), "--task", str(toml)], "mutable_files: src/model.py not found in")
    toml = task_toml(tmp_path / "t.toml", mutable=".")  # a directory is not a file agents can edit
    refused(capsys, ["run", "--repo", str(repo), "--task", str(toml)], "mutable_files: . not found in")


def test_uncommitted_change_before_ray(repo, tmp_path, capsys):
    (repo / "train.py").write_text((repo / "train.py").read_text() + "\n# dirty\n")
    refused(capsys, ["run", "--repo", str(repo), "--task", str(task_toml(tmp_path / "t.toml"))],
            "uncommitted changes in train.py")


def test_uncommitted_change_before_data_preparation(tmp_path, capsys):
    """The GPT task prepares its data first (minutes on a first run): the check comes before it."""
    repo = tmp_path / "gpt"
    (repo / "trainer").mkdir(parents=True)
    (repo / "trainer" / "train.py").write_text("print('train')\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "gpt")
    (repo / "trainer" / "train.py").write_text("print('edited')\n")
    refused(capsys, ["run", "--repo", str(repo), "--profile", "cpu"], "uncommitted changes in trainer/train.py")


def test_existing_tag(repo, tmp_path, capsys):
    started_run(repo, "taken")
    refused(capsys, ["run", "--repo", str(repo), "--task", str(task_toml(tmp_path / "t.toml")), "--tag", "taken"],
            "a run tagged 'taken' exists; continue it with --resume")


def test_resume_of_a_missing_tag(repo, capsys):
    started_run(repo, "real")
    refused(capsys, ["run", "--repo", str(repo), "--resume", "--tag", "nope"], "no run tagged 'nope'")


def test_resume_with_other_lanes(repo, capsys):
    started_run(repo, "shared")
    refused(capsys, ["run", "--repo", str(repo), "--resume", "--tag", "shared", "--compare", "--agents",
                     f"builtin,{GOOD}"], "run 'shared' races lanes ['main']")


def test_preflight_passes_a_good_run_and_returns_the_state_to_resume(repo, tmp_path):
    from swarm.commands.run import build_config
    from swarm.cli import build_parser
    from swarm.preflight import preflight

    args = build_parser().parse_args(["run", "--repo", str(repo), "--task", str(task_toml(tmp_path / "t.toml")),
                                      "--tag", "fine"])
    assert preflight(build_config(args)) is None  # a new run: nothing to replay
    started_run(repo, "fine")
    resumed = build_config(build_parser().parse_args(["run", "--repo", str(repo), "--resume", "--tag", "fine"]))
    state = preflight(resumed)
    assert state.tag == "fine" and state.wave_size == 3 and state.stopped
