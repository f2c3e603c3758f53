"""Constant discovery and ast-based editing of a training script (swarm.agents.hyperparams)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from swarm.agents.hyperparams import (
    all_edits,
    apply_edits,
    candidate_edits,
    describe,
    edit_key,
    effective_constants,
    is_confirmation,
    literal_value,
    parse_description,
)
from swarm.agents.reapply import diff_assignments, setting_edits

SAMPLE = '''"""A miniature trainer in the train.py convention."""
import math

from prepare import PROFILE

# model
DEPTH = 8  # number of blocks
HEAD_DIM = 128  # channels per head
WINDOW_PATTERN = "SSSL"  # S = short, L = long (a comment with "quotes" and ünïcode)
OPTIMIZER = "adamw"  # not a pattern
LOGIT_SOFTCAP = 15.0  # tanh cap
TOTAL_BATCH_SIZE = 2**19  # tokens per step
MATRIX_LR = 0.04  # Muon lr
WEIGHT_DECAY = 3e-4  # scientific notation stays scientific
ADAM_BETAS = (0.8, 0.95)  # beta1, beta2
WARMDOWN_RATIO = 0.5  # fraction of the budget
FINAL_LR_FRAC = 0.0  # of the peak
USE_BIAS = False  # linear biases
SEED = 42  # not a research knob
MODEL_DIM = DEPTH * 64  # derived: not editable
N_STEPS: int = 300  # annotated

if PROFILE == "cpu":
    DEPTH = 4  # smaller
    TOTAL_BATCH_SIZE = 2**13
    HEAD_DIM = 32


def helper():
    LOCAL = 1  # inside a function: not a module constant
    return LOCAL


for _ in range(1):
    MATRIX_LR_SCALE = 1.0  # bound inside a loop: not editable
'''


def changed_lines(a: str, b: str) -> list[tuple[str, str]]:
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    assert len(la) == len(lb)
    return [(x, y) for x, y in zip(la, lb) if x != y]


def test_discovery_effective_assignment_per_profile():
    gpu = effective_constants(SAMPLE, "gpu")
    cpu = effective_constants(SAMPLE, "cpu")
    none = effective_constants(SAMPLE, None)
    assert gpu["DEPTH"].value == 8 and cpu["DEPTH"].value == 4 and none["DEPTH"].value == 8
    assert gpu["TOTAL_BATCH_SIZE"].value == 2**19 and cpu["TOTAL_BATCH_SIZE"].text == "2**13"
    assert cpu["HEAD_DIM"].value == 32 and cpu["HEAD_DIM"].profiles == frozenset({"cpu"})
    assert cpu["MATRIX_LR"] == gpu["MATRIX_LR"]  # not overridden: the top-level assignment
    assert gpu["ADAM_BETAS"].value == (0.8, 0.95) and gpu["N_STEPS"].value == 300
    for hidden in ("MODEL_DIM", "PROFILE", "LOCAL", "MATRIX_LR_SCALE"):
        assert hidden not in gpu
    assert gpu["WINDOW_PATTERN"].value == "SSSL" and gpu["USE_BIAS"].value is False


def test_non_literal_override_hides_the_constant_for_that_profile_only():
    text = 'PROFILE = "gpu"\nA = 1.5\nB = 2\nif PROFILE == "cpu":\n    A = B * 0.5\nelif PROFILE == "tiny":\n    A = 0.1\nelse:\n    B = 4\n'
    assert "A" not in effective_constants(text, "cpu")
    assert effective_constants(text, "tiny")["A"].value == 0.1
    assert effective_constants(text, "gpu")["A"].value == 1.5
    assert effective_constants(text, "gpu")["B"].value == 4 and effective_constants(text, "cpu")["B"].value == 2
    assert "PROFILE" not in effective_constants(text, "gpu")  # the name the blocks test


@pytest.mark.parametrize("profile", ["gpu", "cpu", None])
def test_every_edit_changes_only_its_literal(profile):
    edits = all_edits(SAMPLE, profile)
    assert len({e.key for e in edits}) == len(edits) > 30
    for e in edits:
        new = apply_edits(SAMPLE, [e])
        ast.parse(new)
        (old_line, new_line), = changed_lines(SAMPLE, new)
        assert old_line.replace(e.old, e.new, 1) == new_line  # comment and layout survive
        assert effective_constants(new, profile)[e.name].value == literal_value(e.new)


def test_cpu_edit_lands_in_the_override_block():
    e = next(e for e in all_edits(SAMPLE, "cpu") if e.name == "DEPTH")
    new = apply_edits(SAMPLE, [e])
    assert "DEPTH = 8  # number of blocks" in new  # the gpu value is untouched
    assert effective_constants(new, "gpu")["DEPTH"].value == 8
    assert effective_constants(new, "cpu")["DEPTH"].value != 4


def edits_of(name, profile="gpu", text=SAMPLE, max_level=3):
    return {e.new: e for e in candidate_edits(effective_constants(text, profile)[name], max_level)}


def test_sizes_keep_powers_of_two_and_counts_step_by_one():
    head = edits_of("HEAD_DIM")
    assert set(head) == {"256", "64", "512", "32"}
    assert all((v := int(t)) & (v - 1) == 0 for t in head)
    depth = edits_of("DEPTH", "cpu")
    assert {"5", "3", "6", "2", "7", "1"} == set(depth)
    assert edits_of("DEPTH", "cpu")["5"].direction == "up" and depth["3"].direction == "down"
    assert "0" not in edits_of("DEPTH", "cpu") and min(int(t) for t in edits_of("N_STEPS")) >= 1
    assert {"375", "240"} <= set(edits_of("N_STEPS"))  # larger plain ints: multiplicative
    tiny = "N_HEAD = 1\nN_LAYER = 2\n"
    assert set(edits_of("N_HEAD", None, tiny)) == {"2", "4"}
    assert "0" not in edits_of("N_LAYER", None, tiny)


def test_power_form_is_kept():
    batch = edits_of("TOTAL_BATCH_SIZE")
    assert {"2**20", "2**18", "2**21", "2**17"} == set(batch)
    spaced = edits_of("B", None, "B = 2 ** 10  # spaced\n")
    assert "2 ** 11" in spaced and "2 ** 9" in spaced


def test_rates_multiply_and_keep_their_style():
    lr = edits_of("MATRIX_LR")
    assert {"0.056", "0.0286", "0.08", "0.02"} <= set(lr)
    assert lr["0.056"].level == 0 and lr["0.08"].level == 1
    assert all(isinstance(literal_value(t), float) for t in lr)
    assert set(edits_of("LOGIT_SOFTCAP")) >= {"21.0", "10.7"}
    wd = edits_of("WEIGHT_DECAY")
    assert "4.2e-4" in wd and "2.14e-4" in wd  # scientific stays scientific
    assert set(edits_of("FINAL_LR_FRAC")) == {"0.05", "0.1", "0.2"}  # up from zero only


def test_unit_interval_values_stay_inside():
    betas = edits_of("ADAM_BETAS")
    for text, e in betas.items():
        value = literal_value(text)
        assert all(0 < v < 1 for v in value) and sum(a != b for a, b in zip(value, (0.8, 0.95))) == 1
        assert e.direction in {"up[0]", "down[0]", "up[1]", "down[1]"}
    assert "(0.8, 0.974)" in betas and betas["(0.8, 0.974)"].direction == "up[1]"
    ratio = edits_of("WARMDOWN_RATIO")
    assert all(0 < literal_value(t) < 1 for t in ratio) and "0.67" in ratio and "0.333" in ratio
    near_one = edits_of("EMA_BETA", None, "EMA_BETA = 0.999\n")
    assert all(0.99 < literal_value(t) < 1 for t in near_one if edits_of("EMA_BETA", None, "EMA_BETA = 0.999\n")[t].level == 0)


def test_strings_and_booleans():
    assert {"SSSSL", "SSL", "SL", "L", "SSSSSL", "SSSSSSL"} == {literal_value(t) for t in edits_of("WINDOW_PATTERN")}
    assert '"SSSSL"' in edits_of("WINDOW_PATTERN")  # the quote style is kept
    assert set(edits_of("P", None, "P = 'L'\n")) == {"'SL'", "'SSL'", "'SSSL'"}
    assert {literal_value(t) for t in edits_of("PATTERN", None, 'PATTERN = "ab"\n')} >= {"aab", "b"}
    assert edits_of("OPTIMIZER") == {}
    flips = edits_of("USE_BIAS")
    assert set(flips) == {"True"} and flips["True"].direction == "flip"


def test_excluded_names_are_not_edited():
    names = {e.name for e in all_edits(SAMPLE, "gpu")}
    assert "SEED" not in names and {"MATRIX_LR", "LOGIT_SOFTCAP", "DEPTH"} <= names
    assert {e.name for e in all_edits(SAMPLE, "gpu", only=["DEPTH"])} == {"DEPTH"}


def test_non_ascii_before_the_literal():
    text = 'LABELS = ("é-ü", 0.5)  # ratio\nLR = 0.1\n'
    e = next(e for e in all_edits(text) if e.name == "LABELS")
    new = apply_edits(text, [e])
    assert new.startswith('LABELS = ("é-ü", ') and new.endswith("  # ratio\nLR = 0.1\n")


def test_description_round_trip():
    edits = [e for e in all_edits(SAMPLE, "gpu") if e.level == 0]
    for e in edits:
        (parsed,) = parse_description(e.describe())
        assert (parsed.name, parsed.key, parsed.direction) == (e.name, e.key, e.direction)
    lr = edits_of("MATRIX_LR")["0.056"]
    assert lr.describe() == "MATRIX_LR 0.04 -> 0.056"
    pair = [lr, edits_of("ADAM_BETAS")["(0.8, 0.974)"]]
    text = describe(pair)
    assert text == "MATRIX_LR 0.04 -> 0.056; ADAM_BETAS (0.8, 0.95) -> (0.8, 0.974)"
    assert [p.key for p in parse_description(text)] == [e.key for e in pair]
    assert [p.name for p in parse_description("combine #3 + #5: DEPTH 8 -> 9; prose here")] == ["DEPTH"]
    assert parse_description("Try a bigger model with rotary embeddings") == []
    assert edit_key("B", "2**20") == edit_key("B", "1048576")


def test_apply_rejects_stale_edits():
    e = edits_of("MATRIX_LR")["0.056"]
    with pytest.raises(ValueError):
        apply_edits(SAMPLE.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05"), [e])


REAL = Path(__file__).resolve().parents[1] / "trainer" / "train.py"


@pytest.mark.skipif(not REAL.exists(), reason="trainer/train.py not written yet")
def test_real_train_py():
    text = REAL.read_text()
    gpu, cpu = effective_constants(text, "gpu"), effective_constants(text, "cpu")
    assert len(gpu) >= 5 and set(gpu) == set(cpu)
    if 'if PROFILE == "cpu":' in text:
        assert any(c.profiles for c in cpu.values()) and not any(c.profiles for c in gpu.values())
    for profile in ("gpu", "cpu"):
        edits = all_edits(text, profile)
        assert len({e.name for e in edits}) >= 5
        for e in edits:
            assert parse_description(e.describe())[0].key == e.key
        for e in (e for e in edits if e.level == 0):  # applying all levels re-parses 200+ times
            new = apply_edits(text, [e])
            assert len(changed_lines(text, new)) == 1
            assert effective_constants(new, profile)[e.name].value == literal_value(e.new)


# ------------------------------------------------------------------ confirmations and re-applying


def test_confirmation_descriptions_are_not_edits():
    for d in ("confirm #12 (MATRIX_LR 0.04 -> 0.056)", "confirm #12: MATRIX_LR 0.04 -> 0.056", "Confirm #3"):
        assert is_confirmation(d) and parse_description(d) == []
    assert not is_confirmation("MATRIX_LR 0.04 -> 0.056") and not is_confirmation("confirmed batch size")
    assert [p.name for p in parse_description("re-apply #12: MATRIX_LR 0.04 -> 0.056; DEPTH 8 -> 9")] == [
        "MATRIX_LR", "DEPTH"]


def test_diff_assignments_reads_added_constant_lines():
    diff = (
        "diff --git a/trainer/train.py b/trainer/train.py\n--- a/trainer/train.py\n+++ b/trainer/train.py\n"
        "@@ -10,3 +10,3 @@\n-MATRIX_LR = 0.04  # Muon lr\n+MATRIX_LR = 0.05  # Muon lr\n"
        "+MODEL_DIM = DEPTH * 64\n@@ -30,2 +30,2 @@\n-    DEPTH = 4\n+    DEPTH = 5\n"
        "--- a/other.py\n+++ b/other.py\n+LR = 3\n"
    )
    assert diff_assignments(diff, "trainer/train.py") == [("MATRIX_LR", "0.05", False), ("DEPTH", "5", True)]
    assert ("LR", "3", False) in diff_assignments(diff)
    assert diff_assignments("+N_STEPS: int = 300  # annotated\n") == [("N_STEPS", "300", False)]


def test_setting_edits_targets_the_right_assignment_and_says_what_it_skipped():
    edits, skipped = setting_edits(SAMPLE, "cpu", [("MATRIX_LR", "0.05", None), ("DEPTH", "6", None),
                                                   ("NOPE", "1", None), ("HEAD_DIM", "32", None)])
    new = apply_edits(SAMPLE, edits)
    assert [e.describe() for e in edits] == ["MATRIX_LR 0.04 -> 0.05", "DEPTH 4 -> 6"]
    assert effective_constants(new, "cpu")["DEPTH"].value == 6 and effective_constants(new, "gpu")["DEPTH"].value == 8
    assert any("NOPE" in s for s in skipped) and any("HEAD_DIM is already 32" in s for s in skipped)
    top, _ = setting_edits(SAMPLE, "cpu", [("DEPTH", "9", False)])  # the top-level line, not the override
    assert effective_constants(apply_edits(SAMPLE, top), "gpu")["DEPTH"].value == 9
    block, _ = setting_edits(SAMPLE, "cpu", [("DEPTH", "5", True)])
    assert effective_constants(apply_edits(SAMPLE, block), "cpu")["DEPTH"].value == 5
    none, why = setting_edits(SAMPLE, "gpu", [("DEPTH", "5", True), ("MATRIX_LR", "x y", None)])
    assert none == [] and len(why) == 2
    assert setting_edits(SAMPLE, "gpu", [("TOTAL_BATCH_SIZE", "524288", None)])[0] == []  # == 2**19
