"""Three-way merges of text, string in / string out: combining two changes of one base.

Each side's change is a list of hunks against the base: a base line range [start, end) and the
lines that replace it (difflib opcodes; an insertion has start == end). The merge takes every
hunk of both sides in base order. Two hunks conflict only when their base ranges overlap, when
both insert different text at the same position, or when one inserts strictly inside a range the
other replaces or deletes; a hunk made identically by both sides is taken once. A replacement of
n lines by n lines counts line by line. So changes to different lines always merge, adjacent lines
included (two wins that changed `MATRIX_LR` and `SCALAR_LR` on neighbouring lines of train.py
compose, also when both changed a third line the same way); line ends are kept as they are.

A prefetched proposal is made on the best as it was when the agent started; when the best moved
meanwhile, `rebase_files` carries the proposal's change (base -> proposal) over onto the new best
(base -> new best); on a conflict (None) the caller asks the agent again. The coordinator's
combination of two parallel wins uses `merge_versions` (the same merge, over the three versions
of each mutable file). No disk, no git, no subprocess: the callers use these at their edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Mapping, Sequence


@dataclass(frozen=True)
class Hunk:
    """Base lines [start, end) replaced by `lines` (start == end: an insertion before `start`).

    `within` is the base range of the whole change the hunk is part of (a replacement of n lines
    by n lines is split into one hunk per changed line; None: the hunk's own); equality ignores it.
    """

    start: int
    end: int
    lines: tuple[str, ...]
    within: tuple[int, int] | None = field(default=None, compare=False)

    @property
    def inserts(self) -> bool:
        return self.start == self.end

    @property
    def outer(self) -> tuple[int, int]:
        return self.within or (self.start, self.end)


def hunks(base: Sequence[str], other: Sequence[str]) -> list[Hunk]:
    """The changes that turn `base` into `other`, in base order (disjoint).

    One hunk per difflib opcode, except that a replacement of n lines by n lines becomes one
    hunk per line it changes (so a side that changed two neighbouring constants has two hunks).
    """
    out: list[Hunk] = []
    matcher = SequenceMatcher(None, base, other, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            out.extend(Hunk(i1 + k, i1 + k + 1, (other[j1 + k],), (i1, i2))
                       for k in range(i2 - i1) if base[i1 + k] != other[j1 + k])
        else:
            out.append(Hunk(i1, i2, tuple(other[j1:j2]), (i1, i2)))
    return out


def conflicts(a: Hunk, b: Hunk) -> bool:
    """Whether two hunks of different sides cannot both be applied (identical hunks: no)."""
    if a == b:
        return False
    if a.inserts and b.inserts:
        return a.start == b.start  # two different texts at the same place
    if a.inserts:
        return b.outer[0] < a.start < b.outer[1]  # inside what the other replaces
    if b.inserts:
        return a.outer[0] < b.start < a.outer[1]
    return a.start < b.end and b.start < a.end  # overlapping ranges (touching ones are fine)


def merge3_lines(base: Sequence[str], ours: Sequence[str], theirs: Sequence[str]) -> list[str] | None:
    """Both sides' changes relative to `base` applied together, or None on a conflict.

    See the module docstring for what conflicts. At one base position an insertion comes
    before a replacement starting there.
    """
    mine, other = hunks(base, ours), hunks(base, theirs)
    taken = list(mine)
    for h in other:
        if h in mine:
            continue  # made identically by both sides: once
        if any(conflicts(h, m) for m in mine):
            return None
        taken.append(h)
    taken.sort(key=lambda h: (h.start, not h.inserts))
    out: list[str] = []
    pos = 0
    for h in taken:
        out.extend(base[pos:h.start])
        out.extend(h.lines)
        pos = h.end
    out.extend(base[pos:])
    return out


def merge3_text(base: str, ours: str, theirs: str) -> str | None:
    """Three-way merge of whole texts (line based, line ends kept); None on a conflict."""
    if ours == base:
        return theirs
    if theirs == base or ours == theirs:
        return ours
    merged = merge3_lines(base.splitlines(keepends=True), ours.splitlines(keepends=True),
                          theirs.splitlines(keepends=True))
    return None if merged is None else "".join(merged)


def rebase_files(
    base: Mapping[str, str], proposed: Mapping[str, str], new_base: Mapping[str, str]
) -> dict[str, str] | None:
    """Carry a proposal (`proposed`: full new texts, made on `base`) over onto `new_base`.

    Returns the full new text of each proposed path on the new base, or None when any path
    conflicts. A path missing from a mapping counts as an empty file.
    """
    rebased: dict[str, str] = {}
    for path, text in proposed.items():
        merged = merge3_text(base.get(path, ""), text, new_base.get(path, ""))
        if merged is None:
            return None
        rebased[path] = merged
    return rebased


def merge_versions(
    base: Mapping[str, str | None], ours: Mapping[str, str | None], theirs: Mapping[str, str | None],
    paths: Sequence[str],
) -> dict[str, str] | None:
    """Three-way merge of `paths` (None or missing: the file does not exist in that version).

    Returns the merged text of each path that exists after the merge, or None on any conflict.
    A file missing from some version merges only when `ours` and `theirs` agree on it.
    """
    merged: dict[str, str] = {}
    for path in paths:
        o, b, t = ours.get(path), base.get(path), theirs.get(path)
        if o is None or b is None or t is None:
            if o != t:
                return None
            if o is not None:
                merged[path] = o
            continue
        text = merge3_text(b, o, t)
        if text is None:
            return None
        merged[path] = text
    return merged


__all__ = ["Hunk", "conflicts", "hunks", "merge3_lines", "merge3_text", "merge_versions", "rebase_files"]
