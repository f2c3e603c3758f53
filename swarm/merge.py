"""Three-way merges of text, string in / string out: re-applying an edit onto a newer base.

A prefetched proposal is made on the best as it was when the agent started; when the best moved
meanwhile, `rebase_files` carries the proposal's change (base -> proposal) over onto the new best
(base -> new best) with a line-based diff3 merge. Changes of both sides that touch the same or
adjacent lines are a conflict (None): the caller then asks the agent again. No disk, no git, no
subprocess: the worker calls these at its edge. The coordinator's combination of two parallel wins
uses `merge_versions` (the same merge, over the three versions of each mutable file).
"""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import Mapping, Sequence


def _matches(base: Sequence[str], other: Sequence[str]) -> dict[int, int]:
    """base line index -> other line index, for the lines a longest-match diff keeps unchanged."""
    pairs: dict[int, int] = {}
    matcher = SequenceMatcher(None, base, other, autojunk=False)
    for b, o, size in matcher.get_matching_blocks():
        for k in range(size):
            pairs[b + k] = o + k
    return pairs


def _resolve(base: list[str], ours: list[str], theirs: list[str]) -> list[str] | None:
    if ours == base:
        return theirs
    if theirs == base or ours == theirs:
        return ours
    return None


def merge3_lines(base: Sequence[str], ours: Sequence[str], theirs: Sequence[str]) -> list[str] | None:
    """diff3 of line lists: both sides' changes relative to `base`, or None on a conflict.

    Walks alternating stable chunks (base lines kept by both sides, at matching positions) and
    unstable chunks (up to the next base line both sides kept); an unstable chunk changed by one
    side takes that side, changed identically by both takes it once, otherwise it conflicts.
    """
    m_ours, m_theirs = _matches(base, ours), _matches(base, theirs)
    out: list[str] = []
    lo, lo_o, lo_t = 0, 0, 0
    while lo < len(base) or lo_o < len(ours) or lo_t < len(theirs):
        i = 0
        while (lo + i < len(base) and m_ours.get(lo + i) == lo_o + i and m_theirs.get(lo + i) == lo_t + i):
            i += 1
        if i:
            out.extend(base[lo : lo + i])
            lo, lo_o, lo_t = lo + i, lo_o + i, lo_t + i
            continue
        j = next(
            (k for k in range(lo, len(base))
             if m_ours.get(k, -1) >= lo_o and m_theirs.get(k, -1) >= lo_t),
            None,
        )
        if j is None:
            end_b, end_o, end_t = len(base), len(ours), len(theirs)
        else:
            end_b, end_o, end_t = j, m_ours[j], m_theirs[j]
        chunk = _resolve(list(base[lo:end_b]), list(ours[lo_o:end_o]), list(theirs[lo_t:end_t]))
        if chunk is None:
            return None
        out.extend(chunk)
        lo, lo_o, lo_t = end_b, end_o, end_t
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


__all__ = ["merge3_lines", "merge3_text", "merge_versions", "rebase_files"]
