"""A fast stand-in task for swarm tests and benchmarks: a tmp git repo whose `train.py` computes a
known metric from its UPPER_CASE constants (plus small noise), sleeps, and prints the summary block.

metric = 1 + 0.1 (X - 3)^2 + 0.1 (Y + 1)^2 + noise (|noise| <= NOISE); baseline (X=0, Y=0): ~2.0.
The task also enforces the secret test: if the variable named by STANDIN_FORBIDDEN is visible it
exits 3, and with STANDIN_ENV_DUMP it writes its environment to <dir>/<exp_id>.json.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from swarm.journal import read_events
from swarm.state import replay
from swarm.task import PYTHON, TaskSpec

TRAIN_PY = '''"""Stand-in training script: the metric is a known function of the constants."""
import json
import os
import random
import sys
import time

X = 0.0  # optimum at 3

Y = 0.0  # optimum at -1

SLEEP = {sleep}  # seconds the "training" takes

CRASH = 0  # 1: fail with a traceback

NAN = 0  # 1: report a non-finite metric

NOISE = 0.0005  # amplitude of the measurement noise


def main():
    exp = os.environ.get("AUTORESEARCH_EXP_ID", "0")
    dump = os.environ.get("STANDIN_ENV_DUMP")
    if dump:
        os.makedirs(dump, exist_ok=True)
        with open(os.path.join(dump, exp + ".json"), "w") as f:
            json.dump(dict(os.environ), f)
    forbidden = os.environ.get("STANDIN_FORBIDDEN")
    if forbidden and forbidden in os.environ:
        print("secret visible to the task!", file=sys.stderr)
        sys.exit(3)
    time.sleep(SLEEP)
    if CRASH:
        raise RuntimeError("crash requested")
    rng = random.Random(exp)
    metric = 1.0 + 0.1 * (X - 3) ** 2 + 0.1 * (Y + 1) ** 2 + rng.uniform(-NOISE, NOISE)
    if NAN:
        metric = float("nan")
    print("step 1/1 done")
    print("---")
    print(f"val_bpb: {{metric:.6f}}")
    print(f"training_seconds: {{SLEEP:.1f}}")
    print("peak_vram_mb: 512.0")


if __name__ == "__main__":
    main()
'''


def git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
        "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(repo),
    }
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()


def make_standin_repo(path: Path, sleep: float = 0.2) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    (path / "train.py").write_text(TRAIN_PY.format(sleep=sleep))
    (path / "program.md").write_text("Edit train.py constants to minimise val_bpb.\n")
    (path / "README.md").write_text("stand-in task\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "stand-in task")
    return path


def standin_task(timeout: float = 30.0, env: dict | None = None) -> TaskSpec:
    return TaskSpec(
        name="standin",
        mutable_files=("train.py",),
        command=(PYTHON, "train.py"),
        metric="val_bpb",
        direction="min",
        time_budget=1.0,
        timeout=timeout,
        env=dict(env or {}),
    )


def expected_metric(x: float, y: float) -> float:
    return 1.0 + 0.1 * (x - 3) ** 2 + 0.1 * (y + 1) ** 2


def constants(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^([A-Z_]+) = ([-0-9.e]+)", text, re.M)}


def check_invariants(repo: Path, tag: str) -> None:
    """Assert the run's invariants from its journal, exports and git refs."""
    run = Path(repo) / ".swarm" / tag
    events = read_events(run / "journal.jsonl")
    state = replay(events)  # raises on anything started/finished/decided twice
    # every experiment exactly once: started once, decided once (unless still running)
    assert sorted(state.records) == sorted(state.assignments), "an experiment was never decided"
    # results.tsv has each experiment exactly once
    rows = (run / "results.tsv").read_text().splitlines()[1:]
    ids = [int(r.split("\t")[12]) for r in rows]
    assert sorted(ids) == sorted(state.records), (ids, sorted(state.records))
    # the first wave is exactly one baseline per worker (interrupted ones are re-run)
    if state.best is not None:
        wave = [r for r in state.records.values() if r.kind.value == "baseline" and r.status.value != "interrupted"]
        assert len(wave) == state.wave_size, (len(wave), state.wave_size)
    # every promotion improves on the best's recorded metric (the mean of its runs) at that moment,
    # and each best is a measured commit
    bests = [e for e in events if e["event"] == "best_advanced"]
    for e in bests:
        if e["previous_metric"] is not None:
            assert e["metric"] < e["previous_metric"], e
    for e in bests:
        if e["exp_id"] is None:
            assert e["commit"] == state.base_commit
        else:
            r = state.records[e["exp_id"]]
            runs = state.measurements[r.commit]  # the recorded metric is the mean of its measurements then
            assert r.commit == e["commit"] and r.status.value == "keep"
            assert min(runs) - 1e-12 <= e["metric"] <= max(runs) + 1e-12, (e, runs)
    if state.best is not None:
        tip = git(repo, "rev-parse", f"refs/heads/swarm/{tag}/best")
        assert tip == state.best.commit
    # every experiment commit stays reachable
    for r in state.records.values():
        if r.commit:
            assert git(repo, "rev-parse", f"refs/swarm/{tag}/exp/{r.exp_id}") == r.commit
