"""The run's append-only event log: `.swarm/<tag>/journal.jsonl`, one JSON object a line.

Writes happen under a file lock with flush + fsync, so a crash loses at most the line being
written. That torn last line (no newline; or a newline but a body that is not valid JSON) is
ignored on read and cut off before the next append: reader and writer share one definition of it
(`torn_tail_start`), so the writer repairs exactly what the reader ignores. A bad line anywhere
else is corruption (`JournalError`).

Every event is a dict with `event` (one of `EventType`) and `t` (unix seconds); the bodies are
documented at each `EventType`. `lane` (compare runs, swarm.lanes) is absent from journals
written before lanes existed and then means `main`, the one lane of a shared run. Not covered: what the events mean for the run (`swarm.state`
replays them into coordinator state).
"""

from __future__ import annotations

import json
import math
import os
import time
from enum import Enum
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock

from swarm.errors import JournalError


class EventType(str, Enum):
    RUN_STARTED = "run_started"  # tag, base_commit, config (SwarmConfig.to_dict())
    RUN_RESUMED = "run_resumed"  # config (the resumed invocation's settings)
    RUN_STOPPED = "run_stopped"  # reason: done | max_experiments | hours | interrupted | error...
    EXPERIMENT_STARTED = "experiment_started"  # assignment (Assignment.to_dict(), files left out)
    EXPERIMENT_FINISHED = "experiment_finished"  # record (ExperimentRecord.to_dict(), worker verdict)
    # exp_id, status, reason, best_metric (the best it was judged against), z (the noise gate's score);
    # status "pending" (the gate wants another measurement) is followed by the final one later
    DECISION = "decision"
    BASELINE_MEASURED = "baseline_measured"  # commit, metric (mean), noise (standard deviation or None), exp_ids
    BEST_ADVANCED = "best_advanced"  # commit, metric, exp_id (None: baseline), previous_commit, previous_metric, lane
    # commit, metric (the new mean of all its runs), runs, exp_id (the re-measurement), lane: the best's
    # recorded metric follows its mean as it is re-measured (it is promoted on its luckiest draws)
    BEST_MEASURED = "best_measured"
    # combo_id, parent, parent_metric, files, description, sources, lane; with `reapply` ({exp_id,
    # description, diff}) and no files: a lost win whose agent re-applies it on the best (they conflicted)
    COMBINATION_QUEUED = "combination_queued"
    COMBINATION_SKIPPED = "combination_skipped"  # exp_id, reason, lane
    NOTE = "note"  # text
    AGENT_ERROR = "agent_error"  # worker, agent, error, usage, seconds, prefetched, exp_id (withdrawn: nothing ran), retry_in


class Journal:
    """Appends events to one journal file; safe against concurrent writers and torn tails."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock")

    def append(self, event: EventType | str, **body: Any) -> dict[str, Any]:
        """Write one event (with `event` and `t` added) durably; return it."""
        record = _finite({"event": EventType(event).value, "t": time.time(), **body})
        line = json.dumps(record, separators=(",", ":"), allow_nan=False, default=_json_default) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            with open(self.path, "ab+") as f:
                _cut_torn_tail(f)
                f.write(line.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
        return record

    def read(self) -> list[dict[str, Any]]:
        return read_events(self.path)


def read_events(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete events of a journal, oldest first ([] when the file does not exist)."""
    return list(iter_events(path))


def iter_events(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return
    # Everything before the torn tail (if any) ends in "\n": the split leaves an empty last element.
    complete = data[: torn_tail_start(data)].split(b"\n")[:-1]
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
            raise JournalError(f"{path}: line {number} is not valid JSON ({exc})") from None
        if not isinstance(event, dict) or "event" not in event:
            raise JournalError(f"{path}: line {number} is not an event object")
        yield event


def torn_tail_start(data: bytes) -> int:
    """Where the torn last line of journal bytes `data` starts (`len(data)`: there is none).

    The torn last line is the one a crash mid-append leaves: a last line without its newline, or
    else a newline-terminated last line that is not valid JSON (the newline reached the disk, part
    of the body did not). Only that one line: a bad line before it is corruption. `data` may be
    the end of a file only when it holds the newline before its last line.
    """
    if not data:
        return 0
    if not data.endswith(b"\n"):
        return data.rfind(b"\n") + 1
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    line = data[start:-1]
    if not line.strip():
        return len(data)
    try:
        json.loads(line)
    except ValueError:
        return start
    return len(data)


def _cut_torn_tail(f) -> None:
    """Truncate the torn last line (`torn_tail_start`) so the next append starts clean."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    window = 4096
    while True:  # read enough of the end to hold the newline before the last line (lines are small)
        start = max(0, size - window)
        f.seek(start)
        block = f.read(size - start)
        if start == 0 or b"\n" in block[:-1]:
            break
        window *= 4
    cut = start + torn_tail_start(block)
    if cut < size:
        f.truncate(cut)


def _finite(obj: Any) -> Any:
    """Non-finite floats (a `val_bpb: nan` in a summary) become strings: the journal is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
