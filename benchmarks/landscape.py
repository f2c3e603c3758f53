"""A simulated research landscape with a known truth, for the noise benchmark (bench_noise.py).

The task repository (`make_landscape_repo`) holds `train.py`, the one mutable file, whose
UPPER_CASE constants are knobs in the style the built-in agent edits (swarm.agents.hyperparams),
and a copy of this module, which `train.py` calls to compute its metric. So the task and the
benchmark use the very same `true_metric`.

    val_bpb = true_metric(train.py) + Gaussian noise (sigma, default 0.001)
    true_metric = OPTIMUM + sum of per-knob effects (in UNIT = 0.001, i.e. in sigmas by default)

Real gains (a V on the knob's own step scale: zero at a value the agent's steps reach exactly,
the full gain at the default, linear in between, so each of the agent's steps towards the best
gains about 1-3 units, comparable to the noise; overshooting costs again):

    MATRIX_LR      0.04 -> 0.08    x2 (or 1.4 twice)        6.0 units (3 a step of x1.4)
    WEIGHT_DECAY   0.2  -> 0.1     /2                       4.0 units (2 a step of /1.4)
    DEPTH          4    -> 6       +2 (or +1 twice)         4.0 units (2 a step of +1)
    WARMUP_RATIO   0.1  -> 0.182   one logit step up        2.5 units

Costly knobs: any change from the default costs a fixed 0.2-0.5 units, whatever the value.
The noise of one run is drawn from AUTORESEARCH_SEED when the swarm sets it, else from
AUTORESEARCH_EXP_ID (mixed with LANDSCAPE_SALT, so that repeated benchmark runs differ);
LANDSCAPE_SIGMA and LANDSCAPE_SLEEP set the noise and the stand-in "training" time.
Standard library only: the task runs it as a plain script in the sandbox.
"""

from __future__ import annotations

import ast
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

UNIT = 0.001  # effects are given in these units (one default sigma)
OPTIMUM = 1.0  # the true metric with every real knob at its best and every costly knob untouched
DEFAULT_SIGMA = 0.001
DEFAULT_SLEEP = 0.1

# name: (default, best value, gain in units, scale) ; scale: "log" | "logit" | "linear"
REAL = {
    "MATRIX_LR": (0.04, 0.08, 6.0, "log"),
    "WEIGHT_DECAY": (0.2, 0.1, 4.0, "log"),
    "DEPTH": (4, 6, 4.0, "linear"),
    "WARMUP_RATIO": (0.1, 0.182, 2.5, "logit"),
}
# name: (default source text, cost in units of any change)
COSTLY = {
    "EMBED_LR": ("0.6", 0.4),
    "SCALAR_LR": ("0.5", 0.2),
    "ADAM_BETA1": ("0.8", 0.3),
    "WARMDOWN_RATIO": ("0.5", 0.3),
    "HEAD_DIM": ("128", 0.5),
    "TOTAL_BATCH_SIZE": ("2**19", 0.4),
    "WINDOW_PATTERN": ('"SSSL"', 0.3),
    "USE_QK_NORM": ("True", 0.2),
}

_COMMENTS = {
    "MATRIX_LR": "learning rate of the matrix parameters",
    "WEIGHT_DECAY": "decoupled weight decay",
    "DEPTH": "transformer layers",
    "WARMUP_RATIO": "share of the steps spent warming up",
    "EMBED_LR": "learning rate of the embeddings",
    "SCALAR_LR": "learning rate of the scalar parameters",
    "ADAM_BETA1": "Adam beta1",
    "WARMDOWN_RATIO": "share of the steps spent cooling down",
    "HEAD_DIM": "attention head dimension",
    "TOTAL_BATCH_SIZE": "tokens per optimizer step",
    "WINDOW_PATTERN": "sliding-window pattern of the layers (S short, L long)",
    "USE_QK_NORM": "normalise queries and keys",
}


def train_py() -> str:
    """The task's `train.py` at its defaults."""
    lines = ['"""Simulated training script: the metric is a known function of these constants',
             '(see landscape.py, which this repository does not let agents edit)."""', ""]
    for name, (default, _best, _gain, _scale) in REAL.items():
        lines.append(f"{name} = {default!r}  # {_COMMENTS[name]}")
    for name, (text, _cost) in COSTLY.items():
        lines.append(f"{name} = {text}  # {_COMMENTS[name]}")
    lines += ["", "", 'if __name__ == "__main__":', "    import landscape", "", "    landscape.main(__file__)", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ the truth


def _value(node: ast.AST):
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _value(node.left) ** _value(node.right)
    return ast.literal_eval(node)


def constants(text: str) -> dict:
    """Module-level `NAME = literal` assignments of `text` (the last one of a name wins)."""
    out = {}
    for stmt in ast.parse(text).body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                out[stmt.targets[0].id] = _value(stmt.value)
            except (ValueError, TypeError, SyntaxError):
                continue
    return out


def _coord(x, scale: str) -> float:
    x = float(x)
    if scale == "log":
        return math.log(x) if x > 0 else -50.0
    if scale == "logit":
        x = min(max(x, 1e-9), 1 - 1e-9)
        return math.log(x / (1 - x))
    return x


def knob_effects(values: dict) -> dict:
    """Each knob's contribution to the true metric (0: at its best / untouched); missing = default."""
    out = {}
    for name, (default, best, gain, scale) in REAL.items():
        x = values.get(name, default)
        try:
            u = (_coord(x, scale) - _coord(best, scale)) / (_coord(default, scale) - _coord(best, scale))
        except (TypeError, ValueError):
            u = 10.0
        out[name] = gain * UNIT * abs(u)  # a V: every step towards the best pays in proportion
    defaults = {name: _value(ast.parse(text, mode="eval").body) for name, (text, _c) in COSTLY.items()}
    for name, (_text, cost) in COSTLY.items():
        changed = name in values and repr(values[name]) != repr(defaults[name])
        out[name] = cost * UNIT if changed else 0.0
    return out


def true_metric(train_py_text: str) -> float:
    """The noise-free metric of a `train.py` text (lower is better)."""
    return OPTIMUM + sum(knob_effects(constants(train_py_text)).values())


def optimum() -> float:
    """The best achievable true metric (every real knob at its best, no costly knob moved)."""
    return OPTIMUM


def baseline() -> float:
    """The true metric of the defaults."""
    return true_metric(train_py())


def best_values() -> dict:
    """The real knobs' best values (reachable from the defaults by the built-in agent's steps)."""
    return {name: best for name, (_d, best, _g, _s) in REAL.items()}


# ------------------------------------------------------------------ the task


def noise(sigma: float, env=None) -> float:
    env = os.environ if env is None else env
    seed = env.get("AUTORESEARCH_SEED") or env.get("AUTORESEARCH_EXP_ID", "0")
    salt = env.get("LANDSCAPE_SALT", "")
    return random.Random(f"landscape:{salt}:{seed}").gauss(0.0, sigma)


def main(path: str) -> None:
    """Run one "experiment" of the `train.py` at `path`: sleep, print the summary block."""
    t0 = time.time()
    text = Path(path).read_text()
    sigma = float(os.environ.get("LANDSCAPE_SIGMA", DEFAULT_SIGMA))
    sleep = float(os.environ.get("LANDSCAPE_SLEEP", DEFAULT_SLEEP))
    time.sleep(sleep)
    metric = true_metric(text) + noise(sigma)
    print("step 1/1 done")
    print("---")
    print(f"val_bpb: {metric:.7f}")
    print(f"training_seconds: {sleep:.2f}")
    print(f"total_seconds: {time.time() - t0:.2f}")
    print("peak_vram_mb: 0.0")
    sys.stdout.flush()


def _git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin:/usr/local/bin"), "HOME": str(repo),
    }
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def make_landscape_repo(path: Path) -> Path:
    """A fresh git repository holding the landscape task (train.py + this module), committed."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "-q", "-b", "main")
    (path / "train.py").write_text(train_py())
    shutil.copyfile(Path(__file__), path / "landscape.py")
    (path / "program.md").write_text("Edit the constants of train.py to minimise val_bpb.\n")
    (path / ".gitignore").write_text("__pycache__/\n")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "landscape task")
    return path


def landscape_task(sigma: float = DEFAULT_SIGMA, sleep: float = DEFAULT_SLEEP, salt: str = "", timeout: float = 60.0):
    """The TaskSpec of a landscape repository."""
    from swarm.task import PYTHON, TaskSpec

    return TaskSpec(
        name="landscape",
        mutable_files=("train.py",),
        command=(PYTHON, "train.py"),
        metric="val_bpb",
        direction="min",
        time_budget=max(sleep, 0.1),
        timeout=timeout,
        env={"LANDSCAPE_SIGMA": repr(float(sigma)), "LANDSCAPE_SLEEP": repr(float(sleep)), "LANDSCAPE_SALT": salt,
             "PYTHONDONTWRITEBYTECODE": "1"},
    )
