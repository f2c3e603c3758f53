"""The simulated landscape of the noise benchmark (benchmarks/landscape.py): its truth, and its task.

Pure and fast: no Ray; one subprocess run of the task script.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks import landscape as L
from swarm.agents.hyperparams import all_edits, apply_edits, effective_constants
from swarm.summary import metric_value, parse_summary

UNIT = L.UNIT


def edit_to(text: str, name: str, value) -> str:
    """`text` with `name` moved to `value` by one of the built-in agent's candidate edits."""
    for e in all_edits(text):
        if e.name == name and effective_constants(apply_edits(text, [e]))[name].value == value:
            return apply_edits(text, [e])
    raise AssertionError(f"no agent step moves {name} to {value!r}")


def test_baseline_is_optimum_plus_the_real_gains():
    text = L.train_py()
    gains = sum(g for _d, _b, g, _s in L.REAL.values())
    assert L.true_metric(text) == pytest.approx(L.optimum() + gains * UNIT)
    assert L.baseline() == pytest.approx(L.true_metric(text))
    assert L.optimum() < L.baseline()


def test_every_knob_is_an_agent_knob():
    consts = effective_constants(L.train_py())
    knobs = {e.name for e in all_edits(L.train_py())}
    assert set(L.REAL) | set(L.COSTLY) == set(consts) == knobs


def test_a_real_gain_lowers_the_metric_and_overshooting_costs():
    text = L.train_py()
    one_step = edit_to(text, "MATRIX_LR", 0.056)
    best = edit_to(text, "MATRIX_LR", 0.08)
    over = edit_to(text, "MATRIX_LR", 0.12)
    assert L.true_metric(best) == pytest.approx(L.baseline() - L.REAL["MATRIX_LR"][2] * UNIT)
    assert L.true_metric(best) < L.true_metric(one_step) < L.baseline()
    assert L.true_metric(best) < L.true_metric(over)
    assert L.true_metric(edit_to(text, "MATRIX_LR", 0.0286)) > L.baseline()  # the wrong way


@pytest.mark.parametrize("name", sorted(L.COSTLY))
def test_any_change_of_a_costly_knob_costs(name):
    text = L.train_py()
    cost = L.COSTLY[name][1] * UNIT
    edits = [e for e in all_edits(text) if e.name == name]
    assert edits
    for e in edits:
        assert L.true_metric(apply_edits(text, [e])) == pytest.approx(L.baseline() + cost)


def test_the_optimum_is_reachable_by_the_agents_steps():
    text = L.train_py()
    for name, best in L.best_values().items():
        text = edit_to(text, name, best)  # each a single step (x2, /2, +2, one logit step)
    assert L.true_metric(text) == pytest.approx(L.optimum(), abs=1e-12)
    # and one costly change on top of it costs again
    assert L.true_metric(edit_to(text, "USE_QK_NORM", False)) > L.optimum()


def test_the_noise_is_per_run_and_reproducible():
    a = L.noise(0.001, {"AUTORESEARCH_EXP_ID": "5"})
    assert a == L.noise(0.001, {"AUTORESEARCH_EXP_ID": "5"})
    assert a != L.noise(0.001, {"AUTORESEARCH_EXP_ID": "6"})
    assert a != L.noise(0.001, {"AUTORESEARCH_EXP_ID": "5", "LANDSCAPE_SALT": "x"})
    assert L.noise(0.001, {"AUTORESEARCH_EXP_ID": "5", "AUTORESEARCH_SEED": "9"}) == L.noise(
        0.001, {"AUTORESEARCH_EXP_ID": "7", "AUTORESEARCH_SEED": "9"})  # the seed wins when set
    draws = [L.noise(1.0, {"AUTORESEARCH_EXP_ID": str(i)}) for i in range(2000)]
    assert abs(sum(draws) / len(draws)) < 0.1 and 0.9 < (sum(d * d for d in draws) / len(draws)) ** 0.5 < 1.1


def test_the_task_prints_a_parseable_summary(tmp_path):
    repo = L.make_landscape_repo(tmp_path / "task")
    task = L.landscape_task(sigma=0.001, sleep=0.01)
    env = {**os.environ, **task.env, "AUTORESEARCH_EXP_ID": "3"}
    env.pop("AUTORESEARCH_SEED", None)
    out = subprocess.run(task.argv(), cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    summary = parse_summary(out.stdout)
    value = metric_value(summary, "val_bpb")
    assert value == pytest.approx(L.baseline() + L.noise(0.001, env), abs=2e-7)
    assert summary["training_seconds"] == pytest.approx(0.01)
    assert task.argv()[0] == sys.executable and task.mutable_files == ("train.py",)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert status == ""  # running it leaves the repository clean (no bytecode files)
