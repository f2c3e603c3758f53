"""Coordinator state as a replay (a left fold) of the journal's events.

The coordinator applies every event it appends through `RunState.apply`, and a resumed
coordinator or `autoresearch status` builds the same state with `replay(read_events(...))`, so
what the run knows is exactly what the journal says. A compare run (swarm.lanes) keeps one best,
best history and combination queue per lane (events carry `lane`; events without one belong to
lane `main`, as in every shared run); the first-wave baseline and its noise are shared. The run's
settings (`config`) are the first start's with each resume's stacked on top (`stack_settings`, also
what `--resume` continues with). Not covered: writing events (swarm.journal),
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
from swarm.noise import Noise, Sample, pooled_noise
from swarm.records import ExperimentRecord, HistoryEntry, Kind, Status, Usage


@dataclass
class RunState:
    tag: str = ""
    base_commit: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # the first start's settings, each resume's on top
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
    noise: float | None = None  # sigma when the first wave was measured (live value: noise_model())
    measurements: dict[str, list[float]] = field(default_factory=dict)  # commit -> every clean measurement
    measured_by: dict[str, set] = field(default_factory=dict)  # commit -> workers that measured it
    pending: dict[str, list[int]] = field(default_factory=dict)  # candidate commit -> its pending exp ids
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
        self.wave_size = int(self.config.get("wave_size") or self.config.get("workers", 1))
        self.lanes = list(self.config.get("lanes") or [MAIN])
        self.started_at = float(e.get("t", 0.0))
        self.sessions += 1
        self.stopped = False

    def _on_run_resumed(self, e: dict[str, Any]) -> None:
        self.config = stack_settings(self.config, e.get("config") or {})
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
        if r.status == Status.KEEP and r.metric is not None and r.commit:  # a clean measurement
            self.measurements.setdefault(r.commit, []).append(float(r.metric))
            self.measured_by.setdefault(r.commit, set()).add(r.worker)
        a = self.assignments.get(r.exp_id)
        lost = r.status == Status.INTERRUPTED or bool(e.get("lost"))  # it never really ran: do it again
        if a is not None and a.combo_id is not None and lost and a.combo_id in self.combos:
            if all(c["combo_id"] != a.combo_id for c in self.queue):
                self.queue.insert(0, self.combos[a.combo_id])

    def _on_decision(self, e: dict[str, Any]) -> None:
        exp_id = int(e["exp_id"])
        if exp_id not in self.verdicts:
            raise JournalError(f"decision for experiment {exp_id} before its result")
        status = Status(e["status"])
        earlier = self.records.get(exp_id)
        if earlier is not None and earlier.status != Status.PENDING:
            raise JournalError(f"experiment {exp_id} decided twice")
        record = self.verdicts[exp_id].replace(status=status)
        self.records[exp_id] = record
        self.reasons[exp_id] = e.get("reason", "")
        if earlier is None:  # a pending experiment keeps its place when its final decision comes
            self.order.append(exp_id)
        waiting = self.pending.get(record.commit, [])
        if status == Status.PENDING:
            if exp_id not in waiting:
                self.pending[record.commit] = [*waiting, exp_id]
        elif exp_id in waiting:
            waiting.remove(exp_id)
            if not waiting:
                del self.pending[record.commit]

    def _on_baseline_measured(self, e: dict[str, Any]) -> None:
        self.baseline_metric = float(e["metric"])
        self.noise = float(e["noise"]) if e.get("noise") is not None else None

    def _on_best_advanced(self, e: dict[str, Any]) -> None:
        lane = e.get("lane", MAIN)
        best = Best(e["commit"], float(e["metric"]), e.get("exp_id"), lane)
        self.bests[lane] = best
        self.best_history.append(best)
        if lane not in self.lanes:
            self.lanes.append(lane)

    def _on_best_measured(self, e: dict[str, Any]) -> None:
        lane = e.get("lane", MAIN)
        best = self.bests.get(lane)
        if best is not None and best.commit == e["commit"]:
            self.bests[lane] = Best(best.commit, float(e["metric"]), best.exp_id, lane)

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
            a = self.assignments.pop(int(exp_id), None)
            if a is not None and a.combo_id is not None and a.combo_id in self.combos:  # nothing ran: queue it again
                if all(c["combo_id"] != a.combo_id for c in self.queue):
                    self.queue.insert(0, self.combos[a.combo_id])

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

    # ---- measurements and noise -------------------------------------------------------------

    def noise_model(self) -> Noise:
        """Sigma pooled from every commit measured more than once, as of now."""
        return pooled_noise(self.measurements.values())

    def sample(self, commit: str) -> Sample | None:
        """The mean of all clean measurements of `commit` (None: never measured)."""
        values = self.measurements.get(commit)
        return Sample.of(values) if values else None

    def pending_commits(self, lane: str = MAIN) -> list[str]:
        """Candidates of `lane` waiting for another measurement, oldest first."""
        found = [(ids[0], c) for c, ids in self.pending.items() if ids and self.records[ids[0]].lane == lane]
        return [c for _, c in sorted(found)]

    def confirm_seconds(self) -> tuple[float, float]:
        """(GPU seconds spent on confirmations, GPU seconds in all): time inside the task command."""
        total = confirm = 0.0
        for r in self.verdicts.values():
            total += r.task_seconds
            if r.kind == Kind.CONFIRM:
                confirm += r.task_seconds
        return confirm, total

    def confirm_share(self) -> float:
        confirm, total = self.confirm_seconds()
        return confirm / total if total > 0 else 0.0

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

    def counted_experiments(self) -> int:
        """Experiments that count towards --max-experiments: every started one except those recorded
        interrupted (a stop cut them short; they are run again). Finished ones count whatever their
        status (a crash, or one lost with its worker, used its GPU time) and running ones count while
        they run, so the limit is never overshot."""
        interrupted = sum(
            1 for i, r in self.verdicts.items() if r.status == Status.INTERRUPTED and i in self.assignments
        )
        return len(self.assignments) - interrupted

    def baselines_to_start(self, running: Iterable[Assignment] | None = None) -> int:
        """First-wave runs still to hand out: wave size minus finished (not interrupted) and running."""
        done = sum(
            1 for r in self.verdicts.values() if r.kind == Kind.BASELINE and r.status != Status.INTERRUPTED
        )
        live = running if running is not None else self.running()
        in_flight = sum(1 for a in live if a.kind == Kind.BASELINE)
        return max(0, self.wave_size - done - in_flight)

    def result_records(self) -> list[ExperimentRecord]:
        """Every decided experiment (pending ones included, with status pending), in decision order."""
        return [self.records[i] for i in self.order]

    def baseline_metrics(self) -> list[float]:
        return [
            r.metric
            for i, r in sorted(self.records.items())
            if r.kind == Kind.BASELINE and r.status == Status.KEEP and r.metric is not None
        ]

    def finished_records(self) -> list[ExperimentRecord]:
        """Final records in the order they were decided (pending ones left out)."""
        return [self.records[i] for i in self.order if self.records[i].status != Status.PENDING]

    def counts(self) -> Counter:
        return Counter(r.status.value for r in self.records.values())

    def history(self, limit: int | None = None, lane: str | None = None) -> tuple[HistoryEntry, ...]:
        """What agents see: finished experiments, oldest first; with `lane`, only that lane's
        (plus the shared first-wave baselines)."""
        records = [r for r in self.result_records() if r.kind != Kind.CONFIRM]  # confirmations show as runs
        if lane is not None:
            records = [r for r in records if r.lane == lane or r.kind == Kind.BASELINE]
        if limit is not None:
            records = records[-limit:]
        return tuple(self._entry(r) for r in records)

    def _entry(self, r: ExperimentRecord) -> HistoryEntry:
        sample = self.sample(r.commit) if r.metric is not None else None
        decided_on_more = sample is not None and sample.n >= 2
        return HistoryEntry(
            exp_id=r.exp_id, worker=r.worker, agent=r.agent, description=r.description, status=r.status,
            metric=r.metric, parent=r.parent, parent_metric=r.parent_metric,
            runs=sample.n if sample else 1, mean=sample.mean if sample else None,
            confirmed=decided_on_more and r.status != Status.PENDING,
        )


FIRST_START_ONLY = ("wave_size", "lanes")  # fixed when the run started: a resume cannot change them
PER_INVOCATION = ("hours", "address")  # one invocation's: never inherited by the next resume


def stack_settings(current: dict[str, Any], resumed: dict[str, Any]) -> dict[str, Any]:
    """The run's settings after a resume: the resume's config (`run_resumed`) on top of `current`
    (the first start's, with every earlier resume's on top). A value the resume left unset (None:
    e.g. `workers` when no --workers was given) keeps the earlier one, and FIRST_START_ONLY keys
    keep the first start's; PER_INVOCATION keys are the resume's own (None included)."""
    stacked = dict(current)
    for key, value in resumed.items():
        if key in FIRST_START_ONLY and key in current:
            continue
        if value is not None or key in PER_INVOCATION:
            stacked[key] = value
    return stacked


def run_settings(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """What a resumed run continues with: the first `run_started` config with each `run_resumed`
    config stacked on it (`stack_settings`); {} when the run never started."""
    settings: dict[str, Any] | None = None
    for e in events:
        if e["event"] == EventType.RUN_STARTED.value and settings is None:
            settings = dict(e.get("config") or {})
        elif e["event"] == EventType.RUN_RESUMED.value and settings is not None:
            settings = stack_settings(settings, e.get("config") or {})
    return settings or {}


def replay(events: Iterable[dict[str, Any]]) -> RunState:
    state = RunState()
    for event in events:
        state.apply(event)
    return state
