"""`ray up` end to end on this machine: scripts/ray_up_local.py, run as a user runs it.

An SSH server on 127.0.0.1 stands in for the cluster's head; the script runs `ray up -y` on the
on-prem cluster file filled in for it, the swarm on the head with `ray exec`, `status`, fetches the
results and the best branch back, and `ray down`. Skipped where the SSH server cannot be started
(not root, or sshd / rsync / nc missing: `.ci/run` installs them).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ray_up_local.py"

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def load_script():
    spec = importlib.util.spec_from_file_location("ray_up_local", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ray_up_runs_a_swarm_on_the_head_and_ray_down_ends_it(tmp_path):
    missing = load_script().what_is_missing()
    if missing:
        pytest.skip(f"no SSH server here: {missing}")
    done = subprocess.run([sys.executable, str(SCRIPT), "--workdir", str(tmp_path / "e2e"), "--experiments", "4"],
                          capture_output=True, text=True, timeout=1800, cwd=ROOT)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    for step in ("ray up", "swarm on the head (ray exec)", "status (ray exec)", "results back (ray rsync-down)",
                 "best branch back (git fetch)", "ray down"):
        assert f"--- {step}:" in out, f"step {step!r} did not run:\n{out[-3000:]}"
    assert "ray_up_local: OK" in out
    # what came back to the "laptop": the run's results and logs (checked by the script) ...
    run_dir = tmp_path / "e2e" / "laptop" / "e2e"
    assert (run_dir / "journal.jsonl").exists() and (run_dir / "results.tsv").exists()
    # ... and the head's status told the truth about it
    assert "e2e" in out and "experiments" in out
