"""The worker pool: starting, replacing, pacing, retiring and stopping the swarm's worker actors.

A `Slot` is one worker position (w0, w1, ...): its spec, its current actor and what it runs.
`WorkerPool` owns the slots and reaches their actors only through a backend
(`swarm.worker_actor.RayBackend` in a run, a plain fake in unit tests), so its rules are tested
without Ray: the first start; results in completion order (`poll`); a replacement actor after one
died, whose failed start is retried with backoff (`REPLACE_ATTEMPTS`, doubling from
`replace_backoff`) before the slot is retired; the backoff of a worker whose agent is unavailable;
retiring a slot for good (its actor is killed so that its GPU is freed; when every slot is
retired, `no_workers` says why); and the stop, which ends task processes on every node that ran
one. It never journals or decides: every change it makes is an event (`take_events`) that the
coordinator journals and prints. Not covered: scheduling and recording experiments
(swarm.coordinator), what a worker does (swarm.worker), Ray itself (swarm.worker_actor).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from swarm.decisions import Assignment
from swarm.lanes import MAIN
from swarm.worker import WorkerSpec

SETUP_TIMEOUT = 600.0  # seconds a replacement actor may take to start (placement + setup) before it counts as failed
REPLACE_ATTEMPTS = 3  # replacement actors tried for one death before the slot is retired
REPLACE_BACKOFF = 2.0  # seconds before the second try; doubling after each failed one
MAX_WORKER_FAILURES = 3  # consecutive experiments lost to the worker itself before its slot is retired


class WorkerLost(Exception):
    """A worker call failed on the worker's side (`died`: its actor process is gone)."""

    def __init__(self, message: str, died: bool):
        super().__init__(message)
        self.died = died


class Backend(Protocol):
    """What the pool needs from an actor system (Ray: swarm.worker_actor.RayBackend)."""

    def create(self, spec: WorkerSpec, name: str) -> Any: ...
    def setup(self, actor: Any) -> Any: ...  # a ref whose value is the worker's info dict
    def run(self, actor: Any, a: Assignment, bundle: bytes | None, more: bool) -> Any: ...  # a ref
    def wait(self, refs: list, timeout: float) -> list: ...  # the ready ones
    def get(self, ref: Any) -> Any: ...  # the value, or raises WorkerLost
    def kill(self, actor: Any) -> None: ...
    def kill_task(self, actor: Any) -> None: ...
    def end_tasks(self, run_mark: str, workers: list[str], nodes: list[str]) -> None: ...


@dataclass
class Slot:
    """One worker position: its spec, current actor and what it is running."""

    index: int
    spec: WorkerSpec
    actor: Any = None
    generation: int = 0
    transport: str = "worktree"
    synced: str | None = None  # last commit sent to it as a bundle
    busy: Assignment | None = None
    info: dict = field(default_factory=dict)
    failures: int = 0  # consecutive experiments lost to the worker itself (death, setup or git error)
    retired: bool = False  # no more assignments (worker failures, permanent agent error, setup failure)
    lane: str = MAIN  # the lane it races for (compare runs)
    outages: int = 0  # its agent's failed attempts in a row (AgentError): it waits, the others go on
    not_before: float = 0.0  # monotonic time before which it gets no assignment (outage backoff)
    starting_until: float | None = None  # a replacement actor is being set up until this monotonic time
    respawn_at: float | None = None  # a failed replacement is tried again at this monotonic time
    attempts: int = 0  # replacement actors tried since its last death
    nodes: set = field(default_factory=set)  # Ray node ids its actors ran on (its tasks may outlive them)

    @property
    def ready(self) -> bool:
        """It may get an assignment now."""
        return (self.busy is None and not self.retired and self.starting_until is None and self.respawn_at is None
                and self.not_before <= time.monotonic())

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class PoolEvent:
    """Something the pool did that the run's journal should say (`text` starts with the worker)."""

    worker: str
    text: str
    retired: bool = False


@dataclass(frozen=True)
class Outcome:
    """A finished `run` call: the worker's result, or how the worker was lost under it."""

    slot: Slot
    finished: float  # unix seconds
    result: Any = None  # WorkerResult
    lost: WorkerLost | None = None


class WorkerPool:
    """The slots and their actors; see the module docstring."""

    def __init__(self, backend: Backend, actor_prefix: str, prepare: Callable[[Slot], None] = lambda slot: None,
                 setup_timeout: float = SETUP_TIMEOUT, replace_backoff: float = REPLACE_BACKOFF):
        """`prepare(slot)` readies the slot's checkout before an actor is (re)created; an exception
        from it retires the slot."""
        self.backend = backend
        self.actor_prefix = actor_prefix
        self.prepare = prepare
        self.setup_timeout = setup_timeout
        self.replace_backoff = replace_backoff
        self.slots: list[Slot] = []
        self.setups: dict[Any, Slot] = {}  # setup ref of a replacement actor -> its slot
        self.inflight: dict[Any, Slot] = {}  # run ref -> its slot
        self.no_workers: str | None = None  # why the run ran out of workers (every slot retired)
        self._events: list[PoolEvent] = []

    # ---- events ---------------------------------------------------------------------------

    def take_events(self) -> list[PoolEvent]:
        events, self._events = self._events, []
        return events

    def _event(self, slot: Slot, text: str, retired: bool = False) -> None:
        self._events.append(PoolEvent(slot.name, f"{slot.name} {text}" if retired else f"{slot.name}: {text}", retired))

    # ---- start ----------------------------------------------------------------------------

    def start(self, slots: list[Slot], stopped: Callable[[], bool] = lambda: False) -> None:
        """Create every slot's first actor and wait for their setups, up to `setup_timeout`; a slot
        whose first actor fails or does not start in time is retired. Returns early once
        `stopped()` (the run is being stopped: the actors are killed at the shutdown)."""
        self.slots = list(slots)
        pending = {ref: slot for slot in self.slots if (ref := self._spawn(slot)) is not None}
        deadline = time.monotonic() + self.setup_timeout
        while pending and time.monotonic() < deadline:
            if stopped():
                return
            for ref in self.backend.wait(list(pending), min(1.0, max(0.0, deadline - time.monotonic()))):
                slot = pending.pop(ref)
                try:
                    self._started(slot, self.backend.get(ref))
                except WorkerLost as exc:
                    self.retire(slot, f"it failed to start: {exc}")
        for slot in pending.values():
            self.retire(slot, f"it did not start within {self.setup_timeout:.0f} s (no free GPU or CPU for it?)")

    def _spawn(self, slot: Slot):
        """(Re)create the slot's actor, preparing its checkout first; its setup ref (None: retired)."""
        try:
            self.prepare(slot)
        except Exception as exc:  # noqa: BLE001 - e.g. a GitError: the worktree cannot be repaired
            self.retire(slot, f"its worktree cannot be set up ({exc})")
            return None
        slot.generation += 1
        slot.synced = None
        slot.actor = self.backend.create(slot.spec, f"{self.actor_prefix}-{slot.name}-g{slot.generation}")
        return self.backend.setup(slot.actor)

    def _started(self, slot: Slot, info: dict) -> None:
        slot.info, slot.transport, slot.synced = info, info["transport"], None  # bundle transport: full bundle next
        slot.attempts = 0
        if info.get("node_id"):
            slot.nodes.add(info["node_id"])

    # ---- work -----------------------------------------------------------------------------

    def ready_slots(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.ready]

    def running(self) -> list[Assignment]:
        return [slot.busy for slot in self.slots if slot.busy]

    def submit(self, slot: Slot, a: Assignment, bundle: bytes | None, more: bool) -> None:
        """Hand `a` to the slot's actor (`more`: it may prefetch its next proposal)."""
        slot.busy = a
        self.inflight[self.backend.run(slot.actor, a, bundle, more)] = slot

    def idle(self) -> bool:
        """Nothing is running and no replacement is starting."""
        return not self.inflight and not self.setups and not any(s.respawn_at for s in self.slots if not s.retired)

    def poll(self, timeout: float) -> list[Outcome]:
        """Wait up to `timeout` s for results; handle replacement setups and retries on the way.
        The outcomes' slots stay busy until `release(slot)`, so scheduling between two results of
        one batch sees the others as still running."""
        self._tick()
        waiting = [*self.inflight, *self.setups]
        if not waiting:
            time.sleep(min(timeout, 0.2))
            return []
        if not self.backend.wait(waiting, timeout):
            return []
        ready = self.backend.wait(waiting, 0)
        for ref in [r for r in ready if r in self.setups]:
            self._setup_done(ref)
        outcomes = []
        for ref in [r for r in ready if r in self.inflight]:
            slot = self.inflight.pop(ref)
            try:
                result = self.backend.get(ref)
                record = getattr(result, "record", None)
                outcomes.append(Outcome(slot, record.finished_at if record is not None else time.time(), result))
            except WorkerLost as exc:
                outcomes.append(Outcome(slot, time.time(), lost=exc))
        return sorted(outcomes, key=lambda o: o.finished)  # completion order, as if one by one

    def release(self, slot: Slot) -> Assignment | None:
        a, slot.busy = slot.busy, None
        return a

    def succeeded(self, slot: Slot) -> None:
        slot.failures = 0

    def lost(self, slot: Slot, lost: WorkerLost) -> None:
        """The worker failed an experiment itself: count it, replace a dead actor, or retire the slot."""
        slot.failures += 1
        if slot.failures >= MAX_WORKER_FAILURES:
            self.retire(slot, f"{slot.failures} worker failures in a row (last: {short(lost)})")
        elif lost.died:
            slot.attempts = 0
            self._replace(slot)  # new actor, same (repaired) checkout; it gets work once set up
        else:
            slot.synced = None

    # ---- replacements ---------------------------------------------------------------------

    def _replace(self, slot: Slot) -> None:
        slot.respawn_at = None
        slot.attempts += 1
        ref = self._spawn(slot)
        if ref is not None:
            slot.starting_until = time.monotonic() + self.setup_timeout
            self.setups[ref] = slot

    def _setup_done(self, ref) -> None:
        slot = self.setups.pop(ref)
        slot.starting_until = None
        try:
            info = self.backend.get(ref)
        except WorkerLost as exc:
            self._replacement_failed(slot, f"its replacement actor failed to start ({short(exc)})")
            return
        if slot.attempts > 1:
            self._event(slot, f"replacement actor started (attempt {slot.attempts} of {REPLACE_ATTEMPTS})")
        self._started(slot, info)

    def _replacement_failed(self, slot: Slot, why: str) -> None:
        """Try again after a backoff, or retire the slot once `REPLACE_ATTEMPTS` have failed."""
        if slot.actor is not None:
            self.backend.kill(slot.actor)
        if slot.attempts >= REPLACE_ATTEMPTS:
            self.retire(slot, f"{why}; gave up after {slot.attempts} attempts")
            return
        delay = self.replace_backoff * 2 ** (slot.attempts - 1)
        slot.respawn_at = time.monotonic() + delay
        self._event(slot, f"{why}; trying again in {delay:.0f} s (attempt {slot.attempts + 1} of {REPLACE_ATTEMPTS})")

    def _tick(self) -> None:
        """Replacement setups that timed out count as failed; retries whose backoff is over start."""
        now = time.monotonic()
        for ref, slot in list(self.setups.items()):
            if slot.starting_until is not None and now >= slot.starting_until:
                del self.setups[ref]
                slot.starting_until = None
                self._replacement_failed(slot, f"its replacement actor did not start within {self.setup_timeout:.0f} s")
        for slot in self.slots:
            if slot.respawn_at is not None and now >= slot.respawn_at and not slot.retired:
                self._replace(slot)

    # ---- pacing and retiring --------------------------------------------------------------

    def pause(self, slot: Slot, seconds: float) -> None:
        """No assignment for this slot for `seconds` (its agent is unavailable)."""
        slot.not_before = time.monotonic() + seconds

    def waiting(self) -> bool:
        """Some idle worker waits out an agent outage, or for a replacement actor."""
        now = time.monotonic()
        return any(slot.busy is None and not slot.retired
                   and (slot.not_before > now or slot.starting_until or slot.respawn_at) for slot in self.slots)

    def retire(self, slot: Slot, why: str) -> None:
        """No more assignments for this slot; its actor is killed (its GPU is freed)."""
        slot.retired = True
        slot.respawn_at = slot.starting_until = None
        self._event(slot, f"retired: {why}", retired=True)
        if slot.actor is not None:
            self.backend.kill(slot.actor)
        if self.slots and all(other.retired for other in self.slots) and self.no_workers is None:
            self.no_workers = f"every worker is retired (last: {slot.name}: {why})"

    # ---- stopping -------------------------------------------------------------------------

    def interrupt_all(self) -> list[Assignment]:
        """Stop every running task; the assignments that were running (to be recorded interrupted)."""
        self.inflight.clear()
        running = []
        for slot in self.slots:
            a = self.release(slot)
            if a is None:
                continue
            if slot.actor is not None:
                self.backend.kill_task(slot.actor)
            running.append(a)
        return running

    def shutdown(self) -> None:
        """Kill every actor, then end this run's task processes on every node that ran a worker
        (a task outlives an actor killed under it)."""
        for slot in self.slots:
            if slot.actor is not None:
                self.backend.kill(slot.actor)
        nodes = sorted({node for slot in self.slots for node in slot.nodes})
        if self.slots:
            self.backend.end_tasks(self.slots[0].spec.run_mark, [slot.name for slot in self.slots], nodes)


def short(exc: BaseException) -> str:
    """The last line of an error, short (for notes and records)."""
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:200]


__all__ = ["Backend", "Outcome", "PoolEvent", "Slot", "WorkerLost", "WorkerPool", "short",
           "MAX_WORKER_FAILURES", "REPLACE_ATTEMPTS", "SETUP_TIMEOUT"]
