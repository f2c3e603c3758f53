"""Behaviour of the shared contract modules: subprocess helper, env scrubbing, summary parsing,
task specs and agent spec strings."""

import sys
import time

import pytest

from swarm.agents import make_agent, parse_agent_list, parse_agent_spec
from swarm.errors import ConfigError
from swarm.proc import run_process, scrub_env
from swarm.records import ExperimentRecord, HistoryEntry, Kind, Status, Usage
from swarm.summary import metric_value, parse_summary
from swarm.task import TaskSpec, gpt_task, load_task

SUMMARY = """step 00010 | loss 3.2
---
val_bpb:          0.997900
training_seconds: 300.1
peak_vram_mb:     45060.2
num_steps:        953
device:           cuda
"""


def test_parse_summary_reads_the_block_after_the_last_separator():
    out = "---\nval_bpb: 9.0\n" + SUMMARY
    s = parse_summary(out)
    assert s["val_bpb"] == pytest.approx(0.9979)
    assert s["num_steps"] == 953.0
    assert s["device"] == "cuda"
    assert metric_value(s, "val_bpb") == pytest.approx(0.9979)


def test_parse_summary_without_block_or_with_bad_metric():
    assert parse_summary("Traceback (most recent call last):\nValueError: x\n") == {}
    s = parse_summary("---\nval_bpb: nan\n")
    assert metric_value(s, "val_bpb") is None
    assert metric_value(s, "missing") is None
    # parsing stops at the first line that is not key: value
    s = parse_summary("---\nval_bpb: 1.5\nTraceback here\nnum_steps: 3\n")
    assert s == {"val_bpb": 1.5}


def test_run_process_captures_output_and_exit_code(tmp_path):
    r = run_process([sys.executable, "-c", "print('hi'); raise SystemExit(3)"], cwd=tmp_path, env={}, timeout=30)
    assert r.returncode == 3 and not r.timed_out and not r.ok
    assert "hi" in r.output_tail


def test_run_process_kills_the_whole_group_on_timeout(tmp_path):
    marker = tmp_path / "child_alive"
    grandchild = tmp_path / "grandchild.py"
    grandchild.write_text(f"import time\ntime.sleep(3)\nopen({str(marker)!r}, 'w').write('x')\n")
    parent = tmp_path / "parent.py"
    parent.write_text(
        f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, {str(grandchild)!r}])\ntime.sleep(60)\n"
    )
    log = tmp_path / "logs" / "run.log"
    start = time.monotonic()
    r = run_process([sys.executable, parent], cwd=tmp_path, env={}, timeout=1, log_path=log)
    assert r.timed_out and r.returncode is None
    assert time.monotonic() - start < 10
    assert log.exists()
    time.sleep(3.5)
    assert not marker.exists(), "grandchild survived the timeout"


def test_run_process_reports_a_missing_program(tmp_path):
    r = run_process(["/nonexistent/program"], cwd=tmp_path, env={}, timeout=5)
    assert r.returncode == 127 and "failed to start" in r.output_tail


def test_scrub_env_removes_credentials_and_keeps_the_rest():
    env = {
        "PATH": "/bin",
        "HOME": "/root",
        "OPENAI_API_KEY": "sk-1",
        "ANTHROPIC_API_KEY": "sk-2",
        "GITHUB_TOKEN": "t",
        "AWS_ACCESS_KEY_ID": "a",
        "HF_TOKEN": "h",
        "MY_SECRET": "s",
        "CUDA_VISIBLE_DEVICES": "0",
        "OMP_NUM_THREADS": "1",
    }
    out = scrub_env(env)
    assert set(out) == {"PATH", "HOME", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"}
    assert "MY_SECRET" in scrub_env(env, keep=["MY_SECRET"])


def test_task_spec_defaults_and_validation(tmp_path):
    t = gpt_task("cpu")
    assert t.mutable_files == ("trainer/train.py",)
    assert t.hard_timeout == 2 * t.time_budget + t.startup_allowance
    assert t.argv()[0] == sys.executable
    assert t.better(0.9, 1.0) and not t.better(1.0, 1.0)
    assert TaskSpec("m", ("a.py",), ("x",), direction="max").better(2.0, 1.0)
    with pytest.raises(ConfigError):
        TaskSpec("bad", ("a.py",), ("x",), direction="down")

    f = tmp_path / "task.toml"
    f.write_text('[task]\nmutable_files = ["train.py"]\ncommand = ["{python}", "train.py"]\ntime_budget = 2\n')
    spec = load_task(f)
    assert spec.name == "task" and spec.time_budget == 2 and spec.hard_timeout == 2 * 2 + 120
    f.write_text('[task]\nmutable_files = ["train.py"]\ncommand = ["x"]\nbudget = 2\n')
    with pytest.raises(ConfigError, match="unknown keys"):
        load_task(f)
    f.write_text("[task\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_task(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_task(tmp_path / "nope.toml")


def test_agent_spec_strings():
    assert parse_agent_spec("builtin").kind == "builtin"
    llm = parse_agent_spec("openai/gpt-5", {"temperature": 0.2})
    assert (llm.kind, llm.name, llm.options["temperature"]) == ("llm", "openai/gpt-5", 0.2)
    cmd = parse_agent_spec("cmd:claude -p --permission-mode acceptEdits")
    assert cmd.kind == "command" and cmd.options["argv"][0] == "claude" and cmd.name == "cmd:claude"
    py = parse_agent_spec("py:collections:OrderedDict")
    assert py.kind == "python"
    assert [s.kind for s in parse_agent_list("builtin, openai/x ,")] == ["builtin", "llm"]
    for bad in ("", "gpt5", "cmd:", "py:nocolon"):
        with pytest.raises(ConfigError):
            parse_agent_spec(bad)
    with pytest.raises(ConfigError, match="cannot be imported"):
        make_agent(parse_agent_spec("py:no_such_module_xyz:Agent"))


def test_experiment_record_round_trips_through_a_dict():
    rec = ExperimentRecord(
        exp_id=3, worker="w1", agent="builtin", kind=Kind.PROPOSAL, parent="a" * 40, commit="b" * 40,
        description="LR 0.1 -> 0.2", status=Status.DISCARD, metric=1.2, parent_metric=1.1,
        summary={"val_bpb": 1.2}, usage=Usage(1, 10, 5, 0.01),
    )
    back = ExperimentRecord.from_dict(rec.to_dict())
    assert back == rec
    assert HistoryEntry(3, "w1", "builtin", "d", Status.DISCARD, 1.2, "p", 1.1).delta == pytest.approx(0.1)
    assert Usage(1, 2, 3, 0.5) + Usage(1, 1, 1, 0.25) == Usage(2, 3, 4, 0.75)


def test_run_process_returns_at_the_timeout_when_a_daemon_holds_the_pipe(tmp_path):
    # a grandchild that leaves the process group (setsid) and keeps stdout open must not make the
    # helper wait for it
    script = tmp_path / "daemonise.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'], start_new_session=True)\n"
        "time.sleep(60)\n"
    )
    start = time.monotonic()
    r = run_process([sys.executable, script], cwd=tmp_path, env={}, timeout=1)
    assert r.timed_out
    assert time.monotonic() - start < 15


def test_run_process_kills_group_members_that_ignore_sigterm(tmp_path):
    marker = tmp_path / "survivor"
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text(
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"time.sleep(8)\nopen({str(marker)!r}, 'w').write('x')\n"
    )
    parent = tmp_path / "parent.py"
    parent.write_text(
        f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, {str(stubborn)!r}])\ntime.sleep(60)\n"
    )
    r = run_process([sys.executable, parent], cwd=tmp_path, env={}, timeout=1, log_path=tmp_path / "log")
    assert r.timed_out
    time.sleep(8)
    assert not marker.exists(), "a group member that ignored SIGTERM survived the timeout"


def test_a_bad_profile_is_a_one_line_error(monkeypatch, capsys):
    from swarm.cli import main

    monkeypatch.setenv("AUTORESEARCH_PROFILE", "tpu")
    assert main(["prepare", "--source", "stdlib", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "AUTORESEARCH_PROFILE='tpu'" in err


def test_run_summary_says_why_a_run_ended_early():
    from pathlib import Path
    from types import SimpleNamespace

    from swarm.commands.run import format_summary

    s = SimpleNamespace(
        tag="t", reason="no_workers", experiments=2, seconds=75, best=None, baseline=None, noise=None,
        counts={"keep": 2}, overhead_s=(), run_dir=Path("/r"), lane_bests={},
        message="every worker is retired (last: w1 agent openai/x failed permanently)",
    )
    text = format_summary(s)
    assert text.splitlines()[0] == "run t stopped (no_workers) after 2 experiments in 1m15s"
    assert text.splitlines()[1].startswith("every worker is retired")
    assert "best branch: swarm/t/best" in text
