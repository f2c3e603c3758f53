"""What an agent is told each turn: pure functions from an `AgentContext` to messages or a prompt.

`build_messages(ctx, budget)` gives the LLM agent's chat messages: a system message (program.md
plus the reply format) and one user message (task, baseline and the measurement noise sigma, the
swarm's history as a small table marking confirmed results with their mean over repeated runs,
the experiments running now on the same baseline (not to be repeated), this worker's last
failure, the current mutable file(s)). `build_command_prompt(ctx, budget)` gives the single text
prompt for a coding CLI that edits the worktree itself. With `ctx.reapply` set, both ask for no
new idea but for that lost win's change (its description and diff) re-applied on the current
file; `reapply_description` labels the answer `re-apply #N: ...`.

Tokens are estimated as characters / 4. Within the budget the program, the instructions, the
current file, the running experiments and the change to re-apply are always included (the last
two capped in size); the history table is filled best-first then newest-first, so the oldest rows
are the first dropped; the failure log tail is shortened last. Not covered: the model call,
applying the reply (swarm.edits).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from swarm.agents.base import AgentContext
from swarm.records import HistoryEntry, InFlight, Reapply, Status

CHARS_PER_TOKEN = 4
DEFAULT_BUDGET = 32_000  # tokens
BEST_ROWS = 8  # the best experiments always come first in the history table
FAILURE_CHARS = 4_000  # at most this much of the last failure's log tail
MIN_FAILURE_CHARS = 600
IN_FLIGHT_ROWS = 32  # at most this many running experiments are listed
REAPPLY_DIFF_CHARS = 12_000  # at most this much of the diff of a change to re-apply
RANKED = (Status.KEEP, Status.DISCARD, Status.PENDING)  # measured results that can be among the best
STATUS_NOTES = {  # shown under the table for the statuses it holds
    Status.PENDING: "pending = measured, waiting for another measurement before keep or discard",
    Status.REJECTED: "rejected = the referee refused the run (it broke a rule: time budget, data, causality)",
    Status.DUPLICATE: "duplicate = the same change already ran or was running on that baseline",
    Status.INTERRUPTED: "interrupted = the run stopped while it ran (no result)",
}

FALLBACK_PROGRAM = (
    "You are a research agent. Improve the task's metric by editing only the mutable file(s). "
    "Every experiment runs for a fixed time budget; propose one focused change at a time."
)


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def messages_tokens(messages: Sequence[dict]) -> int:
    return sum(estimate_tokens(str(m.get("content", ""))) + 4 for m in messages)


def reply_format(path: str) -> str:
    """The reply format the LLM agent asks for (appended to the system prompt)."""
    return f"""## Reply format (required)

Reply with one line `Description: <what you change and why, under 100 characters>`, then one or
more SEARCH/REPLACE blocks that edit {path}:

{path}
<<<<<<< SEARCH
<lines copied exactly from the current file, enough to be unique>
=======
<the lines that replace them>
>>>>>>> REPLACE

Blocks are applied in order; each SEARCH must match exactly one place in the file. Keep blocks
small. To insert, SEARCH the neighbouring lines and repeat them in REPLACE. Only if you rewrite
most of the file, send instead the complete new file in one ```python fenced block. No other
files may change."""


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.4g}" if signed else f"{x:.6g}"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def value_of(h: HistoryEntry) -> float | None:
    """The entry's commit metric as the table shows it: the mean of its measurements, else its own."""
    return h.mean if h.mean is not None else h.metric


def delta_of(h: HistoryEntry) -> float | None:
    value = value_of(h)
    if value is None or h.parent_metric is None:
        return None
    return value - h.parent_metric


def _better_key(direction: str):
    def key(h: HistoryEntry) -> float:
        return value_of(h) if direction == "min" else -value_of(h)  # type: ignore[operator]

    return key


def history_rows(ctx: AgentContext) -> list[HistoryEntry]:
    """History entries in priority order: the best measured ones first, then newest to oldest."""
    measured = [h for h in ctx.history if value_of(h) is not None and h.status in RANKED]
    best = sorted(measured, key=_better_key(ctx.task.direction))[:BEST_ROWS]
    seen = {h.exp_id for h in best}
    rest = [h for h in reversed(ctx.history) if h.exp_id not in seen]
    return best + rest


def format_history(ctx: AgentContext, rows: Sequence[HistoryEntry]) -> str:
    """The history table (rows shown in experiment order) with a short legend above it."""
    if not ctx.history:
        return "No experiments have finished yet."
    counts: dict[str, int] = {}
    for h in ctx.history:
        counts[h.status.value] = counts.get(h.status.value, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    better = "lower" if ctx.task.direction == "min" else "higher"
    notes = [note for status, note in STATUS_NOTES.items() if status.value in counts]
    lines = [
        f"{len(ctx.history)} experiments finished ({summary}); showing {len(rows)}: the best and the most recent.",
        f"{ctx.task.metric} = the mean of all `runs` measurements of that commit (+- its standard error when "
        "measured more than once); `ok` after runs = confirmed (decided on repeated measurements or by a clear "
        f"margin), a single unconfirmed run may be luck. delta = {ctx.task.metric} minus its baseline's "
        f"({better} is better); base `cur` = started from the current baseline.",
    ]
    if notes:
        lines.append("; ".join(notes) + ".")
    lines += [
        "",
        f"| exp | worker | agent | status | {ctx.task.metric} | delta | runs | base | description |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(ctx, h) for h in sorted(rows, key=lambda h: h.exp_id)]
    return "\n".join(lines)


def _row(ctx: AgentContext, h: HistoryEntry) -> str:
    base = "cur" if h.parent == ctx.baseline_commit else "old"
    value = value_of(h)
    shown = _fmt(value)
    if value is not None and h.runs >= 2 and ctx.noise:
        shown += f" +-{ctx.noise / h.runs ** 0.5:.2g}"
    runs = "-" if value is None else f"{h.runs}{' ok' if h.confirmed else ''}"
    return (
        f"| {h.exp_id} | {h.worker} | {_one_line(h.agent, 24)} | {h.status.value} | {shown} "
        f"| {_fmt(delta_of(h), True)} | {runs} | {base} | {_one_line(h.description, 90)} |"
    )


def _fit_history(ctx: AgentContext, budget_tokens: int) -> str:
    """The table with as many rows as fit, taken in `history_rows` priority order."""
    used = estimate_tokens(format_history(ctx, [])) + 20  # header; the row count may grow a digit
    rows: list[HistoryEntry] = []
    for h in history_rows(ctx):
        used += estimate_tokens(_row(ctx, h)) + 1
        if used > budget_tokens:
            break
        rows.append(h)
    return format_history(ctx, rows)


def format_baseline(ctx: AgentContext) -> str:
    t = ctx.task
    goal = "lowest" if t.direction == "min" else "highest"
    parts = [
        f"Task: {t.name}. Goal: the {goal} `{t.metric}` after a fixed training budget of {t.time_budget:g} s "
        f"(hard timeout {t.hard_timeout:g} s). You may edit only: {', '.join(t.mutable_files)}.",
    ]
    if ctx.profile:
        parts.append(f"Profile: {ctx.profile}.")
    metric = _fmt(ctx.baseline_metric) if ctx.baseline_metric is not None else "not measured yet"
    parts.append(f"Current baseline: commit {ctx.baseline_commit[:12]}, {t.metric} = {metric}.")
    if ctx.noise is not None:
        parts.append(
            f"Noise: measurements of the same commit vary by about sigma = {ctx.noise:.4g}; a difference "
            f"smaller than ~2 sigma ({2 * ctx.noise:.2g}) is noise, so aim for changes that could win by more."
        )
    return " ".join(parts)


def format_in_flight(ctx: AgentContext, limit: int = IN_FLIGHT_ROWS) -> str:
    """The experiments running now that started from the current baseline ("" when none)."""
    running: Sequence[InFlight] = ctx.in_flight_on_baseline
    if not running:
        return ""
    lines = [f"- #{f.exp_id} on {f.worker} ({_one_line(f.agent, 24)}): {_one_line(f.description, 120)}"
             for f in running[:limit]]
    if len(running) > limit:
        lines.append(f"- ... and {len(running) - limit} more")
    return "\n".join(lines)


def format_reapply(r: Reapply, max_chars: int = REAPPLY_DIFF_CHARS) -> str:
    """The lost win to re-apply: its description and its diff (the diff's head when long)."""
    diff = r.diff.strip("\n")
    if len(diff) > max_chars:
        diff = diff[:max_chars] + f"\n... ({len(r.diff) - max_chars} more characters of the diff not shown)"
    fence = "````" if "```" in diff else "```"
    shown = f"{fence}diff\n{diff}\n{fence}" if diff else "(no diff available: go by the description)"
    return (f"Experiment #{r.exp_id} improved the metric: {_one_line(r.description, 200)}\n\n"
            f"Its change, as a diff against the file it was made on:\n\n{shown}")


def reapply_description(r: Reapply, description: str) -> str:
    """An agent's description of its re-apply, labelled `re-apply #N: ...` (once)."""
    label = f"re-apply #{r.exp_id}"
    text = " ".join(description.split())
    if re.match(rf"re-?apply #{r.exp_id}\b", text, re.IGNORECASE):
        return text
    return f"{label}: {text or _one_line(r.description, 160)}"


def format_failure(text: str | None, max_chars: int = FAILURE_CHARS) -> str:
    if not text:
        return ""
    text = text.strip()
    if len(text) > max_chars:
        text = "...\n" + text[-max_chars:]
    return text


def _file_section(ctx: AgentContext) -> str:
    parts = []
    for path in ctx.task.mutable_files:
        text = ctx.files.get(path, "")
        fence = "````" if "```" in text else "```"
        parts.append(f"## Current {path}\n\n{fence}python\n{text.rstrip()}\n{fence}")
    return "\n\n".join(parts)


def _user_message(ctx: AgentContext, history: str, failure: str, closing: str, with_files: bool) -> str:
    sections = [f"## Situation\n\n{format_baseline(ctx)}", f"## Swarm history\n\n{history}"]
    running = format_in_flight(ctx)
    if running:
        sections.append(
            "## Running now on other workers: do not repeat these\n\n"
            "These experiments started from the current baseline and have no result yet:\n\n" + running
        )
    if failure:
        sections.append(
            "## Your last experiment failed\n\nIt crashed, timed out, was invalid or was rejected by the referee; "
            f"the end of its log:\n\n```\n{failure}\n```\n\nFix the cause or try something else."
        )
    if with_files:
        sections.append(_file_section(ctx))
    sections.append(closing)
    return "\n\n".join(sections)


def _fit(ctx: AgentContext, budget: int, fixed_tokens: int, closing: str, with_files: bool) -> str:
    """The user message with history and failure fitted into what the budget leaves."""
    failure = format_failure(ctx.last_failure)
    skeleton = _user_message(ctx, "", failure, closing, with_files)
    left = budget - fixed_tokens - estimate_tokens(skeleton)
    if left < 0 and failure:  # shorten the failure tail, but keep its last lines
        keep = max(MIN_FAILURE_CHARS, len(failure) + left * CHARS_PER_TOKEN)
        failure = format_failure(ctx.last_failure, keep)
        left = budget - fixed_tokens - estimate_tokens(_user_message(ctx, "", failure, closing, with_files))
    history = _fit_history(ctx, max(0, left))
    return _user_message(ctx, history, failure, closing, with_files)


def _reapply_closing(ctx: AgentContext, how: str, answer: str) -> str:
    r = ctx.reapply
    assert r is not None
    return (
        f"## Re-apply a lost win\n\n{format_reapply(r)}\n\n"
        f"Its change no longer merges onto the current baseline (the best moved and touched the same lines). "
        f"Do NOT propose a new idea this time: re-apply #{r.exp_id}'s change on top of the current "
        f"{', '.join(ctx.task.mutable_files)}, keeping everything else the current file has. Where the current "
        f"file changed the same lines, combine both changes when they are compatible, else make those lines do "
        f"what #{r.exp_id} made them do. {how} {answer}"
    )


def build_messages(ctx: AgentContext, budget: int = DEFAULT_BUDGET) -> list[dict[str, str]]:
    """Chat messages for one proposal: [system, user], within about `budget` tokens.

    The program, the reply format and the current file(s) are never dropped, so a budget smaller
    than those alone is exceeded.
    """
    path = ctx.task.mutable_files[0]
    system = f"{(ctx.program or FALLBACK_PROGRAM).rstrip()}\n\n{reply_format(path)}\n"
    if ctx.reapply is not None:
        closing = _reapply_closing(
            ctx, "Edit the current file shown above (SEARCH must match it, not the diff's old lines).",
            f"Answer in the reply format: `Description: re-apply #{ctx.reapply.exp_id}: <what it changes>`, "
            "then SEARCH/REPLACE blocks.",
        )
    else:
        closing = (
            f"Propose ONE experiment for the next run: a change to {path} that you expect to improve "
            f"`{ctx.task.metric}` within the fixed budget. Avoid repeating what the history shows was tried "
            "or what is running now. Answer in the reply format: the Description line, then SEARCH/REPLACE blocks."
        )
    user = _fit(ctx, budget, estimate_tokens(system) + 8, closing, with_files=True)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def build_command_prompt(ctx: AgentContext, budget: int = DEFAULT_BUDGET) -> str:
    """One text prompt for a coding CLI working in the worktree (it reads the files itself)."""
    paths = ", ".join(ctx.task.mutable_files)
    program_file = ctx.task.program_file
    if program_file and (Path(ctx.worktree) / program_file).is_file():
        intro = f"Read {program_file} in this directory first: it is your research protocol."
    elif ctx.program:
        intro = f"Your research protocol:\n\n{ctx.program.rstrip()}"
    else:
        intro = FALLBACK_PROGRAM
    rules = ("Change no other file. Do not run the training, do not commit, do not install anything: the swarm "
             "commits, runs and measures your change.")
    if ctx.reapply is not None:
        closing = _reapply_closing(
            ctx, f"Edit {paths} in place in this directory (it is the current baseline). {rules}",
            "When done, print as the first line of your final answer: "
            f"`Description: re-apply #{ctx.reapply.exp_id}: <what it changes>`.",
        )
    else:
        closing = (
            f"## What to do now\n\nMake ONE experiment's change by editing {paths} in place in this directory. "
            f"Do not repeat what the history shows was tried or what is running now. {rules} When done, print "
            "as the first line of your final answer: `Description: <what you changed and why, under 100 characters>`."
        )
    user = _fit(ctx, budget, estimate_tokens(intro) + 8, closing, with_files=False)
    return f"{intro}\n\n{user}\n"
