"""Coordinator state as a replay (a left fold) of the journal's events.

The coordinator applies every event it appends through `RunState.apply`, and a resumed
coordinator or `autoresearch status` builds the same state with `replay(read_events(...))`, so
what the run knows is exactly what the journal says. A compare run (swarm.lanes) keeps one best,
best history and combination queue per lane (events carry `lane`; events without one belong to
lane `main`, as in every shared run); the first-wave baseline and its noise are shared. Not covered: writing events (swarm.journal),
deciding (swarm.decisions), git or Ray.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from swarm.decisions import Assignment, Best
from swarm.errors import JournalError
from swarm.journal import EventType
from swarm.lanes import MAIN
from swarm.records import ExperimentRecord, HistoryEntry, Kind, Status, Usage


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
    lanes: list[str] = field(default_factory=lambda: [MAIN])  # from the run's config ("main" unless compare)
    bests: dict[str, Best] = field(default_factory=dict)  # lane -> tip of its best branch
    best_history: list[Best] = field(default_factory=list)  # every lane's advances, in order
    baseline_metric: float | None = None
    noise: float | None = None
    queue: list[dict[str, Any]] = field(default_factory=list)  # combinations not yet started (all lanes)
    combos: dict[int, dict[str, Any]] = field(default_factory=dict)  # every queued combination by combo_id
    combos_queued: int = 0
    notes: list[str] = field(default_factory=list)
    agent_errors: int = 0  # failed agent attempts (outages): no experiment, usage still counts
    agent_error_usage: Usage = field(default_factory=Usage)
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
        self.lanes = list(self.config.get("lanes") or [MAIN])
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
        a = self.assignments.get(r.exp_id)
        lost = r.status == Status.INTERRUPTED or bool(e.get("lost"))  # it never really ran: do it again
        if a is not None and a.combo_id is not None and lost and a.combo_id in self.combos:
            if all(c["combo_id"] != a.combo_id for c in self.queue):
                self.queue.insert(0, self.combos[a.combo_id])

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
        lane = e.get("lane", MAIN)
        best = Best(e["commit"], float(e["metric"]), e.get("exp_id"), lane)
        self.bests[lane] = best
        self.best_history.append(best)
        if lane not in self.lanes:
            self.lanes.append(lane)

    def _on_combination_queued(self, e: dict[str, Any]) -> None:
        combo = {"lane": MAIN, **{k: v for k, v in e.items() if k not in ("event", "t")}}
        self.queue.append(combo)
        self.combos[int(combo["combo_id"])] = combo
        self.combos_queued += 1

    def _on_combination_skipped(self, e: dict[str, Any]) -> None:
        self.notes.append(f"combination for #{e.get('exp_id')} skipped: {e.get('reason', '')}")

    def _on_note(self, e: dict[str, Any]) -> None:
        self.notes.append(str(e.get("text", "")))

    def _on_agent_error(self, e: dict[str, Any]) -> None:
        """A failed agent attempt: no experiment, but its usage counts; its assignment is withdrawn."""
        self.agent_errors += 1
        self.agent_error_usage = self.agent_error_usage + Usage(**e.get("usage", {}))
        exp_id = e.get("exp_id")
        if exp_id is not None and int(exp_id) not in self.verdicts:
            self.assignments.pop(int(exp_id), None)

    # ---- views ----------------------------------------------------------------------------

    @property
    def compare(self) -> bool:
        return bool(self.config.get("compare")) or self.lanes != [MAIN]

    @property
    def direction(self) -> str:
        return self.config.get("task", {}).get("direction", "min")

    @property
    def best(self) -> Best | None:
        """The best of a shared run; in a compare run the best over all lanes."""
        if not self.compare:
            return self.bests.get(MAIN)
        found = list(self.bests.values())
        if not found:
            return None
        pick = min if self.direction == "min" else max
        return pick(found, key=lambda b: b.metric)

    def lane_best(self, lane: str = MAIN) -> Best | None:
        return self.bests.get(lane)

    def lane_history(self, lane: str = MAIN) -> list[Best]:
        return [b for b in self.best_history if b.lane == lane]

    def queue_for(self, lane: str = MAIN) -> list[dict[str, Any]]:
        return [c for c in self.queue if c.get("lane", MAIN) == lane]

    @property
    def next_exp_id(self) -> int:
        """The lowest id not started (an id withdrawn after an agent outage is handed out again)."""
        if len(self.assignments) == max(self.assignments, default=0):
            return len(self.assignments) + 1
        return min(set(range(1, len(self.assignments) + 2)) - set(self.assignments))

    def total_usage(self) -> Usage:
        """What the agents cost so far: every reported experiment plus failed agent attempts."""
        total = self.agent_error_usage
        for r in self.verdicts.values():
            total = total + r.usage
        return total

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

    def history(self, limit: int | None = None, lane: str | None = None) -> tuple[HistoryEntry, ...]:
        """What agents see: finished experiments, oldest first; with `lane`, only that lane's
        (plus the shared first-wave baselines)."""
        records = self.finished_records()
        if lane is not None:
            records = [r for r in records if r.lane == lane or r.kind == Kind.BASELINE]
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
