"""Find and edit a training script's UPPER_CASE hyperparameter constants, through `ast`.

Covers: discovering module-level constants assigned a literal (int, float, str, bool, a tuple or
list of those, a power such as `2**19`), the effective assignment per profile (a module-level
`if PROFILE == "cpu":` block, elif/else included, overrides the top-level one), the candidate
edits of one constant (multiplicative steps for rates, +-1 or x2 for sizes keeping powers of two,
logit steps for values in (0, 1), longer/shorter pattern strings, flipped booleans, one element of
a tuple), applying edits by replacing only the literal's source span (comments and layout
survive; the result is re-parsed), and the one-line description `NAME old -> new` (`; ` between
several) with its parser. Does not cover: choosing an edit (see `swarm.agents.builtin`).
"""

from __future__ import annotations

import ast
import functools
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable

NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
# `_`-separated parts of names that are not research knobs: changing them games the measurement
# or does nothing
DEFAULT_EXCLUDE = ("SEED", "PROFILE", "LOG", "PRINT", "EVERY", "VERBOSE", "DEBUG", "PATH", "DIR", "FILE",
                   "BUDGET", "TIMEOUT", "EVAL", "VOCAB", "SEQ_LEN")
UNIT_HINTS = ("BETA", "MOMENTUM", "RATIO", "FRAC", "DROPOUT", "EMA", "PROB", "GAMMA", "SMOOTH")
COUNT_HINTS = ("DEPTH", "LAYER")
FLOAT_FACTORS = (1.4, 2.0, 3.0)  # multiplicative step per level (down: the inverse)
LARGE_INT_FACTORS = (1.25, 1.5, 2.0)
ZERO_STEPS = {True: (0.05, 0.1, 0.2), False: (0.01, 0.03, 0.1)}  # up from 0.0: unit-like / other
MAX_PATTERN_LEN = 8


@dataclass(frozen=True)
class Constant:
    """One literal assignment `NAME = value` of the file."""

    name: str
    value: Any
    text: str  # source of the value expression
    start: int  # byte offsets of the value expression in the UTF-8 encoded file
    end: int
    lineno: int
    form: str  # "bool" | "int" | "float" | "str" | "pow" | "seq"
    parts: tuple[tuple[int, int], ...] = ()  # char spans in `text`: the exponent (pow), the elements (seq)
    profiles: frozenset[str] | None = None  # None: top level; else the block's profile names
    negated: bool = False  # an `else:` block: applies to every profile not in `profiles`


@dataclass(frozen=True)
class Edit:
    """A new value for one constant; `start:end` is the value's byte span in the file."""

    name: str
    old: str
    new: str
    direction: str  # "up" | "down" | "flip" | "alt", "up[1]" for an element of a tuple
    level: int  # 0 = the smallest step, higher = wider
    start: int
    end: int

    @property
    def arm(self) -> tuple[str, str]:
        return (self.name, self.direction)

    @property
    def key(self) -> tuple[str, str]:
        return edit_key(self.name, self.new)

    def describe(self) -> str:
        return f"{self.name} {_one_line(self.old)} -> {_one_line(self.new)}"


@dataclass(frozen=True)
class ParsedEdit:
    """One `NAME old -> new` part of a description."""

    name: str
    old: str
    new: str
    old_value: Any
    new_value: Any

    @property
    def direction(self) -> str:
        return direction_of(self.old_value, self.new_value)

    @property
    def arm(self) -> tuple[str, str]:
        return (self.name, self.direction)

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, repr(self.new_value))


# ------------------------------------------------------------------ literals


def _eval(node: ast.AST) -> Any:
    """The value of a literal expression this module can edit; ValueError for anything else."""
    if isinstance(node, ast.Constant) and type(node.value) in (bool, int, float, str):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        if isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float):
            return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exp = node.left, node.right
        if all(isinstance(n, ast.Constant) and type(n.value) is int for n in (base, exp)) and 0 <= exp.value <= 64:
            return base.value**exp.value
    if isinstance(node, (ast.Tuple, ast.List)) and node.elts:
        values = tuple(_eval(e) for e in node.elts)
        if not any(isinstance(v, tuple) for v in values):
            return values
    raise ValueError(f"not an editable literal: {ast.dump(node)[:80]}")


def literal_value(text: str) -> Any:
    """Evaluate a literal's source text (`0.04`, `2**19`, `"SSSL"`, `(0.8, 0.95)`)."""
    try:
        return _eval(ast.parse(text.strip(), mode="eval").body)
    except SyntaxError as exc:
        raise ValueError(f"not a literal: {text!r}") from exc


def edit_key(name: str, value_text: str) -> tuple[str, str]:
    """Identity of an edit: the name and the new value (canonical, so `2**20` == `1048576`)."""
    try:
        return (name, repr(literal_value(value_text)))
    except ValueError:
        return (name, " ".join(value_text.split()))


def direction_of(old: Any, new: Any) -> str:
    """The arm direction of a change from `old` to `new`."""
    if isinstance(old, bool) or isinstance(new, bool):
        return "flip"
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return "up" if new > old else "down" if new < old else "alt"
    if isinstance(old, str) and isinstance(new, str):
        return "up" if len(new) > len(old) else "down" if len(new) < len(old) else "alt"
    if isinstance(old, tuple) and isinstance(new, tuple) and len(old) == len(new):
        diff = [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
        if len(diff) == 1:
            return f"{direction_of(old[diff[0]], new[diff[0]])}[{diff[0]}]"
    return "alt"


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text.strip())


# ------------------------------------------------------------------ discovery


def _profile_test(test: ast.AST) -> str | None:
    """`PROFILE == "cpu"` (either order) -> "cpu"; None when `test` is not a profile test."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return None
    sides = (test.left, test.comparators[0])
    for a, b in (sides, sides[::-1]):
        if isinstance(b, ast.Constant) and isinstance(b.value, str) and "PROFILE" in ast.unparse(a).upper():
            return b.value
    return None


def _profile_branches(node: ast.If) -> list[tuple[list[ast.stmt], frozenset[str], bool]] | None:
    """An `if PROFILE == ...: elif ...: else:` chain as (body, profiles, negated) branches."""
    branches: list[tuple[list[ast.stmt], frozenset[str], bool]] = []
    seen: set[str] = set()
    while True:
        name = _profile_test(node.test)
        if name is None:
            return branches or None
        branches.append((node.body, frozenset({name}), False))
        seen.add(name)
        if len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If) and _profile_test(node.orelse[0].test):
            node = node.orelse[0]
            continue
        if node.orelse:
            branches.append((node.orelse, frozenset(seen), True))
        return branches


class _Source:
    def __init__(self, text: str):
        self.data = text.encode("utf-8")
        self.line_starts = [0]
        for line in self.data.splitlines(keepends=True):
            self.line_starts.append(self.line_starts[-1] + len(line))

    def offset(self, lineno: int, col: int) -> int:
        return self.line_starts[lineno - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def char_span(self, node: ast.AST, start: int) -> tuple[int, int]:
        a, b = self.span(node)
        return len(self.data[start:a].decode()), len(self.data[start:b].decode())


def _make_constant(src: _Source, name: str, node: ast.AST, lineno: int, profiles, negated) -> Constant | None:
    try:
        value = _eval(node)
    except ValueError:
        return None
    start, end = src.span(node)
    parts: tuple[tuple[int, int], ...] = ()
    if isinstance(node, ast.BinOp):
        form, parts = "pow", (src.char_span(node.right, start),)
    elif isinstance(node, (ast.Tuple, ast.List)):
        form, parts = "seq", tuple(src.char_span(e, start) for e in node.elts)
    else:
        form = type(value).__name__
    text = src.data[start:end].decode()
    return Constant(name, value, text, start, end, lineno, form, parts, profiles, negated)


Scope = tuple[frozenset[str] | None, bool]  # (profiles of the block or None for top level, negated)


def find_constants(text: str) -> list[tuple[str, Constant | None, Scope]]:
    """Every module-level assignment of an UPPER_CASE name, in source order, with its scope.

    `(name, None, scope)` marks an assignment this module cannot edit (not a literal, augmented,
    inside another compound statement): it hides earlier literal assignments of that name.
    Raises SyntaxError when `text` does not parse.
    """
    return list(_scan(text)[0])


@functools.lru_cache(maxsize=16)
def _scan(text: str) -> tuple[tuple[tuple[str, Constant | None, Scope], ...], frozenset[str]]:
    """(find_constants's list, the names the profile blocks test) of one parse of `text`."""
    tree = ast.parse(text)
    src = _Source(text)
    out: list[tuple[str, Constant | None, Scope]] = []
    tested: set[str] = set()

    def visit(stmts: Iterable[ast.stmt], profiles: frozenset[str] | None, negated: bool) -> None:
        for stmt in stmts:
            target, value = None, None
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                target, value = stmt.targets[0].id, stmt.value
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                target, value = stmt.target.id, stmt.value
            if target is not None:
                if NAME_RE.match(target):
                    const = _make_constant(src, target, value, stmt.lineno, profiles, negated)
                    out.append((target, const, (profiles, negated)))
                continue
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(stmt, ast.If) and profiles is None:
                branches = _profile_branches(stmt)
                if branches:
                    tested.update(n.id for n in ast.walk(stmt.test) if isinstance(n, ast.Name))
                    for body, names, neg in branches:
                        visit(body, names, neg)
                    continue
            for node in ast.walk(stmt):  # any other statement: names it binds become opaque
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and NAME_RE.match(node.id):
                    out.append((node.id, None, (profiles, negated)))

    visit(tree.body, None, False)
    return tuple(out), frozenset(tested)


def _applies(scope: Scope, profile: str | None) -> bool:
    profiles, negated = scope
    if profiles is None:
        return True
    return (profile not in profiles) if negated else (profile in profiles)


def effective_constants(text: str, profile: str | None = None) -> dict[str, Constant]:
    """The assignment of each editable constant that is in force for `profile`, by name."""
    return dict(_effective(text, profile))


@functools.lru_cache(maxsize=32)
def _effective(text: str, profile: str | None) -> tuple[tuple[str, Constant], ...]:
    assignments, profile_names = _scan(text)
    current: dict[str, Constant | None] = {}
    for name, const, scope in assignments:
        if _applies(scope, profile):
            current[name] = const
    return tuple((n, c) for n, c in current.items() if c is not None and n not in profile_names)


def tunable(name: str, exclude: Iterable[str] = DEFAULT_EXCLUDE, only: Iterable[str] | None = None) -> bool:
    """Whether a constant is a research knob (not a seed, log cadence, path, budget...)."""
    if only is not None:
        return name in set(only)
    return not any(f"_{part}_" in f"_{name}_" for part in exclude)


# ------------------------------------------------------------------ new values


def _is_pow2(v: int) -> bool:
    return v >= 1 and v & (v - 1) == 0


def _fmt_float(x: float, old_text: str, sig: int = 3) -> str:
    if x == 0:
        return "0.0"
    if "e" in old_text.lower():
        mant, exp = f"{x:.{sig - 1}e}".split("e")
        mant = mant.rstrip("0").rstrip(".") if "." in mant else mant
        return f"{mant}e{int(exp)}"
    return repr(float(f"{x:.{sig}g}"))


def _fmt_unit(x: float, old_text: str) -> str:
    """A value in (0, 1): near 1 keep two significant digits of 1 - x (0.974, 0.9995)."""
    if x <= 0.5:
        return _fmt_float(x, old_text)
    d = Decimal(f"{1 - x:.2g}")
    return repr(float(Decimal(1) - d))


def _is_unit(name: str, v: float) -> bool:
    return 0 <= v <= 1 and (any(h in name for h in UNIT_HINTS) or (v >= 0.8 and "DECAY" in name))


def _number_steps(name: str, v: Any, text: str, level: int) -> dict[str, str]:
    """New source texts for an int or float `v`, by direction, at `level`."""
    out: dict[str, str] = {}
    if type(v) is int:
        if v < 0:
            return out
        if _is_pow2(v) and not any(h in name for h in COUNT_HINTS):
            if level <= 1:
                out["up"] = str(v * 2 ** (level + 1))
                if v // 2 ** (level + 1) >= 1:
                    out["down"] = str(v // 2 ** (level + 1))
        elif v <= 16 or any(h in name for h in COUNT_HINTS):
            out["up"] = str(v + level + 1)
            if v - level - 1 >= 1:
                out["down"] = str(v - level - 1)
        else:
            f = LARGE_INT_FACTORS[level]
            out["up"], out["down"] = str(max(v + 1, round(v * f))), str(max(1, min(v - 1, round(v / f))))
        return out
    if not math.isfinite(v):
        return out
    if _is_unit(name, v):
        if v == 0:
            out["up"] = _fmt_float(ZERO_STEPS[True][level], text)
        elif v == 1:
            out["down"] = _fmt_unit(1 - ZERO_STEPS[True][level], text)
        else:
            logit = math.log(v / (1 - v))
            for direction, sign in (("up", 1), ("down", -1)):
                new = 1 / (1 + math.exp(-(logit + sign * math.log(2) * (level + 1))))
                out[direction] = _fmt_unit(new, text)
        return out
    if v == 0:
        out["up"] = _fmt_float(ZERO_STEPS[False][level], text)
        return out
    f = FLOAT_FACTORS[level]
    big, small = _fmt_float(v * f, text), _fmt_float(v / f, text)
    out["up"], out["down"] = (big, small) if v > 0 else (small, big)
    return out


def is_pattern(name: str, s: str) -> bool:
    """A pattern string worth varying: `SSSL`-like (uppercase, two letters at most) or a *PATTERN*."""
    if not (s and s.isalpha() and len(s) <= 2 * MAX_PATTERN_LEN):
        return False
    return (s.isupper() and len(set(s)) <= 2) or "PATTERN" in name


def _string_steps(name: str, s: str, text: str, level: int) -> dict[str, str]:
    """Longer (one more filler at the front) and shorter (drop the front) patterns.

    The filler is the first character; for S/L window patterns it is always "S", so the ladder
    is L, SL, SSL, SSSL, SSSSL...
    """
    if not is_pattern(name, s):
        return {}
    quote = text[0] if text[:1] in ("'", '"') and text[-1:] == text[0] else None
    fmt = (lambda t: f"{quote}{t}{quote}") if quote else repr
    filler = "S" if set(s) <= {"S", "L"} else s[0]
    n = level + 1
    out = {}
    if len(s) + n <= MAX_PATTERN_LEN:
        out["up"] = fmt(filler * n + s)
    if len(s) - n >= 1:
        out["down"] = fmt(s[n:])
    return out


def _steps(name: str, value: Any, text: str, level: int) -> dict[str, str]:
    if isinstance(value, bool):
        return {"flip": str(not value)} if level == 0 else {}
    if isinstance(value, (int, float)):
        return _number_steps(name, value, text, level)
    if isinstance(value, str):
        return _string_steps(name, value, text, level)
    return {}


def candidate_edits(const: Constant, max_level: int = 3) -> list[Edit]:
    """Every edit of one constant up to `max_level` step widths, smallest steps first."""
    edits: list[Edit] = []
    seen = {repr(const.value)}
    for level in range(max_level):
        news: list[str] = []
        if const.form == "pow":
            (a, b), = const.parts
            exp = int(const.text[a:b])
            for e in (exp + level + 1, exp - level - 1):
                if 0 <= e <= 64 and level <= 1:
                    news.append(const.text[:a] + str(e) + const.text[b:])
        elif const.form == "seq":
            for (a, b), elem in zip(const.parts, const.value):
                for new in _steps(const.name, elem, const.text[a:b], level).values():
                    news.append(const.text[:a] + new + const.text[b:])
        else:
            news.extend(_steps(const.name, const.value, const.text, level).values())
        for new in news:
            try:
                value = literal_value(new)
            except ValueError:
                continue
            if repr(value) in seen:
                continue
            seen.add(repr(value))
            direction = direction_of(const.value, value)
            edits.append(Edit(const.name, const.text, new, direction, level, const.start, const.end))
    return edits


def all_edits(text: str, profile: str | None = None, max_level: int = 3, exclude: Iterable[str] = DEFAULT_EXCLUDE,
              only: Iterable[str] | None = None) -> list[Edit]:
    """Candidate edits of every tunable effective constant of `text` for `profile`."""
    exclude = tuple(exclude)
    consts = effective_constants(text, profile)
    return [e for c in consts.values() if tunable(c.name, exclude, only) for e in candidate_edits(c, max_level)]


def coordinate(name: str, value: Any, direction: str = "") -> float | None:
    """Where a value sits on the scale its steps move along (log, logit for unit values, log of
    a pattern's length), so that distances between values mean "how many steps apart"."""
    if isinstance(value, tuple):
        m = re.search(r"\[(\d+)\]$", direction)
        return coordinate(name, value[int(m.group(1))]) if m and int(m.group(1)) < len(value) else None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        if 0 < value < 1 and _is_unit(name, value):
            return math.log(value / (1 - value))
        return math.log(value) if value > 0 and math.isfinite(value) else None
    if isinstance(value, str):
        return math.log(len(value)) if value else None
    return None


# ------------------------------------------------------------------ applying and describing


def apply_edits(text: str, edits: Iterable[Edit]) -> str:
    """`text` with each edit's value span replaced; raises ValueError when the result is not valid."""
    data = text.encode("utf-8")
    ordered = sorted(edits, key=lambda e: e.start, reverse=True)
    limit = len(data) + 1
    for e in ordered:
        if e.end > limit or data[e.start:e.end].decode() != e.old:
            raise ValueError(f"edit of {e.name} does not match the file (stale or overlapping)")
        data = data[: e.start] + e.new.encode("utf-8") + data[e.end:]
        limit = e.start
    new_text = data.decode("utf-8")
    try:
        ast.parse(new_text)
    except SyntaxError as exc:
        raise ValueError(f"edited file does not parse: {exc}") from exc
    return new_text


def describe(edits: Iterable[Edit]) -> str:
    return "; ".join(e.describe() for e in edits)


_PART_RE = re.compile(r"([A-Z][A-Z0-9_]*) (.+?) -> (.+)")
_CONFIRM_RE = re.compile(r"\s*confirm\b", re.IGNORECASE)


def is_confirmation(description: str) -> bool:
    """A confirmation run's description ("confirm #12 (...)"): a re-measurement, not an edit."""
    return bool(_CONFIRM_RE.match(description))


def parse_description(description: str) -> list[ParsedEdit]:
    """The `NAME old -> new` parts of a description (others, e.g. an LLM's prose, are skipped).

    A leading label ending in ": " (such as "re-apply #12: ") is tolerated. A confirmation's
    description ("confirm #12 (...)") has no parts: it measured an existing commit again.
    """
    if is_confirmation(description):
        return []
    out = []
    for part in description.split(";"):
        part = part.strip()
        m = _PART_RE.fullmatch(part) or _PART_RE.fullmatch(part.rsplit(": ", 1)[-1])
        if not m:
            continue
        name, old, new = m.groups()
        try:
            out.append(ParsedEdit(name, old.strip(), new.strip(), literal_value(old), literal_value(new)))
        except ValueError:
            continue
    return out
