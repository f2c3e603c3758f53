"""One run directory as the dashboard reads it: journal, heartbeat, logs and the git objects of diffs.

`RunSource(run_dir)` works on `.swarm/<tag>/` of a task repository during a run, after it, and on a
copy of that directory elsewhere (a laptop): the journal gives everything but the diffs, which need
the task repository (`run_dir/../..`, or `repo=`); without it a diff says it is not available. The
journal is re-read only when its size or modification time changed. Nothing here writes: no
journal append, no lock file, no git command that changes a ref, the index or a worktree.
Not covered: what the page shows (swarm.dashboard.snapshot), HTTP (swarm.dashboard.server).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from swarm.journal import EventType, read_events
from swarm.proc import read_end
from swarm.runlock import liveness
from swarm.table import RunTable

LOG_TAIL_BYTES = 64_000
LOG_TAIL_LINES = 200
DIFF_MAX_CHARS = 200_000
_RETIRED = re.compile(r"^(\S+) retired: ")


@dataclass(frozen=True)
class Reading:
    """The journal as of one read: its table, and what the latest session says."""

    table: RunTable
    session_workers: int | None  # workers the latest start / resume asked for (None: not journaled)
    retired: tuple[str, ...]  # workers retired since the latest start / resume


class Phase(str, Enum):
    WAITING = "waiting"  # no journal yet
    RUNNING = "running"  # a coordinator's heartbeat is fresh
    STOPPED = "stopped"  # the journal records the stop
    NOT_RUNNING = "not running"  # no stop recorded and no fresh heartbeat: the coordinator died (or a copy)


@dataclass(frozen=True)
class RunStatus:
    """The run-state header: running / stopped and why, and when the journal last moved."""

    state: Phase
    detail: str
    last_event_t: float | None
    heartbeat_t: float | None


class RunSource:
    """Read-only access to one run directory; safe to call from several threads."""

    def __init__(self, run_dir: str | Path, repo: str | Path | None = None):
        self.run_dir = Path(run_dir).resolve()
        self.repo_path = Path(repo).resolve() if repo is not None else self.run_dir.parent.parent
        self.journal = self.run_dir / "journal.jsonl"
        self._lock = threading.Lock()
        self._key: tuple[int, int] | None = None
        self._reading: Reading | None = None
        self._repo = None

    @property
    def tag(self) -> str:
        return self.run_dir.name

    def read(self) -> Reading | None:
        """The journal's current table (None: no journal yet), re-read only when the file changed."""
        try:
            st = self.journal.stat()
        except FileNotFoundError:
            return None
        key = (st.st_size, st.st_mtime_ns)
        with self._lock:
            if key != self._key or self._reading is None:
                events = read_events(self.journal)
                self._reading = Reading(RunTable.from_events(events), *_session(events))
                self._key = key
            return self._reading

    def run_state(self, reading: Reading | None, now: float | None = None) -> RunStatus:
        now = now or time.time()
        if reading is None:
            return RunStatus(Phase.WAITING, "no journal yet: the run has not started", None, None)
        s = reading.table.state
        alive, holder = liveness(self.run_dir, now)
        beat = holder.heartbeat if holder is not None else None
        if s.stopped:
            return RunStatus(Phase.STOPPED, s.stop_reason or "stopped", s.last_event_t, beat)
        if alive == "running":
            return RunStatus(Phase.RUNNING, f"coordinator {holder.describe(now)}", s.last_event_t, beat)
        seen = beat if beat is not None else s.last_event_t
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seen)) if seen else "never"
        return RunStatus(Phase.NOT_RUNNING, f"no stop recorded; coordinator last seen {when} (--resume continues it)",
                        s.last_event_t, beat)

    # ---- one experiment: its diff against its parent and the tail of its log ------------------

    def detail(self, exp_id: int) -> dict[str, Any] | None:
        """What the page shows for one experiment (None: no such experiment)."""
        reading = self.read()
        if reading is None:
            return None
        table = reading.table
        rows = table.experiments[table.experiments["exp_id"] == exp_id]
        if rows.empty:
            running = table.running[table.running["exp_id"] == exp_id]
            if running.empty:
                return None
            row = running.iloc[0]
            return {"exp_id": exp_id, "status": "running", "description": row["description"], "parent": row["parent"],
                    "commit": "", "diff": "(running: not committed yet)", "log": self.log_tail(exp_id, ""),
                    "error": "", "reason": ""}
        row = rows.iloc[0]
        return {"exp_id": exp_id, "status": row["status"], "description": row["description"], "parent": row["parent"],
                "commit": row["commit"], "diff": self.diff(row["parent"], row["commit"]),
                "log": self.log_tail(exp_id, row["log_path"]), "error": row["error"], "reason": row["reason"]}

    def diff(self, parent: str, commit: str) -> str:
        if not commit:
            return "(no commit: nothing was applied)"
        if commit == parent:
            return "(the parent itself: a baseline or a re-measurement changes nothing)"
        repo = self._git()
        if repo is None:
            return f"(diff not available: no git repository at {self.repo_path})"
        from swarm import gitops

        if not (gitops.has_commit(repo, parent) and gitops.has_commit(repo, commit)):
            return f"(diff not available: {commit[:7]} or its parent {parent[:7]} is not in {self.repo_path})"
        try:
            text = repo.git.diff("--no-color", "--no-ext-diff", "--no-textconv", parent, commit)
        except Exception as exc:  # noqa: BLE001 - any git failure is shown, never raised to the page
            return f"(diff not available: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        if len(text) > DIFF_MAX_CHARS:
            text = text[:DIFF_MAX_CHARS] + f"\n... (diff cut at {DIFF_MAX_CHARS} characters)"
        return text or "(no difference)"

    def _git(self):
        if self._repo is None:
            if not (self.repo_path / ".git").exists():
                return None
            from swarm import gitops

            try:
                self._repo = gitops.open_repo(self.repo_path)
            except Exception:  # noqa: BLE001 - not a usable checkout: no diffs
                return None
        return self._repo

    def log_tail(self, exp_id: int, log_path: str) -> str:
        """The last lines of the experiment's log: `logs/<id>.log` of the run directory (a log the
        journal names elsewhere is read only when it lies inside the run directory)."""
        candidates = [self.run_dir / "logs" / f"{exp_id}.log"]
        if log_path:
            recorded = Path(log_path).resolve()
            if recorded.is_relative_to(self.run_dir):
                candidates.append(recorded)
        for path in candidates:
            data = read_end(path, LOG_TAIL_BYTES)
            if data is not None:
                lines = data.decode("utf-8", errors="replace").splitlines()
                return "\n".join(lines[-LOG_TAIL_LINES:])
        return "(no log)"


def _session(events: list[dict[str, Any]]) -> tuple[int | None, tuple[str, ...]]:
    """(workers asked for, workers retired) of the latest start or resume."""
    starts = (EventType.RUN_STARTED.value, EventType.RUN_RESUMED.value)
    workers, retired = None, []
    for e in events:
        if e["event"] in starts:
            asked = (e.get("config") or {}).get("workers")
            workers = int(asked) if asked is not None else workers
            retired = []
        elif e["event"] == EventType.NOTE.value:
            m = _RETIRED.match(str(e.get("text", "")))
            if m and m.group(1) not in retired:
                retired.append(m.group(1))
    return workers, tuple(retired)
