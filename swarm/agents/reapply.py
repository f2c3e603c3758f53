"""Re-applying a win's change to the current file: the constants a unified diff sets, as edits.

When two parallel wins changed the same line, the coordinator asks the displaced win's agent to
re-apply its change on the new best, handing it the win's description and diff. The built-in agent
turns that diff into edits here: `diff_assignments` reads the `NAME = literal` lines the diff adds,
`setting_edits` sets those constants to those values on the current file (the assignment in force
for the profile). Pure, string in / edits out. Not covered: choosing what to try (swarm.agents.builtin),
applying edits to text (swarm.agents.hyperparams.apply_edits).
"""

from __future__ import annotations

import re
from typing import Iterable

from swarm.agents.hyperparams import (
    Constant, Edit, _applies, _one_line, direction_of, effective_constants, find_constants, literal_value,
)

_ADDED_RE = re.compile(r"^\+(\s*)([A-Z][A-Z0-9_]*)\s*(?::[^=]+)?=\s*(.+?)\s*(?:#.*)?$")


def diff_assignments(diff: str, path: str | None = None) -> list[tuple[str, str, bool]]:
    """`(name, value text, indented)` of each `NAME = literal` line a unified diff adds.

    With `path`, only that file's part of the diff (when the diff names files at all). Lines
    whose value is not a literal this module can edit are skipped.
    """
    out: list[tuple[str, str, bool]] = []
    current: str | None = None
    for line in diff.splitlines():
        if line.startswith("+++ "):
            name = line[4:].strip().split("\t")[0]
            current = name[2:] if name.startswith(("a/", "b/")) else name
            continue
        if path is not None and current is not None and current != path:
            continue
        m = _ADDED_RE.match(line)
        if not m:
            continue
        indent, name, value = m.groups()
        try:
            literal_value(value)
        except ValueError:
            continue
        out.append((name, value, bool(indent)))
    return out


def _target(text: str, profile: str | None, name: str, block: bool | None) -> Constant | None:
    """The assignment of `name` to set: the effective one for `profile` (block None), else the
    last top-level one (block False) or the one in a profile block in force (block True)."""
    if block is None:
        return effective_constants(text, profile).get(name)
    found = None
    for n, const, scope in find_constants(text):
        if n != name or const is None:
            continue
        if not block and scope[0] is None:
            found = const
        elif block and scope[0] is not None and _applies(scope, profile):
            found = const
    return found


def setting_edits(
    text: str, profile: str | None, targets: Iterable[tuple[str, str, bool | None]]
) -> tuple[list[Edit], list[str]]:
    """Edits that set constants to new values: `targets` are `(name, new value text, block)`
    (block: see `_target`). Returns the edits and, for each target left out, why (missing,
    not a literal, already at that value). The last target of a name wins."""
    chosen: dict[int, Edit] = {}
    skipped: list[str] = []
    for name, new, block in targets:
        const = _target(text, profile, name, block)
        new = _one_line(new)
        try:
            value = literal_value(new)
        except ValueError:
            skipped.append(f"{name}: {new!r} is not a literal")
            continue
        if const is None:
            skipped.append(f"{name}: not an editable constant of the file")
            continue
        if repr(value) == repr(const.value):
            chosen.pop(const.start, None)
            skipped.append(f"{name} is already {_one_line(const.text)}")
            continue
        chosen[const.start] = Edit(name, const.text, new, direction_of(const.value, value), 0, const.start, const.end)
    return sorted(chosen.values(), key=lambda e: e.start), skipped
