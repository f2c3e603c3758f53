"""`autoresearch run --config FILE`: precedence over defaults, flags over the file, unknown keys,
per-agent options into AgentSpec.options (secrets kept out of the journal). No Ray needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm.cli import build_parser, main
from swarm.commands.run import build_config
from swarm.config import agent_to_dict
from swarm.errors import ConfigError
from swarm.journal import EventType, Journal
from tests.standin import make_standin_repo

GOOD = "py:tests.standin_agents:GoodAgent"


@pytest.fixture()
def repo(tmp_path) -> Path:
    return make_standin_repo(tmp_path / "task")


@pytest.fixture()
def task_file(tmp_path) -> Path:
    path = tmp_path / "standin.toml"
    path.write_text('[task]\nname = "standin"\nmutable_files = ["train.py"]\ncommand = ["{python}", "train.py"]\n'
                    'time_budget = 1.0\n')
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def build(repo: Path, *argv: str):
    args = build_parser().parse_args(["run", "--repo", str(repo), *argv])
    return build_config(args)


FILE = '''
[run]
agents = ["openai/gpt-5", "anthropic/claude-sonnet-4-5", "builtin"]
compare = true
workers = 6
max_experiments = 120
hours = 8
min_delta = 0.001
seed = 7
tag = "fromfile"

[agents."openai/gpt-5"]
price_in_per_mtok = 1.25
price_out_per_mtok = 10.0
api_key = "sk-not-for-the-journal"

[agents."builtin"]
max_level = 2

[agents."ollama/qwen3"]
api_base = "http://127.0.0.1:11434"
'''


def test_file_fills_in_run_settings_and_agent_options(repo, task_file, tmp_path):
    cfg = build(repo, "--config", str(write(tmp_path, FILE)), "--task", str(task_file))
    assert [a.name for a in cfg.agents] == ["openai/gpt-5", "anthropic/claude-sonnet-4-5", "builtin"]
    assert cfg.compare and cfg.workers == 6 and cfg.max_experiments == 120 and cfg.hours == 8.0
    assert cfg.min_delta == 0.001 and cfg.seed == 7 and cfg.tag == "fromfile"
    gpt, claude, builtin = cfg.agents
    assert dict(gpt.options) == {"price_in_per_mtok": 1.25, "price_out_per_mtok": 10.0,
                                 "api_key": "sk-not-for-the-journal"}
    assert dict(claude.options) == {} and dict(builtin.options) == {"max_level": 2}
    assert [lane.name for lane in cfg.lanes] == ["openai-gpt-5", "anthropic-claude-sonnet-4-5", "builtin"]
    journal = cfg.to_dict()
    assert "sk-not-for-the-journal" not in str(journal)  # the secret reaches the agent, never the journal
    assert journal["agents"][0]["options"] == {"price_in_per_mtok": 1.25, "price_out_per_mtok": 10.0}


def test_flags_override_the_file(repo, task_file, tmp_path):
    conf = write(tmp_path, FILE)
    cfg = build(repo, "--config", str(conf), "--task", str(task_file), "--workers", "2", "--no-compare",
                "--agents", "openai/gpt-5,builtin", "--min-delta", "0", "--tag", "cli")
    assert cfg.workers == 2 and not cfg.compare and cfg.min_delta == 0.0 and cfg.tag == "cli"
    assert [a.name for a in cfg.agents] == ["openai/gpt-5", "builtin"]
    assert dict(cfg.agents[0].options)["price_in_per_mtok"] == 1.25  # options follow the spec, wherever it came from
    assert cfg.max_experiments == 120  # not given on the command line: from the file
    plain = build(repo, "--task", str(task_file), "--tag", "plain")
    assert not plain.compare and plain.workers is None and [a.name for a in plain.agents] == ["builtin"]


def test_agents_as_one_string_and_task_from_the_file(repo, task_file, tmp_path):
    conf = write(tmp_path, f'[run]\nagents = "builtin, {GOOD}"\ntask = "{task_file}"\nquiet = true\n'
                           f'[agents."{GOOD}"]\nstep = 0.5\n')
    cfg = build(repo, "--config", str(conf), "--tag", "s")
    assert cfg.task.name == "standin" and not cfg.progress
    assert [a.kind for a in cfg.agents] == ["builtin", "python"] and cfg.agents[1].options["step"] == 0.5


@pytest.mark.parametrize("text, message", [
    ("[run]\nworkerz = 4\n", "unknown key run.workerz"),
    ("[runn]\nworkers = 4\n", "unknown key 'runn'"),
    ("[run]\nresume = true\n", "unknown key run.resume"),
    ("[run]\nworkers = \"four\"\n", "run.workers must be int"),
    ("[run]\ntransport = \"pigeon\"\n", "run.transport must be one of"),
    ("[run]\ncompare = 1\n", "run.compare must be bool"),
    ("[run]\nagents = 3\n", "run.agents must be a list"),
    ('[agents."openai/gpt-5"]\nprice_per_token = 1\n', "unknown option 'price_per_token' for agent 'openai/gpt-5'"),
    ('[agents."builtin"]\ntemperature = 1\n', "unknown option 'temperature' for agent 'builtin'"),
    ("[run\n", "not valid TOML"),
])
def test_bad_files_are_one_line_errors(repo, task_file, tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        build(repo, "--config", str(write(tmp_path, text)), "--task", str(task_file))


def test_cli_reports_config_errors_in_one_line(repo, task_file, tmp_path, capsys):
    conf = write(tmp_path, "[run]\nmax_experimentz = 3\n")
    assert main(["run", "--repo", str(repo), "--config", str(conf), "--task", str(task_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key run.max_experimentz" in err
    assert main(["run", "--repo", str(repo), "--config", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_resume_takes_the_journal_and_the_file_restores_secrets(repo, task_file, tmp_path):
    cfg = build(repo, "--config", str(write(tmp_path, FILE)), "--task", str(task_file))
    Journal(cfg.journal_path).append(EventType.RUN_STARTED, tag=cfg.tag, base_commit="x", config=cfg.to_dict())
    resumed = build(repo, "--resume", "--tag", "fromfile")
    assert resumed.compare and resumed.resume and [a.name for a in resumed.agents] == [a.name for a in cfg.agents]
    assert "api_key" not in resumed.agents[0].options  # the journal never had it
    again = build(repo, "--resume", "--tag", "fromfile", "--config", str(write(tmp_path, '[agents."openai/gpt-5"]\n'
                                                                                    'api_key = "sk-again"\n')))
    assert again.agents[0].options["api_key"] == "sk-again" and again.compare
    assert agent_to_dict(again.agents[0])["options"].get("api_key") is None


def test_each_resume_stacks_on_the_previous_one(repo, task_file, tmp_path):
    """flags > config file > the latest resume's settings > the first start's; --hours does not
    stack, and the first start's wave size and lanes stay."""
    from swarm.journal import read_events
    from swarm.state import replay

    first = build(repo, "--task", str(task_file), "--tag", "stack", "--max-experiments", "10", "--hours", "1")
    journal = Journal(first.journal_path)
    journal.append(EventType.RUN_STARTED, tag="stack", base_commit="x",
                   config={**first.to_dict(), "workers": 2, "wave_size": 3})  # as the coordinator writes it
    journal.append(EventType.RUN_STOPPED, reason="hours")
    one = build(repo, "--resume", "--tag", "stack", "--max-experiments", "20", "--min-delta", "0.01",
                "--agents", f"builtin,{GOOD}", "--max-cost", "5", "--hours", "2")
    assert (one.max_experiments, one.min_delta, one.max_cost, one.hours, one.workers) == (20, 0.01, 5.0, 2.0, 2)
    journal.append(EventType.RUN_RESUMED, config={**one.to_dict(), "workers": None})  # a library user's resume
    journal.append(EventType.RUN_STOPPED, reason="max_experiments")
    two = build(repo, "--resume", "--tag", "stack")
    assert (two.max_experiments, two.min_delta, two.max_cost) == (20, 0.01, 5.0)
    assert [a.name for a in two.agents] == ["builtin", "GoodAgent"] == [a.name for a in one.agents]
    assert two.task.name == "standin"
    assert two.hours is None and two.workers == 2  # --hours was that invocation's; workers: the run's plan
    journal.append(EventType.RUN_RESUMED, config=two.to_dict())
    state = replay(read_events(first.journal_path))
    assert state.config["max_experiments"] == 20 and state.config["agents"][1]["name"] == "GoodAgent"
    assert state.wave_size == 3 and state.config["wave_size"] == 3 and state.lanes == ["main"]
    conf = write(tmp_path, "[run]\nmax_experiments = 30\nmin_delta = 0.02\n")
    three = build(repo, "--resume", "--tag", "stack", "--config", str(conf), "--min-delta", "0.03")
    assert (three.max_experiments, three.min_delta, three.max_cost) == (30, 0.03, 5.0)
