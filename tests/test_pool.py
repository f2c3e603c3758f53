"""The worker pool without Ray: a fake backend whose setups and runs the test resolves by hand."""

from __future__ import annotations

import itertools
import time
from types import SimpleNamespace

from swarm.pool import REPLACE_ATTEMPTS, Slot, WorkerLost, WorkerPool

_ids = itertools.count()


class Ref:
    def __init__(self, kind: str, actor: str):
        self.kind, self.actor, self.id = kind, actor, next(_ids)
        self.value, self.error, self.done = None, None, False

    def resolve(self, value=None, error: WorkerLost | None = None):
        self.value, self.error, self.done = value, error, True


class FakeBackend:
    """Records every call; a setup succeeds at once unless `fail_setups` says otherwise."""

    def __init__(self, fail_setups: int = 0, hang_setups: bool = False):
        self.fail_setups = fail_setups
        self.hang_setups = hang_setups
        self.created: list[str] = []
        self.killed: list[str] = []
        self.task_kills: list[str] = []
        self.ended: list = []
        self.runs: list[Ref] = []

    def create(self, spec, name):
        self.created.append(name)
        return name

    def setup(self, actor):
        ref = Ref("setup", actor)
        if self.hang_setups:
            return ref
        if self.fail_setups:
            self.fail_setups -= 1
            ref.resolve(error=WorkerLost(f"{actor} died while starting", died=True))
        else:
            ref.resolve({"transport": "worktree", "node_id": "node-a", "pid": 1})
        return ref

    def run(self, actor, a, bundle, more):
        ref = Ref("run", actor)
        self.runs.append(ref)
        return ref

    def wait(self, refs, timeout):
        return [r for r in refs if r.done]

    def get(self, ref):
        if ref.error is not None:
            raise ref.error
        return ref.value

    def kill(self, actor):
        self.killed.append(actor)

    def kill_task(self, actor):
        self.task_kills.append(actor)

    def end_tasks(self, run_mark, workers, nodes):
        self.ended.append((run_mark, workers, nodes))


def _slots(n: int) -> list[Slot]:
    return [Slot(i, SimpleNamespace(name=f"w{i}", run_mark="run-1")) for i in range(n)]


def _assignment(exp_id: int):
    return SimpleNamespace(exp_id=exp_id)


def _pool(backend, n=2, **kw) -> WorkerPool:
    pool = WorkerPool(backend, "swarm-t", replace_backoff=0.01, **kw)
    pool.start(_slots(n))
    return pool


def _poll_until(pool: WorkerPool, predicate, limit: float = 5.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        pool.poll(0.01)
        if predicate():
            return
    raise AssertionError("the pool never got there")


def test_first_start_creates_one_actor_per_slot_and_a_failed_one_is_retired():
    backend = FakeBackend(fail_setups=1)
    pool = _pool(backend, n=2)
    assert backend.created == ["swarm-t-w0-g1", "swarm-t-w1-g1"]
    assert pool.slots[0].retired and not pool.slots[1].retired
    assert [e.text for e in pool.take_events()] == ["w0 retired: it failed to start: swarm-t-w0-g1 died while starting"]
    assert pool.ready_slots() == [pool.slots[1]] and pool.slots[1].nodes == {"node-a"}


def test_a_first_actor_that_never_starts_is_retired_after_the_setup_timeout():
    backend = FakeBackend(hang_setups=True)
    pool = WorkerPool(backend, "swarm-t", setup_timeout=0.05)
    pool.start(_slots(1))
    assert pool.slots[0].retired and "did not start within 0 s" in pool.take_events()[0].text
    assert pool.no_workers is not None


def test_results_come_back_and_the_slot_stays_busy_until_released():
    backend = FakeBackend()
    pool = _pool(backend)
    w0, w1 = pool.slots
    pool.submit(w0, _assignment(1), None, True)
    pool.submit(w1, _assignment(2), None, True)
    backend.runs[1].resolve(SimpleNamespace(record=SimpleNamespace(finished_at=20.0)))
    backend.runs[0].resolve(SimpleNamespace(record=SimpleNamespace(finished_at=10.0)))
    outcomes = pool.poll(0.01)
    assert [o.slot.name for o in outcomes] == ["w0", "w1"]  # completion order
    assert w0.busy is not None and pool.ready_slots() == []
    assert pool.release(w0).exp_id == 1 and pool.ready_slots() == [w0]


def test_a_dead_actor_is_replaced_and_a_failing_replacement_retried_with_backoff():
    backend = FakeBackend()
    pool = _pool(backend, n=2)
    w1 = pool.slots[1]
    pool.submit(w1, _assignment(3), None, True)
    backend.runs[0].resolve(error=WorkerLost("worker actor died: killed", died=True))
    backend.fail_setups = REPLACE_ATTEMPTS - 1  # the replacement dies while starting, twice
    [outcome] = pool.poll(0.01)
    assert outcome.lost.died
    pool.release(w1)
    pool.lost(w1, outcome.lost)
    assert not w1.ready and pool.waiting()
    _poll_until(pool, lambda: w1.ready)
    texts = [e.text for e in pool.take_events()]
    assert texts == [
        "w1: its replacement actor failed to start (swarm-t-w1-g2 died while starting); trying again in 0 s (attempt 2 of 3)",
        "w1: its replacement actor failed to start (swarm-t-w1-g3 died while starting); trying again in 0 s (attempt 3 of 3)",
        "w1: replacement actor started (attempt 3 of 3)",
    ]
    assert w1.generation == 4 and "swarm-t-w1-g2" in backend.killed and not w1.retired


def test_a_replacement_that_never_starts_retires_the_slot_after_the_last_attempt():
    backend = FakeBackend()
    pool = _pool(backend, n=1)
    pool.setup_timeout = 0.0
    w0 = pool.slots[0]
    backend.hang_setups = True
    pool.lost(w0, WorkerLost("worker actor died: oom", died=True))
    _poll_until(pool, lambda: w0.retired)
    texts = [e.text for e in pool.take_events()]
    assert len(texts) == REPLACE_ATTEMPTS and all("did not start within 0 s" in t for t in texts)
    assert texts[-1].startswith("w0 retired: ") and texts[-1].endswith(f"gave up after {REPLACE_ATTEMPTS} attempts")
    assert pool.no_workers.startswith("every worker is retired (last: w0:")
    assert not pool.waiting() and pool.idle()


def test_worker_failures_in_a_row_retire_the_slot_and_a_success_resets_them():
    backend = FakeBackend()
    pool = _pool(backend, n=2)
    w0 = pool.slots[0]
    pool.lost(w0, WorkerLost("worker error: git", died=False))
    pool.succeeded(w0)
    for _ in range(3):
        pool.lost(w0, WorkerLost("worker error: git", died=False))
    assert w0.retired and "swarm-t-w0-g1" in backend.killed
    assert pool.take_events()[-1].text == "w0 retired: 3 worker failures in a row (last: worker error: git)"
    assert pool.no_workers is None  # w1 still works


def test_pause_interrupt_and_shutdown():
    backend = FakeBackend()
    pool = _pool(backend, n=2)
    w0, w1 = pool.slots
    pool.pause(w0, 60)
    assert pool.ready_slots() == [w1] and pool.waiting()
    pool.submit(w1, _assignment(7), None, False)
    assert [a.exp_id for a in pool.interrupt_all()] == [7] and backend.task_kills == ["swarm-t-w1-g1"]
    assert not pool.inflight and w1.busy is None
    pool.shutdown()
    assert set(backend.killed) == {"swarm-t-w0-g1", "swarm-t-w1-g1"}
    assert backend.ended == [("run-1", ["w0", "w1"], ["node-a"])]  # every node that ran one of its actors
