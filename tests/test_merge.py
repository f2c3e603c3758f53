"""swarm.merge: the hunk-based three-way merge, string in / string out, on the real trainer/train.py."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from swarm.agents.hyperparams import all_edits, apply_edits, effective_constants
from swarm.merge import Hunk, conflicts, hunks, merge3_lines, merge3_text, merge_versions, rebase_files

TRAIN = (Path(__file__).resolve().parents[1] / "trainer" / "train.py").read_text()
CPU_BLOCK = TRAIN[TRAIN.index('if PROFILE == "cpu":'):]


def set_top(text: str, name: str, value: str) -> str:
    """`text` with the top-level assignment of `name` set to `value` (comment kept)."""
    new, n = re.subn(rf"^{name} = [^#\n]+?(\s+#|\n)", rf"{name} = {value}\1", text, count=1, flags=re.M)
    assert n == 1, name
    return new


def set_cpu(text: str, name: str, value: str) -> str:
    """`text` with the cpu-profile override of `name` set to `value`."""
    head, block = text.split('if PROFILE == "cpu":', 1)
    block, n = re.subn(rf"^    {name} = .*$", f"    {name} = {value}", block, count=1, flags=re.M)
    assert n == 1, name
    return head + 'if PROFILE == "cpu":' + block


def value(text: str, name: str, profile: str = "gpu"):
    return effective_constants(text, profile)[name].value


# ---- adjacent lines of the real train.py merge ------------------------------------------------


def test_the_constants_really_are_on_adjacent_lines():
    lines = TRAIN.splitlines()
    at = {line.split(" = ")[0]: i for i, line in enumerate(lines) if re.match(r"^[A-Z_]+ = ", line)}
    assert at["UNEMBEDDING_LR"] == at["EMBEDDING_LR"] + 1
    assert at["MATRIX_LR"] == at["UNEMBEDDING_LR"] + 1 and at["SCALAR_LR"] == at["MATRIX_LR"] + 1


@pytest.mark.parametrize("a, va, b, vb", [
    ("MATRIX_LR", "0.05", "SCALAR_LR", "0.7"),
    ("UNEMBEDDING_LR", "0.006", "MATRIX_LR", "0.03"),
    ("EMBEDDING_LR", "0.9", "UNEMBEDDING_LR", "0.002"),
    ("WARMUP_RATIO", "0.05", "WARMDOWN_RATIO", "0.6"),
])
def test_adjacent_constants_of_train_py_merge_with_both_changes(a, va, b, vb):
    ours, theirs = set_top(TRAIN, a, va), set_top(TRAIN, b, vb)
    merged = merge3_text(TRAIN, ours, theirs)
    assert merged is not None
    assert value(merged, a) == float(va) and value(merged, b) == float(vb)
    assert merged == set_top(set_top(TRAIN, a, va), b, vb)
    assert merge3_text(TRAIN, theirs, ours) == merged  # symmetric


def test_adjacent_lines_of_the_cpu_override_block_merge():
    ours = set_cpu(TRAIN, "MATRIX_LR", "0.1")
    theirs = set_cpu(TRAIN, "UNEMBEDDING_LR", "0.01")
    merged = merge3_text(TRAIN, ours, theirs)
    assert value(merged, "MATRIX_LR", "cpu") == 0.1 and value(merged, "UNEMBEDDING_LR", "cpu") == 0.01
    assert value(merged, "MATRIX_LR", "gpu") == value(TRAIN, "MATRIX_LR", "gpu")
    three = set_cpu(TRAIN, "DEVICE_BATCH_SIZE", "32")  # the line just above MATRIX_LR
    merged3 = merge3_text(TRAIN, merged, three)
    assert value(merged3, "DEVICE_BATCH_SIZE", "cpu") == 32 and value(merged3, "MATRIX_LR", "cpu") == 0.1
    # the same name at top level on one side and in the cpu block on the other: different lines
    both = merge3_text(TRAIN, set_top(TRAIN, "MATRIX_LR", "0.05"), ours)
    assert value(both, "MATRIX_LR", "gpu") == 0.05 and value(both, "MATRIX_LR", "cpu") == 0.1


def test_a_whole_run_of_neighbouring_wins_composes():
    names = {"EMBEDDING_LR": "0.5", "UNEMBEDDING_LR": "0.005", "MATRIX_LR": "0.045", "SCALAR_LR": "0.4"}
    merged = TRAIN
    for name, v in names.items():  # each win made on the original, merged into the moving best
        merged = merge3_text(TRAIN, merged, set_top(TRAIN, name, v))
        assert merged is not None
    assert all(value(merged, n) == float(v) for n, v in names.items())


# ---- what conflicts and what does not --------------------------------------------------------


def test_the_same_line_changed_differently_conflicts():
    assert merge3_text(TRAIN, set_top(TRAIN, "MATRIX_LR", "0.05"), set_top(TRAIN, "MATRIX_LR", "0.03")) is None
    assert merge3_text("A = 1\nB = 2\n", "A = 9\nB = 2\n", "A = 8\nB = 2\n") is None


def test_identical_changes_merge_once():
    ours = set_top(set_top(TRAIN, "MATRIX_LR", "0.05"), "DEPTH", "10")
    theirs = set_top(set_top(TRAIN, "MATRIX_LR", "0.05"), "SCALAR_LR", "0.7")
    merged = merge3_text(TRAIN, ours, theirs)
    assert merged.count("MATRIX_LR = 0.05") == 1
    assert value(merged, "DEPTH") == 10 and value(merged, "SCALAR_LR") == 0.7
    assert merge3_lines(["a\n"], ["a\n", "b\n"], ["a\n", "b\n"]) == ["a\n", "b\n"]  # the same insertion once


def test_insertions_at_the_same_point_conflict_unless_identical():
    base = "A = 1\nB = 2\n"
    assert merge3_text(base, "A = 1\nX = 0\nB = 2\n", "A = 1\nY = 0\nB = 2\n") is None
    assert merge3_text(base, "A = 1\nX = 0\nB = 2\n", "A = 1\nX = 0\nB = 2\nC = 3\n") == "A = 1\nX = 0\nB = 2\nC = 3\n"
    assert merge3_text("a\n", "a\nb\n", "a\nc\n") is None  # both append different lines
    assert merge3_text(base, "# top\n" + base, "# head\n" + base) is None


def test_insertion_next_to_an_edit_merges_and_inside_a_replaced_range_conflicts():
    base = "A = 1\nB = 2\nC = 3\nD = 4\n"
    # ours inserts between A and B, theirs edits B: touching, merges (insertion first)
    assert merge3_text(base, "A = 1\nX = 0\nB = 2\nC = 3\nD = 4\n", base.replace("B = 2", "B = 5")) == (
        "A = 1\nX = 0\nB = 5\nC = 3\nD = 4\n")
    # ours inserts after B, theirs edits B: merges (insertion after the replacement)
    assert merge3_text(base, "A = 1\nB = 2\nX = 0\nC = 3\nD = 4\n", base.replace("B = 2", "B = 5")) == (
        "A = 1\nB = 5\nX = 0\nC = 3\nD = 4\n")
    # theirs replaces B and C together; ours inserts between them: conflict
    assert merge3_text(base, "A = 1\nB = 2\nX = 0\nC = 3\nD = 4\n", "A = 1\nBC = 23\nD = 4\n") is None
    # also when theirs changed B and C line by line (two lines for two): one change, no insertion inside
    assert merge3_text(base, "A = 1\nB = 2\nX = 0\nC = 3\nD = 4\n", "A = 1\nB = 5\nC = 6\nD = 4\n") is None


def test_deletion_against_an_edit_inside_it_conflicts_but_next_to_it_merges():
    base = "A = 1\nB = 2\nC = 3\nD = 4\n"
    deleted = "A = 1\nD = 4\n"  # B and C gone
    assert merge3_text(base, deleted, base.replace("C = 3", "C = 30")) is None
    assert merge3_text(base, deleted, base.replace("B = 2", "B = 20")) is None
    assert merge3_text(base, deleted, base.replace("D = 4", "D = 40")) == "A = 1\nD = 40\n"
    assert merge3_text(base, deleted, base.replace("A = 1", "A = 10")) == "A = 10\nD = 4\n"
    assert merge3_text(base, deleted, "A = 1\nC = 3\nD = 4\n") is None  # overlapping deletions differ
    assert merge3_text(base, deleted, deleted) == deleted
    assert merge3_text(base, "A = 1\nC = 3\nD = 4\n", "A = 1\nB = 2\nD = 4\n") == deleted  # adjacent deletions


def test_line_endings_are_kept():
    base = "A = 1\r\nB = 2\r\nC = 3\r\n"
    merged = merge3_text(base, base.replace("A = 1", "A = 7"), base.replace("B = 2", "B = 8"))
    assert merged == "A = 7\r\nB = 8\r\nC = 3\r\n"
    no_final = "A = 1\nB = 2"
    assert merge3_text(no_final, "A = 5\nB = 2", "A = 1\nB = 6") == "A = 5\nB = 6"
    mixed = "A = 1\r\nB = 2\nC = 3\r\n"
    assert merge3_text(mixed, mixed.replace("A = 1", "A = 0"), mixed.replace("C = 3", "C = 9")) == (
        "A = 0\r\nB = 2\nC = 9\r\n")


def test_hunks_and_conflicts_directly():
    assert hunks(["a\n", "b\n", "c\n"], ["a\n", "B\n", "c\n", "d\n"]) == [Hunk(1, 2, ("B\n",)), Hunk(3, 3, ("d\n",))]
    r, ins = Hunk(2, 4, ("x\n",)), Hunk(3, 3, ("y\n",))
    assert conflicts(r, ins) and conflicts(ins, r)
    assert not conflicts(r, Hunk(2, 2, ("y\n",))) and not conflicts(r, Hunk(4, 4, ("y\n",)))
    assert not conflicts(r, Hunk(4, 5, ())) and conflicts(r, Hunk(3, 5, ()))
    assert not conflicts(r, r) and conflicts(Hunk(1, 1, ("p\n",)), Hunk(1, 1, ("q\n",)))


def test_empty_and_trivial_texts():
    assert merge3_text("", "x\n", "") == "x\n" and merge3_text("", "", "y\n") == "y\n"
    assert merge3_text("", "x\n", "y\n") is None
    assert merge3_text("a\n", "", "a\n") == ""
    assert merge3_lines([], [], []) == []


# ---- the file-level helpers ------------------------------------------------------------------


def test_rebase_and_merge_versions_take_adjacent_changes():
    ours, theirs = set_top(TRAIN, "MATRIX_LR", "0.05"), set_top(TRAIN, "SCALAR_LR", "0.7")
    p = "trainer/train.py"
    rebased = rebase_files({p: TRAIN}, {p: ours}, {p: theirs})
    assert value(rebased[p], "MATRIX_LR") == 0.05 and value(rebased[p], "SCALAR_LR") == 0.7
    merged = merge_versions({p: TRAIN}, {p: ours}, {p: theirs}, [p])
    assert merged == rebased
    assert merge_versions({p: TRAIN}, {p: ours}, {p: set_top(TRAIN, "MATRIX_LR", "0.02")}, [p]) is None


# ---- property: any two single-constant edits of different lines merge ------------------------


def _single_edits():
    """(name, profile, edit) for candidate edits of train.py's constants, both profiles' lines."""
    out, seen = [], set()
    for profile in ("gpu", "cpu"):
        for e in all_edits(TRAIN, profile, max_level=2, exclude=()):
            if (e.start, e.new) not in seen:
                seen.add((e.start, e.new))
                out.append((profile, e))
    return out


def _splice(edits) -> str:
    """train.py with the edits' value spans replaced (no parse: fast)."""
    data = TRAIN.encode()
    for e in sorted(edits, key=lambda e: e.start, reverse=True):
        data = data[: e.start] + e.new.encode() + data[e.end:]
    return data.decode()


def test_random_pairs_of_single_constant_edits_of_different_lines_always_merge():
    edits = _single_edits()
    assert len({e.start for _, e in edits}) > 25  # many distinct constants, on both profiles' lines
    rng = random.Random(1234)
    line_of = {e.start: TRAIN[: e.start].count("\n") for _, e in edits}
    checked = adjacent = 0
    while checked < 300:
        (pa, a), (pb, b) = rng.sample(edits, 2)
        if a.start == b.start:
            continue
        merged = merge3_text(TRAIN, _splice([a]), _splice([b]))
        assert merged is not None, (a.describe(), b.describe())
        assert merged == _splice([a, b])
        if checked < 20:  # both values are in force (parsing is the slow part: a sample)
            assert effective_constants(merged, pa)[a.name].text == a.new
            assert effective_constants(merged, pb)[b.name].text == b.new
        adjacent += abs(line_of[a.start] - line_of[b.start]) == 1
        checked += 1
    assert adjacent >= 5
    same = [(x, y) for (_, x) in edits for (_, y) in edits if x.start == y.start and x.new != y.new][:50]
    for x, y in same:  # the same constant set to different values: a true conflict
        assert merge3_text(TRAIN, _splice([x]), _splice([y])) is None
    assert same


def test_every_adjacent_pair_of_constants_merges():
    edits = _single_edits()
    first: dict[int, object] = {}
    for _, e in edits:
        first.setdefault(e.start, e)
    line_of = {s: TRAIN[:s].count("\n") for s in first}
    by_line = {line_of[s]: e for s, e in first.items()}
    pairs = [(by_line[n], by_line[n + 1]) for n in sorted(by_line) if n + 1 in by_line]
    assert len(pairs) >= 10
    for a, b in pairs:
        merged = merge3_text(TRAIN, _splice([a]), _splice([b]))
        assert merged == _splice([a, b]) == apply_edits(TRAIN, [a, b]), (a.describe(), b.describe())
