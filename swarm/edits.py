"""Edits as text: parse a model's reply into SEARCH/REPLACE blocks and apply them to a file.

Pure functions, string in / string out; nothing here touches disk, git or a model.

A reply holds a one-line description and SEARCH/REPLACE blocks:

    Description: raise the matrix learning rate

    trainer/train.py
    <<<<<<< SEARCH
    MATRIX_LR = 0.04
    =======
    MATRIX_LR = 0.05
    >>>>>>> REPLACE

or, as a fallback, the whole new file in one fenced code block. Tolerated quirks: code fences
around blocks, a filename line before a block, markers with 5 or more characters (`<<<<<`,
`=====`, `>>>>>`, REPLACE word optional on the closing one), CRLF line ends, stray whitespace.

Matching is exact first, then whitespace-tolerant: trailing whitespace, a uniform indentation
shift (the replacement is re-indented the same way), then blank-line differences. A SEARCH text
that matches more than once is an error asking for more context. Every failure raises `EditError`
whose message is written to be sent back to the model (which block, the closest actual lines with
line numbers, what to do). Not covered here: talking to the model (swarm.agents.llm).
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

from swarm.errors import EditError

_HEAD = re.compile(r"^\s*<{5,}\s*SEARCH\b.*$", re.IGNORECASE)
_DIVIDER = re.compile(r"^\s*={5,}\s*$")
_TAIL = re.compile(r"^\s*>{5,}\s*(REPLACE\b.*)?$", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^`\s]*)\s*$")
_PATH = re.compile(r"^[\w][\w.\-/]*\.\w+$")
_DESCRIPTION = re.compile(r"^[\W_]*description[\W_]*:\s*[*_]*\s*(.+?)\s*[*_]*\s*$", re.IGNORECASE)
MAX_DESCRIPTION = 200
_NUMBERED = re.compile(r"^\s*\d+ \| ?")
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class EditBlock:
    index: int  # 1-based position in the reply, used in error messages
    search: str  # lines ending in "\n" ("" for an empty SEARCH)
    replace: str
    filename: str | None = None  # the path line the model wrote before the block, if any


class BlocksFailed(EditError):
    """Some blocks did not apply; `partial_text` is the text with the blocks that did apply."""

    def __init__(self, message: str, partial_text: str, applied: Sequence[int], failed: Sequence[int]):
        super().__init__(message)
        self.partial_text = partial_text
        self.applied = tuple(applied)
        self.failed = tuple(failed)


class ReplyFailed(EditError):
    """A reply did not apply; `partial_files` holds files that blocks of it did change."""

    def __init__(self, message: str, partial_files: Mapping[str, str] | None = None):
        super().__init__(message)
        self.partial_files = dict(partial_files or {})


# ----------------------------------------------------------------------------------------------
# parsing


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _split(text: str) -> list[str]:
    """Lines of a text, with no empty last line for a final newline ("" -> [])."""
    lines = _lines(text) if text else []
    return lines[:-1] if lines and lines[-1] == "" else lines


def _join(lines: Sequence[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _as_path(line: str) -> str | None:
    """The path a line names (`trainer/train.py`, `**train.py**`, `File: train.py:`), or None."""
    s = line.strip().strip("`*_#:").strip()
    s = re.sub(r"^(file|filename|path)\s*:\s*", "", s, flags=re.IGNORECASE).strip("`*_ ")
    return s if _PATH.match(s) and not s.replace(".", "").isdigit() else None


def _filename_before(lines: Sequence[str], head: int) -> str | None:
    """Look back from a SEARCH marker past blank lines and one opening fence for a path line."""
    j, fences = head - 1, 0
    while j >= 0 and head - j <= 4:
        line = lines[j]
        if not line.strip():
            j -= 1
            continue
        m = _FENCE.match(line)
        if m and fences == 0:
            fences += 1
            if m.group(2) and _as_path(m.group(2)):  # ```trainer/train.py
                return _as_path(m.group(2))
            j -= 1
            continue
        return _as_path(line)
    return None


def parse_edit_blocks(reply: str) -> tuple[str, list[EditBlock], str | None]:
    """Split a reply into (description, blocks, whole_file).

    `whole_file` is the longest fenced code block when the reply has no SEARCH/REPLACE blocks
    (else None). Raises `EditError` for a block that is not closed or lacks its `=======`.
    """
    lines = _lines(reply)
    blocks: list[EditBlock] = []
    prose: list[str] = []
    fences: list[list[str]] = []  # contents of fenced code blocks holding no edit block
    fence: str | None = None  # the opening marker while inside a fence
    fence_has_block = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _HEAD.match(line):
            n = len(blocks) + 1
            filename = _filename_before(lines, i)
            search, replace, part, j = [], [], "search", i + 1
            while True:
                if j >= len(lines):
                    what = "its ======= line" if part == "search" else "its >>>>>>> REPLACE line"
                    raise EditError(
                        f"SEARCH/REPLACE block {n} is not closed: it lacks {what}. Send the block again, "
                        "complete: <<<<<<< SEARCH, the old lines, =======, the new lines, >>>>>>> REPLACE."
                    )
                cur = lines[j]
                if _HEAD.match(cur):
                    raise EditError(
                        f"SEARCH/REPLACE block {n} is not closed before the next <<<<<<< SEARCH. End every "
                        "block with ======= between old and new lines and >>>>>>> REPLACE after the new lines."
                    )
                if part == "search" and _DIVIDER.match(cur):
                    part = "replace"
                elif part == "replace" and _TAIL.match(cur):
                    break
                elif part == "search":
                    search.append(cur)
                else:
                    replace.append(cur)
                j += 1
            blocks.append(EditBlock(n, _join(search), _join(replace), filename))
            if fence is not None:
                fence_has_block = True
            i = j + 1
            continue
        m = _FENCE.match(line)
        if fence is None and m:
            fence, fence_has_block = m.group(1), False
            fences.append([])
        elif fence is not None and m and not m.group(2) and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
            if fence_has_block:
                fences.pop()
            fence = None
        elif fence is not None:
            fences[-1].append(line)
        else:
            prose.append(line)
        i += 1
    if fence is not None and fence_has_block and fences:
        fences.pop()
    whole = None
    if not blocks and fences:
        best = max(fences, key=len)
        if any(x.strip() for x in best):
            whole = _join(best)
    return _description(prose), blocks, whole


def _description(prose: Sequence[str]) -> str:
    for line in prose:
        m = _DESCRIPTION.match(line)
        if m:
            return _clip(m.group(1))
    for line in prose:
        s = line.strip().lstrip("#>*-").strip().strip("*_").strip()
        if s and not _as_path(s):
            return _clip(s)
    return ""


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 3].rstrip() + "..."


# ----------------------------------------------------------------------------------------------
# matching


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _shift(pairs: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """For (file line, search line) pairs equal up to one uniform indentation shift, the
    (prefix to add, prefix to remove) that turns search indentation into file indentation."""
    add = remove = None
    for a, b in pairs:
        a, b = a.rstrip(), b.rstrip()
        if not a and not b:
            continue
        if a.lstrip() != b.lstrip() or not a or not b:
            return None
        ia, ib = _indent(a), _indent(b)
        if add is None and remove is None:
            if len(ia) >= len(ib) and ia.endswith(ib):
                add, remove = ia[: len(ia) - len(ib)], ""
            elif ib.endswith(ia):
                add, remove = "", ib[: len(ib) - len(ia)]
            else:
                return None
        if ia != add + ib[len(remove):] or not ib.startswith(remove):
            return None
    return (add or "", remove or "")


def _find(lines: Sequence[str], search: Sequence[str], mode: str) -> list[tuple[int, int, tuple[str, str]]]:
    """Spans (start, end, (add, remove)) of `lines` that match `search` under `mode`."""
    if mode == "blank":
        idx = [k for k, line in enumerate(lines) if line.strip()]
        hay = [lines[k] for k in idx]
        needle = [s for s in search if s.strip()]
    else:
        idx, hay, needle = list(range(len(lines))), list(lines), list(search)
    n, spans = len(needle), []
    if n == 0:
        return spans
    for i in range(len(hay) - n + 1):
        window = hay[i : i + n]
        if mode == "exact":
            ok, sh = window == needle, ("", "")
        elif mode == "rstrip":
            ok, sh = all(a.rstrip() == b.rstrip() for a, b in zip(window, needle)), ("", "")
        else:  # "indent" and "blank"
            sh = _shift(list(zip(window, needle)))
            ok = sh is not None
        if ok:
            spans.append((idx[i], idx[i + n - 1] + 1, sh))
    return spans


def _reindent(lines: Sequence[str], shift: tuple[str, str]) -> list[str]:
    add, remove = shift
    out = []
    for line in lines:
        if not line.strip():
            out.append(line)
            continue
        if remove and line.startswith(remove):
            line = line[len(remove):]
        out.append(add + line)
    return out


def _blank_edges(lines: Sequence[str]) -> tuple[int, int]:
    lead = next((k for k, x in enumerate(lines) if x.strip()), len(lines))
    trail = next((k for k, x in enumerate(reversed(lines)) if x.strip()), len(lines))
    return lead, trail


def _numbered(lines: Sequence[str], start: int, end: int) -> str:
    width = len(str(end))
    return "\n".join(f"{k + 1:>{width}} | {lines[k]}" for k in range(start, end))


def _tokens(line: str) -> Counter:
    return Counter(_TOKEN.findall(line))


def closest_lines(lines: Sequence[str], search: Sequence[str], context: int = 1, limit: int = 30) -> str:
    """The window of `lines` most similar to `search`, numbered from 1, with a little context.

    Windows are ranked by shared tokens (cheap), the best few re-ranked by difflib's ratio.
    """
    if not lines:
        return "(the file is empty)"
    wanted = [s.strip() for s in search if s.strip()]
    n = max(1, min(len(wanted) or 1, len(lines)))
    target_tokens = _tokens("\n".join(wanted))
    line_tokens = [_tokens(x) for x in lines]
    scored = []
    for i in range(len(lines) - n + 1):
        window = Counter()
        for c in line_tokens[i : i + n]:
            window.update(c)
        shared = sum((window & target_tokens).values())
        scored.append((shared / max(1, sum((window | target_tokens).values())), i))
    scored.sort(reverse=True)
    target = "\n".join(wanted)
    best, best_ratio = scored[0][1], -1.0
    for _, i in scored[:8]:
        r = difflib.SequenceMatcher(None, "\n".join(x.strip() for x in lines[i : i + n]), target, autojunk=False).ratio()
        if r > best_ratio:
            best, best_ratio = i, r
    start, end = max(0, best - context), min(len(lines), best + n + context)
    end = min(end, start + limit)
    return f"lines {start + 1}-{end}:\n{_numbered(lines, start, end)}"


class _Failure(Exception):
    pass


def _apply_one(lines: list[str], block: EditBlock, label: str) -> list[str]:
    search, replace = _split(block.search), _split(block.replace)
    if not any(s.strip() for s in search):
        if not any(x.strip() for x in lines):
            return replace
        raise _Failure(
            f"{label} has an empty SEARCH section, which only works on an empty file. Copy the lines to "
            "change (or the lines after which to insert) into SEARCH."
        )
    for mode in ("exact", "rstrip", "indent", "blank"):
        spans = _find(lines, search, mode)
        if len(spans) > 1:
            where = ", ".join(str(s + 1) for s, _, _ in spans[:10])
            raise _Failure(
                f"{label}: its SEARCH text occurs {len(spans)} times in the file (at lines {where}). Add "
                "neighbouring lines to SEARCH (and REPLACE) so that it matches exactly one place."
            )
        if spans:
            start, end, sh = spans[0]
            new = _reindent(replace, sh)
            if mode == "blank":  # SEARCH's extra edge blank lines were ignored: drop REPLACE's too
                (sl, st), (rl, rt) = _blank_edges(search), _blank_edges(new)
                new = new[min(sl, rl) : len(new) - min(st, rt)]
            return lines[:start] + new + lines[end:]
    if all(_NUMBERED.match(x) for x in search if x.strip()):  # line numbers copied from our error
        strip = lambda xs: [_NUMBERED.sub("", x) for x in xs]  # noqa: E731
        numbered = all(_NUMBERED.match(x) for x in replace if x.strip())
        return _apply_one(lines, EditBlock(block.index, _join(strip(search)),
                                           _join(strip(replace) if numbered else replace)), label)
    raise _Failure(
        f"{label}: its SEARCH text matches no lines of the file. The closest actual lines are "
        f"{closest_lines(lines, search)}"
    )


def apply_blocks(text: str, blocks: Sequence[EditBlock], filename: str = "the file") -> str:
    """Apply `blocks` in order to `text` and return the new text.

    Raises `BlocksFailed` (an `EditError`) naming each failed block, with the closest lines of the
    file; its `partial_text` holds the text with the blocks that did apply. Keeps CRLF line ends
    and the presence or absence of a final newline.
    """
    crlf = "\r\n" in text
    norm = text.replace("\r\n", "\n")
    final_nl = norm.endswith("\n") or not norm
    lines = _split(norm)
    applied, failed, messages = [], [], []
    for b in blocks:
        label = f"SEARCH/REPLACE block {b.index}"
        try:
            lines = _apply_one(lines, b, label)
            applied.append(b.index)
        except _Failure as exc:
            failed.append(b.index)
            messages.append(str(exc))
    out = "\n".join(lines) + ("\n" if final_nl and lines else "")
    if crlf:
        out = out.replace("\n", "\r\n")
    if failed:
        head = f"Your edit of {filename} did not apply.\n\n" + "\n\n".join(messages)
        tail = (
            f"\n\nBlocks {', '.join(map(str, applied))} applied and are already in {filename}: do not send them again. "
            if applied
            else "\n\nNo block was applied. "
        )
        tail += (
            "Reply with corrected SEARCH/REPLACE blocks for the failed block(s) only; copy SEARCH lines exactly "
            "from the file (without the line numbers), including comments and indentation."
        )
        raise BlocksFailed(head + tail, out, applied, failed)
    return out


# ----------------------------------------------------------------------------------------------
# a whole reply against the mutable files


def _route(filename: str | None, paths: Sequence[str], default: str) -> str:
    if filename is None or filename in paths:
        return filename or default
    for p in paths:
        if p.endswith("/" + filename) or filename.endswith("/" + p) or p.rsplit("/", 1)[-1] == filename.rsplit("/", 1)[-1]:
            return p
    raise EditError(
        f"Your reply edits {filename}, but only {', '.join(paths)} may be changed. Send the edit as "
        f"SEARCH/REPLACE blocks for {default}."
    )


def apply_reply(files: Mapping[str, str], reply: str, default_path: str | None = None) -> tuple[str, dict[str, str]]:
    """Apply a model reply to `files` (path -> current text of each mutable file).

    Returns (description, {path: new text} for every file the reply changed). Raises
    `ReplyFailed` (an `EditError`, message meant for the model) when a block fails, the reply
    holds no edit, a whole-file reply looks like a fragment, or nothing changes; its
    `partial_files` holds files changed by the blocks that did apply.
    """
    paths = list(files)
    default = default_path or paths[0]
    description, blocks, whole = parse_edit_blocks(reply)
    new: dict[str, str] = {}
    if blocks:
        groups: dict[str, list[EditBlock]] = {}
        for b in blocks:
            groups.setdefault(_route(b.filename, paths, default), []).append(b)
        errors, partial = [], {}
        for path, group in groups.items():
            try:
                new[path] = apply_blocks(files[path], group, path)
            except BlocksFailed as exc:
                errors.append(str(exc))
                if exc.applied:
                    partial[path] = exc.partial_text
        if errors:
            partial.update(new)
            raise ReplyFailed("\n\n".join(errors), partial)
    elif whole is not None:
        old = files[default]
        old_n, new_n = len(old.splitlines()), len(whole.splitlines())
        if old_n >= 20 and new_n < old_n // 2:
            raise ReplyFailed(
                f"Your reply holds a {new_n}-line code block, but {default} has {old_n} lines: a whole-file "
                "reply must contain the complete file. Send SEARCH/REPLACE blocks instead."
            )
        if "\r\n" in old and "\r\n" not in whole:
            whole = whole.replace("\n", "\r\n")
        new[default] = whole
    else:
        raise ReplyFailed(
            f"Your reply contains no edit. Send a 'Description: ...' line and SEARCH/REPLACE blocks for {default} "
            "(<<<<<<< SEARCH, the exact old lines, =======, the new lines, >>>>>>> REPLACE)."
        )
    changed = {p: t for p, t in new.items() if t != files[p]}
    if not changed:
        raise ReplyFailed(f"Your edit leaves {default} unchanged. Propose a real change.")
    return description, changed
