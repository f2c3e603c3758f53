"""The command agent with small Python scripts standing in for a coding CLI. No network."""

from __future__ import annotations

import shlex
import sys
import textwrap

import pytest

from swarm.agents import make_agent, parse_agent_spec
from swarm.agents.base import AgentContext
from swarm.agents.command import CommandAgent, describe_output
from swarm.errors import ConfigError
from swarm.task import TaskSpec

PATH = "trainer/train.py"
TRAIN = "DEPTH = 8  # number of layers\nMATRIX_LR = 0.04\n"

# A fake CLI: reads the prompt (last argument or stdin), saves it next to itself, edits a file.
CLI = textwrap.dedent(
    """\
    import os, sys, time, pathlib
    mode = sys.argv[1]
    prompt = sys.stdin.read() if mode == "stdin" else sys.argv[-1]
    here = pathlib.Path(__file__).parent
    (here / "prompt.txt").write_text(prompt)
    (here / "env.txt").write_text(os.environ.get("FAKE_CLI_KEY", ""))
    if mode == "hang":
        time.sleep(60)
    if mode == "fail":
        print("working...")
        print("error: quota exceeded")
        sys.exit(3)
    target = pathlib.Path("README.md" if mode == "other" else "trainer/train.py")
    target.write_text(target.read_text().replace("DEPTH = 8", "DEPTH = 10") if target.exists() else "hi\\n")
    print("I looked at the history.")
    print("Description: deeper model (10 layers)")
    """
)


@pytest.fixture
def setup(tmp_path):
    worktree = tmp_path / "worktree"
    (worktree / "trainer").mkdir(parents=True)
    (worktree / PATH).write_text(TRAIN)
    (worktree / "program.md").write_text("# protocol\n")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "cli.py").write_text(CLI)
    task = TaskSpec("gpt-cpu", (PATH,), ("{python}", "-m", "trainer.train"), time_budget=20.0)
    ctx = AgentContext(
        worker="w1",
        worktree=worktree,
        task=task,
        program="# protocol\n",
        files={PATH: TRAIN},
        baseline_commit="abc123",
        baseline_metric=1.1,
        last_failure="Traceback: boom",
    )
    return ctx, tools


# The fake CLI lives in tmp_path and writes next to itself, outside the worktree: these tests run it
# unsandboxed (tests/test_sandbox.py runs a command agent in the sandbox).
def cli(tools, mode: str) -> list[str]:
    return [sys.executable, str(tools / "cli.py"), mode]


def test_cli_edits_train_py_prompt_as_argument(setup):
    ctx, tools = setup
    p = CommandAgent(cli(tools, "arg"), sandbox="off", timeout=30).propose(ctx)
    assert p.error is None and p.files == {}
    assert p.description == "deeper model (10 layers)"
    assert "DEPTH = 10" in (ctx.worktree / PATH).read_text()
    prompt = (tools / "prompt.txt").read_text()
    assert "Read program.md" in prompt and "Traceback: boom" in prompt and PATH in prompt
    assert p.usage.calls == 1


def test_cli_prompt_on_stdin(setup):
    ctx, tools = setup
    agent = CommandAgent(cli(tools, "stdin"), sandbox="off", prompt_via="stdin", timeout=30)
    p = agent.propose(ctx)
    assert p.error is None and "Read program.md" in (tools / "prompt.txt").read_text()
    assert agent.command("PROMPT") == cli(tools, "stdin")


def test_stdin_is_closed_when_prompt_is_an_argument(setup):
    ctx, tools = setup
    # mode "stdin" reads stdin although the prompt went as argument: it must see EOF, not hang
    p = CommandAgent(cli(tools, "stdin"), sandbox="off", prompt_via="arg", timeout=30).propose(ctx)
    assert p.error is None and (tools / "prompt.txt").read_text() == ""


def test_cli_that_edits_another_file_still_returns_a_proposal(setup):
    ctx, tools = setup
    p = CommandAgent(cli(tools, "other"), sandbox="off", timeout=30).propose(ctx)
    assert p.error is None and p.files == {}  # the worker sees README.md in the diff: invalid
    assert (ctx.worktree / "README.md").exists() and (ctx.worktree / PATH).read_text() == TRAIN


def test_cli_that_hangs_times_out_with_error(setup):
    ctx, tools = setup
    p = CommandAgent(cli(tools, "hang"), sandbox="off", timeout=1.5).propose(ctx)
    assert p.error and "timed out after 1.5 s" in p.error and p.files == {}


def test_cli_that_fails_gives_error_with_its_last_line(setup):
    ctx, tools = setup
    p = CommandAgent(cli(tools, "fail"), sandbox="off", timeout=30).propose(ctx)
    assert p.error and p.error.endswith("exited with status 3: error: quota exceeded")
    assert p.error.startswith("cmd:python")


def test_missing_cli_gives_error(setup):
    ctx, _ = setup
    p = CommandAgent(["/no/such/cli-binary"], timeout=5).propose(ctx)
    assert p.error and "status 127" in p.error


def test_environment_is_passed_through_for_the_cli_key(setup, monkeypatch):
    ctx, tools = setup
    monkeypatch.setenv("FAKE_CLI_KEY", "cli-key-value")
    CommandAgent(cli(tools, "arg"), sandbox="off", timeout=30).propose(ctx)
    assert (tools / "env.txt").read_text() == "cli-key-value"


def test_prompt_placeholder_and_options():
    agent = CommandAgent(["tool", "--prompt={prompt}", "--yes"])
    assert agent.command("P") == ["tool", "--prompt=P", "--yes"]
    assert CommandAgent(["tool", "-p"]).command("P") == ["tool", "-p", "P"]
    with pytest.raises(ConfigError):
        CommandAgent(["tool"], prompt_via="file")
    with pytest.raises(ConfigError, match="unknown option"):
        CommandAgent(["tool"], timout=3)


def test_make_agent_builds_command_agent(setup):
    _, tools = setup
    spec = parse_agent_spec("cmd:" + shlex.join(cli(tools, "arg")), {"timeout": 12})
    agent = make_agent(spec)
    assert isinstance(agent, CommandAgent) and agent.timeout == 12 and agent.argv == cli(tools, "arg")


def test_describe_output():
    assert describe_output("**Description:** faster warmup\nmore") == "faster warmup"
    assert describe_output("\n\nChanged the LR.\nDone") == "Changed the LR."
    assert describe_output("") == ""
