"""Ctrl-C twice on `autoresearch run` (its own local Ray cluster): a quiet stop with exit status
130, no traceback, and a journal that records the stop. A real subprocess; no module cluster
here, so the CLI starts and shuts down its own Ray as a user's run does."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from swarm.journal import read_events  # noqa: E402
from swarm.state import replay  # noqa: E402
from tests.standin import make_standin_repo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HILL = "py:tests.standin_agents:HillClimber"


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def test_second_ctrl_c_ends_the_run_quietly(tmp_path):
    """The second Ctrl-C lands while the first one's stop is under way (it used to raise inside
    Ray's shutdown at exit, which printed a traceback)."""
    repo = make_standin_repo(tmp_path / "task", sleep=1.0)
    task_file = tmp_path / "standin.toml"
    task_file.write_text('[task]\nname = "standin"\nmutable_files = ["train.py"]\ncommand = ["{python}", "train.py"]\n'
                         'time_budget = 1.0\ntimeout = 30.0\n')
    argv = [sys.executable, "-m", "swarm.cli", "run", "--repo", str(repo), "--tag", "twice", "--task", str(task_file),
            "--agents", HILL, "--workers", "2"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    errors: queue.Queue = queue.Queue()
    readers = [threading.Thread(target=_lines, args=(stream, q), daemon=True)
               for stream, q in ((proc.stdout, lines), (proc.stderr, errors))]
    for reader in readers:
        reader.start()
    out: list[str] = []
    try:
        deadline = time.time() + 120
        while not any(line.startswith("#") for line in out):  # the first finished experiment
            line = lines.get(timeout=max(0.1, deadline - time.time()))
            assert line is not None, "".join(out)
            out.append(line)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    for reader in readers:
        reader.join(10)
    out.extend(iter(lines.get_nowait, None))
    err = "".join(iter(errors.get_nowait, None))
    assert proc.returncode == 130, "".join(out) + err
    assert any("stopped (interrupted)" in line for line in out), "".join(out)
    assert "Traceback" not in err and "Exception ignored" not in err and "KeyboardInterrupt" not in err, err
    ours = [line for line in err.splitlines() if not re.match(r"\d{4}-\d\d-\d\d ", line)]  # not Ray's log lines
    assert ours == ["autoresearch: stopping; running experiments are recorded as interrupted"], err
    s = replay(read_events(repo / ".swarm" / "twice" / "journal.jsonl"))
    assert s.stopped and s.stop_reason == "interrupted" and not s.running()
