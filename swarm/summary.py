"""The trainer's output contract, parsed in one function.

After training, a task prints a line `---` and then `key: value` lines (val_bpb,
training_seconds, total_seconds, peak_vram_mb, mfu_percent, total_tokens_M, num_steps,
num_params_M, depth, ...; the GPT referee adds attention (fa3|flex|sdpa: which attention kernel
ran, a string), handover_seconds and eval_seconds). The last `---` block in the output wins. A referee that refuses a run
exits with status REJECT_EXIT (3) and prints `rejected: <reason>` last.
"""

from __future__ import annotations

import math
import re

_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\s*(.*?)\s*$")


def parse_summary(output: str) -> dict[str, float | str]:
    """Return the key: value pairs after the last `---` line ({} when there is none).

    Numeric values become floats; anything else stays a string. Parsing stops at the first line
    that is neither blank nor `key: value`.
    """
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if not starts:
        return {}
    result: dict[str, float | str] = {}
    for line in lines[starts[-1] + 1 :]:
        if not line.strip():
            continue
        m = _LINE.match(line.strip())
        if not m:
            break
        key, raw = m.groups()
        try:
            result[key] = float(raw)
        except ValueError:
            result[key] = raw
    return result


def metric_value(summary: dict[str, float | str], key: str) -> float | None:
    """The metric as a finite float, or None when missing, non-numeric, NaN or infinite."""
    value = summary.get(key)
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


REJECT_EXIT = 3  # the exit status of a referee's refusal (prepare.referee uses this one)
_REJECTED = re.compile(r"^rejected:\s*(.*?)\s*$")


def referee_rejection(returncode: int | None, output_tail: str) -> str | None:
    """The referee's one-line reason when it refused the run (exit status 3 and a last line
    `rejected: <reason>`), else None (measured, crashed, killed)."""
    if returncode != REJECT_EXIT:
        return None
    lines = [line.strip() for line in output_tail.splitlines() if line.strip()]
    m = _REJECTED.match(lines[-1]) if lines else None
    return (m.group(1) or "(no reason given)") if m else None
