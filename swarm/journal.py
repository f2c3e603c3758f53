"""The run's append-only event log: `.swarm/<tag>/journal.jsonl`, one JSON object a line.

Writes happen under a file lock with flush + fsync, so a crash loses at most the line being
written; a torn last line (no newline, or not valid JSON) is ignored on read and cut off before
the next append. A bad line anywhere else is corruption (`JournalError`).

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
    lines = data.split(b"\n")
    # data ending in "\n" leaves an empty last element; anything else there is a torn line.
    complete, tail = lines[:-1], lines[-1]
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except json.JSONDecodeError as exc:
            if number == len(complete) and not tail:
                return  # newline written but body torn: treat as the torn last line
            raise JournalError(f"{path}: line {number} is not valid JSON ({exc})") from None
        if not isinstance(event, dict) or "event" not in event:
            raise JournalError(f"{path}: line {number} is not an event object")
        yield event
    del tail  # a torn last line: ignored


def _cut_torn_tail(f) -> None:
    """Truncate a partial last line (no trailing newline) so the next append starts clean."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    # Walk back to the previous newline (journal lines are small; read in chunks).
    pos = size
    chunk = 4096
    while pos > 0:
        start = max(0, pos - chunk)
        f.seek(start)
        block = f.read(pos - start)
        idx = block.rfind(b"\n")
        if idx >= 0:
            f.truncate(start + idx + 1)
            return
        pos = start
    f.truncate(0)


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
