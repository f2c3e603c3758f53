"""Coordinator state as a replay (a left fold) of the journal's events.

The coordinator applies every event it appends through `RunState.apply`, and a resumed
coordinator or `autoresearch status` builds the same state with `replay(read_events(...))`, so
what the run knows is exactly what the journal says. Not covered: writing events (swarm.journal),
deciding (swarm.decisions), git or Ray.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from swarm.decisions import Assignment, Best
from swarm.errors import JournalError
from swarm.journal import EventType
from swarm.records import ExperimentRecord, HistoryEntry, Kind, Status


@dataclass
class RunState:
    tag: str = ""
    base_commit: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
    wave_size: int = 0  # first-wave baseline runs (the worker count at run start)
    assignments: dict[int, Assignment] = field(default_factory=dict)  # every started experiment
    verdicts: dict[int, ExperimentRecord] = field(default_factory=dict)  # as workers reported them
    records: dict[int, ExperimentRecord] = field(default_factory=dict)  # final (status decided)
    order: list[int] = field(default_factory=list)  # exp ids in the order they were decided
    reasons: dict[int, str] = field(default_factory=dict)
    best: Best | None = None
    best_history: list[Best] = field(default_factory=list)
    baseline_metric: float | None = None
    noise: float | None = None
    queue: list[dict[str, Any]] = field(default_factory=list)  # combinations not yet started
    combos_queued: int = 0
    notes: list[str] = field(default_factory=list)
    sessions: int = 0  # run_started + run_resumed events
    stopped: bool = False
    stop_reason: str = ""
    last_event_t: float = 0.0
    events: int = 0

    # ---- the fold -------------------------------------------------------------------------

    def apply(self, event: dict[str, Any]) -> None:
        kind = EventType(event["event"])
        self.events += 1
        self.last_event_t = float(event.get("t", self.last_event_t))
        handler = getattr(self, f"_on_{kind.value}")
        handler(event)

    def _on_run_started(self, e: dict[str, Any]) -> None:
        self.tag = e["tag"]
        self.base_commit = e["base_commit"]
        self.config = dict(e.get("config", {}))
        self.wave_size = int(self.config.get("workers", 1))
        self.started_at = float(e.get("t", 0.0))
        self.sessions += 1
        self.stopped = False

    def _on_run_resumed(self, e: dict[str, Any]) -> None:
        self.sessions += 1
        self.stopped = False
        self.stop_reason = ""

    def _on_run_stopped(self, e: dict[str, Any]) -> None:
        self.stopped = True
        self.stop_reason = e.get("reason", "")

    def _on_experiment_started(self, e: dict[str, Any]) -> None:
        a = Assignment.from_dict(e["assignment"])
        if a.exp_id in self.assignments:
            raise JournalError(f"experiment {a.exp_id} started twice")
        self.assignments[a.exp_id] = a
        if a.combo_id is not None:
            self.queue = [c for c in self.queue if c["combo_id"] != a.combo_id]

    def _on_experiment_finished(self, e: dict[str, Any]) -> None:
        r = ExperimentRecord.from_dict(e["record"])
        if r.exp_id in self.verdicts:
            raise JournalError(f"experiment {r.exp_id} finished twice")
        self.verdicts[r.exp_id] = r

    def _on_decision(self, e: dict[str, Any]) -> None:
        exp_id = int(e["exp_id"])
        if exp_id not in self.verdicts:
            raise JournalError(f"decision for experiment {exp_id} before its result")
        if exp_id in self.records:
            raise JournalError(f"experiment {exp_id} decided twice")
        self.records[exp_id] = self.verdicts[exp_id].replace(status=Status(e["status"]))
        self.reasons[exp_id] = e.get("reason", "")
        self.order.append(exp_id)

    def _on_baseline_measured(self, e: dict[str, Any]) -> None:
        self.baseline_metric = float(e["metric"])
        self.noise = float(e["noise"])

    def _on_best_advanced(self, e: dict[str, Any]) -> None:
        self.best = Best(e["commit"], float(e["metric"]), e.get("exp_id"))
        self.best_history.append(self.best)

    def _on_combination_queued(self, e: dict[str, Any]) -> None:
        self.queue.append({k: v for k, v in e.items() if k not in ("event", "t")})
        self.combos_queued += 1

    def _on_combination_skipped(self, e: dict[str, Any]) -> None:
        self.notes.append(f"combination for #{e.get('exp_id')} skipped: {e.get('reason', '')}")

    def _on_note(self, e: dict[str, Any]) -> None:
        self.notes.append(str(e.get("text", "")))

    # ---- views ----------------------------------------------------------------------------

    @property
    def next_exp_id(self) -> int:
        return max(self.assignments, default=0) + 1

    def running(self) -> list[Assignment]:
        """Experiments started but not finished (in a live run: in flight; else: interrupted)."""
        return [a for i, a in sorted(self.assignments.items()) if i not in self.verdicts]

    def baselines_to_start(self, running: Iterable[Assignment] | None = None) -> int:
        """First-wave runs still to hand out: wave size minus finished (not interrupted) and running."""
        done = sum(
            1 for r in self.verdicts.values() if r.kind == Kind.BASELINE and r.status != Status.INTERRUPTED
        )
        live = running if running is not None else self.running()
        in_flight = sum(1 for a in live if a.kind == Kind.BASELINE)
        return max(0, self.wave_size - done - in_flight)

    def baseline_metrics(self) -> list[float]:
        return [
            r.metric
            for i, r in sorted(self.records.items())
            if r.kind == Kind.BASELINE and r.status == Status.KEEP and r.metric is not None
        ]

    def finished_records(self) -> list[ExperimentRecord]:
        """Final records in the order they were decided."""
        return [self.records[i] for i in self.order]

    def counts(self) -> Counter:
        return Counter(r.status.value for r in self.records.values())

    def history(self, limit: int | None = None) -> tuple[HistoryEntry, ...]:
        records = self.finished_records()
        if limit is not None:
            records = records[-limit:]
        return tuple(
            HistoryEntry(
                exp_id=r.exp_id,
                worker=r.worker,
                agent=r.agent,
                description=r.description,
                status=r.status,
                metric=r.metric,
                parent=r.parent,
                parent_metric=r.parent_metric,
            )
            for r in records
        )


def replay(events: Iterable[dict[str, Any]]) -> RunState:
    state = RunState()
    for event in events:
        state.apply(event)
    return state
