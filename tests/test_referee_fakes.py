"""The referee end to end on a fake trainer (a seeded bigram table, no training): fast cheats.

Every way of gaming the measurement that does not need real training runs here once, in
parallel, each in its own checkout with a private data home: the honest fake's val_bpb must equal
`evaluate_bpb` of the same model computed in this process; each cheat is refused (exit 3, a last
line `rejected: ...`) or changes nothing; a broken trainer is a crash (exit 1), never a result.
"""

from __future__ import annotations

import pytest

from tests.referee_helpers import (CONTRACT_KEYS, FAKE_COMMAND, REFEREE_KEYS, fake_bigram_bpb, fake_checkout,
                                   prepared_home, referee_env, run_referees)

pytestmark = pytest.mark.slow

SHORT = dict(AUTORESEARCH_TIME_BUDGET="1", AUTORESEARCH_STARTUP_ALLOWANCE="3")  # hand over within 4 s
CASES = {  # name -> extra env (CHEAT defaults to the name)
    "honest": {"CHEAT": ""},
    "fake_print": {},
    "late_print": {},
    "patch": {},
    "peek": {},
    "peek_small": {},
    "stateful": {},
    "read_val": {},
    "read_val_caught": {},
    "read_val_in_forward": {},
    "write_prepare": {},
    "remove_tokenizer": {},
    "subprocess_write": {},
    "late": {**SHORT, "LATE_SECONDS": "6"},
    "never": SHORT,
    "slow_eval": {"AUTORESEARCH_EVAL_ALLOWANCE": "3"},
    "crash": {},
    "no_handover": {},
    "nan": {},
    "bad_shape": {},
    "crash_in_forward": {},
}
GENEROUS = dict(AUTORESEARCH_STARTUP_ALLOWANCE="120", AUTORESEARCH_EVAL_ALLOWANCE="120")  # a loaded machine


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("fakes")
    home = prepared_home(base / "home")
    jobs = {}
    for name, extra in CASES.items():
        env = referee_env(home, FAKE_COMMAND, **{**GENEROUS, "CHEAT": name, **extra})
        jobs[name] = (fake_checkout(base / name), env)
    results = run_referees(jobs, parallel=3, timeout=240)
    return results, fake_bigram_bpb(home), base


def _rejected(run, *needles):
    assert run.returncode == 3, run.tail()
    assert run.last_line.startswith("rejected: "), run.tail()
    assert all(n in run.last_line for n in needles), run.tail()
    assert "val_bpb" not in run.summary, run.tail()  # the last block is the refusal, never a metric


def _crashed(run, needle):
    assert run.returncode == 1, run.tail()
    assert run.last_line.startswith("referee: ") and needle in run.last_line, run.tail()


def test_honest_fake_scores_exactly_what_evaluate_bpb_says(runs):
    results, want, _ = runs
    run = results["honest"]
    assert run.returncode == 0, run.tail()
    s = run.summary
    assert all(k in s for k in CONTRACT_KEYS + REFEREE_KEYS), s
    assert s["val_bpb"] == pytest.approx(want, abs=2e-6)  # printed with 6 decimals
    assert s["num_steps"] == 1 and s["depth"] == 1 and s["attention"] == "bigram" and s["training_seconds"] == 0.5
    assert "after hand_over" not in run.output  # nothing of the trainer runs after its hand-over
    assert "causality probes: 48 rows compared" in run.output


@pytest.mark.parametrize("name", ["fake_print", "patch"])
def test_printing_or_patching_changes_nothing(runs, name):
    results, want, _ = runs
    run = results[name]
    assert run.returncode == 0, run.tail()
    assert run.summary["val_bpb"] == pytest.approx(want, abs=2e-6), run.tail()
    assert run.output.splitlines()[-1].startswith("eval_seconds:")  # the referee's block is last
    if name == "fake_print":
        assert run.output.count("val_bpb:          0.100000") >= 2  # it did print, before the referee's block


def test_a_process_left_behind_cannot_print_a_result_after_the_referee(runs):
    """Its output went through the referee's relay, which stopped when the trainer was killed."""
    import time

    results, want, base = runs
    run = results["late_print"]
    assert run.returncode == 0, run.tail()
    time.sleep(2)  # the left-behind process prints half a second after the trainer died
    output = (base / "late_print" / "referee-late_print.log").read_text()
    assert output.splitlines()[-1].startswith("eval_seconds:") and "0.100000" not in output, output[-2000:]


@pytest.mark.parametrize("name", ["peek", "peek_small", "stateful"])
def test_predictions_that_use_later_tokens_are_refused(runs, name):
    _rejected(runs[0][name], "predictions depend on future tokens")


@pytest.mark.parametrize("name", ["read_val", "read_val_caught", "read_val_in_forward"])
def test_reading_the_validation_split_is_refused(runs, name):
    _rejected(runs[0][name], "the trainer read the validation data")


def test_writing_into_the_harness_or_the_data_is_refused(runs):
    results, _, base = runs
    _rejected(results["write_prepare"], "for writing", "prepare")
    assert "# changed" not in (base / "write_prepare" / "prepare" / "evaluate.py").read_text()
    _rejected(results["remove_tokenizer"], "removed", "token_bytes.npy")
    assert any((base / "home" / "tokenizer").rglob("token_bytes.npy"))
    _rejected(results["subprocess_write"], "changed files it must not change", "evaluate.py")


def test_time_limits(runs):
    results = runs[0]
    _rejected(results["late"], "handed over after", "over the budget (1 s) plus the start-up allowance (3 s)")
    _rejected(results["never"], "no model handed over within")
    _rejected(results["slow_eval"], "evaluation took longer than the allowance (3 s)")


@pytest.mark.parametrize("name,needle", [
    ("crash", "exit status 1) without handing its model over"),
    ("no_handover", "exit status 0) without handing its model over"),
    ("nan", "non-finite logits"),
    ("bad_shape", "expected [16, 256, 2048]"),
    ("crash_in_forward", "RuntimeError: boom in forward"),
])
def test_a_broken_trainer_is_a_crash_not_a_result(runs, name, needle):
    _crashed(runs[0][name], needle)


def test_autoresearch_train_runs_the_referee_and_passes_its_status_on(runs):
    """The classic loop's command: `autoresearch train` exits 3 with the reason last on a refusal."""
    import subprocess
    import sys

    from tests.referee_helpers import FAKE_TRAINER, REPO

    _, _, base = runs
    root = base / "cli"
    root.mkdir()
    for package in ("prepare", "swarm"):
        (root / package).symlink_to(base / "honest" / package)
    (root / "trainer").mkdir()
    (root / "trainer" / "train.py").write_text(FAKE_TRAINER)
    env = referee_env(base / "home", None, CHEAT="peek", **GENEROUS)
    proc = subprocess.run([sys.executable, "-m", "swarm.cli", "train", "--repo", str(root), "--profile", "cpu"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("rejected: predictions depend on future tokens")
