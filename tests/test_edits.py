"""swarm.edits: parsing replies and applying SEARCH/REPLACE blocks, string in / string out."""

import pytest

from swarm.edits import (
    BlocksFailed,
    EditBlock,
    ReplyFailed,
    apply_blocks,
    apply_reply,
    closest_lines,
    parse_edit_blocks,
)
from swarm.errors import EditError

SOURCE = """\
import math

# hyperparameters
DEPTH = 8  # number of layers
MATRIX_LR = 0.04
WARMUP = 0.0


def lr_at(step, total):
    if step < WARMUP * total:
        return step / (WARMUP * total)
    return 1.0


def train():
    for step in range(10):
        lr = lr_at(step, 10)
        print(step, lr)
"""

PATH = "trainer/train.py"


def block(search: str, replace: str, index: int = 1, filename=None) -> EditBlock:
    return EditBlock(index, search, replace, filename)


# -- parsing ---------------------------------------------------------------------------------------


def test_parse_plain_reply():
    reply = (
        "Description: raise the learning rate\n\n"
        "trainer/train.py\n<<<<<<< SEARCH\nMATRIX_LR = 0.04\n=======\nMATRIX_LR = 0.05\n>>>>>>> REPLACE\n"
    )
    desc, blocks, whole = parse_edit_blocks(reply)
    assert desc == "raise the learning rate"
    assert blocks == [EditBlock(1, "MATRIX_LR = 0.04\n", "MATRIX_LR = 0.05\n", "trainer/train.py")]
    assert whole is None


def test_parse_quirks_fences_filenames_marker_lengths_crlf():
    reply = (
        "**Description:** deeper model, more warmup\r\n\r\n"
        "`trainer/train.py`\r\n```python\r\n<<<<< SEARCH\r\nDEPTH = 8  # number of layers\r\n"
        "=========\r\nDEPTH = 10  # number of layers\r\n>>>>>>>>>> REPLACE\r\n```\r\n\r\n"
        "File: train.py\n```\n<<<<<<<SEARCH\nWARMUP = 0.0\n=====\nWARMUP = 0.1\n>>>>>>>\n```\n"
    )
    desc, blocks, whole = parse_edit_blocks(reply)
    assert desc == "deeper model, more warmup"
    assert [b.filename for b in blocks] == ["trainer/train.py", "train.py"]
    assert blocks[0].search == "DEPTH = 8  # number of layers\n"
    assert blocks[1].replace == "WARMUP = 0.1\n"
    assert whole is None  # fences that hold blocks are not a whole file


def test_parse_description_falls_back_to_first_prose_line():
    reply = "I will make the model deeper.\n\n<<<<<<< SEARCH\nDEPTH = 8\n=======\nDEPTH = 9\n>>>>>>> REPLACE\n"
    assert parse_edit_blocks(reply)[0] == "I will make the model deeper."


def test_parse_whole_file_fallback_takes_longest_fence():
    reply = "Description: rewrite\n\n```python\nx = 1\n```\n\nFull file:\n```python\na = 1\nb = 2\nc = 3\n```\n"
    desc, blocks, whole = parse_edit_blocks(reply)
    assert desc == "rewrite" and blocks == [] and whole == "a = 1\nb = 2\nc = 3\n"


def test_parse_unclosed_block_is_an_error_for_the_model():
    with pytest.raises(EditError, match="block 1 is not closed"):
        parse_edit_blocks("<<<<<<< SEARCH\nDEPTH = 8\n=======\nDEPTH = 9\n")
    with pytest.raises(EditError, match="not closed before the next"):
        parse_edit_blocks("<<<<<<< SEARCH\na\n<<<<<<< SEARCH\nb\n=======\nc\n>>>>>>> REPLACE\n")


# -- applying --------------------------------------------------------------------------------------


def test_exact_match():
    out = apply_blocks(SOURCE, [block("MATRIX_LR = 0.04\n", "MATRIX_LR = 0.05\n")])
    assert out == SOURCE.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05")


def test_blocks_apply_in_order_and_may_insert_and_delete():
    out = apply_blocks(
        SOURCE,
        [
            block("import math\n", "import math\nimport time\n", 1),
            block("WARMUP = 0.0\n", "", 2),
        ],
    )
    assert "import time\n" in out and "WARMUP = 0.0" not in out


def test_trailing_whitespace_tolerated():
    out = apply_blocks(SOURCE, [block("MATRIX_LR = 0.04   \nWARMUP = 0.0\t\n", "MATRIX_LR = 0.03\nWARMUP = 0.0\n")])
    assert "MATRIX_LR = 0.03\nWARMUP = 0.0\n" in out


def test_uniform_indentation_shift_is_reapplied_to_replacement():
    search = "for step in range(10):\n    lr = lr_at(step, 10)\n"  # model dropped one indent level
    replace = "for step in range(20):\n    lr = lr_at(step, 20)\n"
    out = apply_blocks(SOURCE, [block(search, replace)])
    assert "    for step in range(20):\n        lr = lr_at(step, 20)\n        print(step, lr)\n" in out
    # and the other way round: the model indented too much
    search = "        MATRIX_LR = 0.04\n        WARMUP = 0.0\n"
    out = apply_blocks(SOURCE, [block(search, "        MATRIX_LR = 0.02\n        WARMUP = 0.0\n")])
    assert "\nMATRIX_LR = 0.02\nWARMUP = 0.0\n" in out


def test_blank_line_differences_tolerated():
    search = "\ndef lr_at(step, total):\n\n    if step < WARMUP * total:\n"  # blank lines not in the file
    out = apply_blocks(SOURCE, [block(search, "\ndef lr_at(step, total):\n    if step <= WARMUP * total:\n")])
    assert "def lr_at(step, total):\n    if step <= WARMUP * total:\n        return" in out
    assert "\n\n\ndef lr_at" in out  # the file's own blank lines before it are kept, none added


def test_ambiguous_match_asks_for_more_context():
    text = "x = 1\ny = 2\n\nx = 1\nz = 3\n"
    with pytest.raises(BlocksFailed, match=r"occurs 2 times.*lines 1, 4") as info:
        apply_blocks(text, [block("x = 1\n", "x = 2\n")])
    assert "Add neighbouring lines" in str(info.value)


def test_no_match_shows_closest_lines_with_numbers_and_partial_result():
    blocks = [
        block("DEPTH = 8  # number of layers\n", "DEPTH = 12  # number of layers\n", 1),
        block("MATRIX_LR = 0.4\nWARMUP = 0.2\n", "MATRIX_LR = 0.5\n", 2),
    ]
    with pytest.raises(BlocksFailed) as info:
        apply_blocks(SOURCE, blocks, PATH)
    msg = str(info.value)
    assert "block 2" in msg and "matches no lines" in msg
    assert "5 | MATRIX_LR = 0.04" in msg and "6 | WARMUP = 0.0" in msg
    assert "Blocks 1 applied" in msg and PATH in msg
    assert info.value.failed == (2,) and info.value.applied == (1,)
    assert "DEPTH = 12" in info.value.partial_text


def test_empty_search_on_empty_file_creates_it_and_is_refused_otherwise():
    assert apply_blocks("", [block("", "print('hi')\n")]) == "print('hi')\n"
    with pytest.raises(EditError, match="empty SEARCH"):
        apply_blocks(SOURCE, [block("", "x = 1\n")])


def test_crlf_file_keeps_its_line_ends():
    crlf = SOURCE.replace("\n", "\r\n")
    out = apply_blocks(crlf, [block("MATRIX_LR = 0.04\n", "MATRIX_LR = 0.05\n")])
    assert out == crlf.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05")


def test_missing_final_newline_is_kept():
    assert apply_blocks("a = 1\nb = 2", [block("b = 2\n", "b = 3\n")]) == "a = 1\nb = 3"


def test_closest_lines_finds_the_similar_window():
    lines = SOURCE.splitlines()
    text = closest_lines(lines, ["def lr_at(step, totl):"])
    assert "9 | def lr_at(step, total):" in text


# -- whole replies against the mutable files ---------------------------------------------------


def test_apply_reply_routes_blocks_and_returns_changed_files():
    reply = "Description: lr\n\ntrain.py\n<<<<<<< SEARCH\nMATRIX_LR = 0.04\n=======\nMATRIX_LR = 0.05\n>>>>>>> REPLACE\n"
    desc, files = apply_reply({PATH: SOURCE}, reply)
    assert desc == "lr" and files == {PATH: SOURCE.replace("0.04", "0.05")}


def test_apply_reply_refuses_other_files():
    reply = "prepare/data.py\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n"
    with pytest.raises(EditError, match="only trainer/train.py may be changed"):
        apply_reply({PATH: SOURCE}, reply)


def test_apply_reply_whole_file_and_fragment_check():
    new = SOURCE.replace("DEPTH = 8", "DEPTH = 6")
    desc, files = apply_reply({PATH: SOURCE}, f"Description: shallower\n\n```python\n{new}```\n")
    assert files == {PATH: new} and desc == "shallower"
    long_file = SOURCE * 3
    with pytest.raises(ReplyFailed, match="complete file"):
        apply_reply({PATH: long_file}, "Description: x\n```python\nDEPTH = 6\n```\n")


def test_apply_reply_no_edit_and_no_change_are_errors():
    with pytest.raises(ReplyFailed, match="contains no edit"):
        apply_reply({PATH: SOURCE}, "I think we should raise the learning rate.")
    same = "<<<<<<< SEARCH\nDEPTH = 8  # number of layers\n=======\nDEPTH = 8  # number of layers\n>>>>>>> REPLACE\n"
    with pytest.raises(ReplyFailed, match="unchanged"):
        apply_reply({PATH: SOURCE}, same)


def test_apply_reply_failure_carries_partial_files():
    reply = (
        "<<<<<<< SEARCH\nDEPTH = 8  # number of layers\n=======\nDEPTH = 9  # number of layers\n>>>>>>> REPLACE\n"
        "<<<<<<< SEARCH\nNOT_THERE = 1\n=======\nNOT_THERE = 2\n>>>>>>> REPLACE\n"
    )
    with pytest.raises(ReplyFailed) as info:
        apply_reply({PATH: SOURCE}, reply)
    assert "DEPTH = 9" in info.value.partial_files[PATH]


def test_line_numbers_copied_from_the_error_are_ignored():
    search = " 5 | MATRIX_LR = 0.04\n 6 | WARMUP = 0.0\n"
    out = apply_blocks(SOURCE, [block(search, " 5 | MATRIX_LR = 0.03\n 6 | WARMUP = 0.0\n")])
    assert "\nMATRIX_LR = 0.03\nWARMUP = 0.0\n" in out
