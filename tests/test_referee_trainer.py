"""The referee on the real CPU trainer: an honest run, and the issue's cheats as edits of train.py.

One honest run of the cpu profile (20 s) must learn (beat a unigram model) and print the summary
block. The rest use a deterministic copy of train.py (3 steps at a constant learning rate, one
thread: the same model on every run) so that "no effect on the metric" is an exact comparison:
printing a fake val_bpb, patching prepare's evaluation, shrinking EVAL_TOKENS and reassigning
torch's loss functions leave val_bpb bit-for-bit the honest copy's. Training longer (a longer
loop, a slowed clock, warm-up steps off the clock) runs under a 2 s budget and is refused, as are
training on the val split, non-causal forwards and writes into prepare/ or the data. All runs go
in parallel, each in its own checkout with a private data home.
"""

from __future__ import annotations

import pytest

from tests.referee_helpers import (CHEAT_EDITS, CONTRACT_KEYS, REFEREE_KEYS, REPO, fixed_steps, make_checkout,
                                   prepared_home, referee_env, run_referees, unigram_bpb)

pytestmark = pytest.mark.slow

SOURCE = (REPO / "trainer" / "train.py").read_text()
EASY = dict(AUTORESEARCH_TIME_BUDGET="60", AUTORESEARCH_STARTUP_ALLOWANCE="120", AUTORESEARCH_EVAL_ALLOWANCE="120")
TIGHT = dict(AUTORESEARCH_TIME_BUDGET="2", AUTORESEARCH_STARTUP_ALLOWANCE="10", AUTORESEARCH_EVAL_ALLOWANCE="120")


def deterministic() -> str:
    return fixed_steps(SOURCE, steps=3)


CHEATS = {  # name -> (train.py text, extra env)
    "det_honest": (deterministic(), EASY),
    "det_no_effect": (CHEAT_EDITS["no_effect"](deterministic()), EASY),
    **{name: (CHEAT_EDITS[name](SOURCE), TIGHT) for name in ("longer_loop", "slow_clock", "warmup_off_clock")},
    **{name: (CHEAT_EDITS[name](deterministic()), EASY) for name in (
        "train_on_val", "bidirectional_attention", "next_token_embedding", "write_prepare", "write_data")},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("trainer")
    home = prepared_home(base / "home")
    # the honest run alone (it has to learn in 20 s on a shared machine), with the default threads
    honest = {"honest": (make_checkout(base / "honest"),
                         referee_env(home, AUTORESEARCH_STARTUP_ALLOWANCE="120", AUTORESEARCH_EVAL_ALLOWANCE="120",
                                     OMP_NUM_THREADS=None))}
    results = run_referees(honest, parallel=1, timeout=400)
    jobs = {name: (make_checkout(base / name, text), referee_env(home, **extra)) for name, (text, extra) in CHEATS.items()}
    results.update(run_referees(jobs, parallel=3, timeout=400))
    return results, home, base


def test_honest_cpu_run_learns_and_prints_the_summary(runs):
    results, home, _ = runs
    run = results["honest"]
    assert run.returncode == 0, run.tail()
    s = run.summary
    assert all(k in s for k in CONTRACT_KEYS + REFEREE_KEYS), s
    assert s["training_seconds"] >= 20.0 and s["num_steps"] > 0 and s["attention"] == "sdpa"
    assert s["handover_seconds"] >= s["training_seconds"] and s["total_seconds"] > s["handover_seconds"]
    assert "max |delta logit| 0," in run.output  # the same prefix gives the same logits on a CPU
    if s["num_steps"] < 8:  # ~80 on an idle 2-core machine, a handful when others hog the cores (9 steps: 2.9)
        pytest.skip(f"too busy a machine to learn in 20 s: {s['num_steps']:.0f} steps, val_bpb {s['val_bpb']}")
    baseline = unigram_bpb(home)
    assert 0 < s["val_bpb"] < baseline, f"val_bpb {s['val_bpb']} vs unigram {baseline:.4f}\n{run.tail()}"


def test_printing_patching_and_reassigning_change_nothing(runs):
    results = runs[0]
    honest, cheat = results["det_honest"], results["det_no_effect"]
    assert honest.returncode == 0, honest.tail()
    assert cheat.returncode == 0, cheat.tail()
    assert cheat.output.count("val_bpb:          0.100000") >= 1  # the fake block was printed ...
    assert cheat.summary["val_bpb"] == honest.summary["val_bpb"], (honest.tail(15), cheat.tail(15))  # ... in vain
    assert cheat.summary["num_steps"] == honest.summary["num_steps"] == 3


@pytest.mark.parametrize("name", ["longer_loop", "slow_clock", "warmup_off_clock"])
def test_training_longer_than_the_budget_is_refused(runs, name):
    run = runs[0][name]
    assert run.returncode == 3, run.tail()
    assert run.last_line.startswith("rejected: ") and ("no model handed over" in run.last_line
                                                       or "over the budget" in run.last_line), run.tail()


@pytest.mark.parametrize("name,needle", [
    ("train_on_val", "the trainer read the validation data"),
    ("bidirectional_attention", "predictions depend on future tokens"),
    ("next_token_embedding", "predictions depend on future tokens"),
    ("write_prepare", "for writing"),
    ("write_data", "for writing"),
])
def test_other_cheats_are_refused(runs, name, needle):
    results, _, base = runs
    run = results[name]
    assert run.returncode == 3 and run.last_line.startswith("rejected: ") and needle in run.last_line, run.tail()
    assert "val_bpb" not in run.summary
    if name == "write_prepare":
        assert "# better" not in (base / name / "prepare" / "evaluate.py").read_text()
