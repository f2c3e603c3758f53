"""The run lock: one coordinator per run, a heartbeat that tells live from dead (swarm.runlock)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swarm.runlock import HOLDER_FILE, RunLock, RunLocked, liveness, read_holder

ROOT = Path(__file__).resolve().parents[1]


def _stale_holder(run_dir: Path, pid: int, host: str | None = None, age: float = 120.0) -> None:
    t = time.time() - age
    (run_dir / HOLDER_FILE).write_text(json.dumps(dict(host=host or socket.gethostname(), pid=pid, started=t - 10,
                                                       heartbeat=t)))


def _journal(run_dir: Path) -> None:
    (run_dir / "journal.jsonl").write_text('{"event":"run_started","t":1}\n')


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    run_dir = tmp_path / "r1"
    first = RunLock(run_dir, interval=0.05)
    assert first.acquire() is None
    _journal(run_dir)
    try:
        with pytest.raises(RunLocked) as err:
            RunLock(run_dir).acquire()
        text = str(err.value)
        assert "\n" not in text and "already running" in text
        assert f"pid {os.getpid()}" in text and socket.gethostname() in text and "last heartbeat" in text
        beat = read_holder(run_dir).heartbeat
        time.sleep(0.2)
        assert read_holder(run_dir).heartbeat > beat  # the heartbeat thread keeps it fresh
        assert liveness(run_dir)[0] == "running"
    finally:
        first.release()
    assert read_holder(run_dir) is None and liveness(run_dir) == ("dead", None)
    again = RunLock(run_dir)
    assert again.acquire() is None  # a clean end leaves nothing to take over
    again.release()


def test_a_lock_held_by_a_live_process_that_stopped_beating_is_refused(tmp_path):
    run_dir = tmp_path / "r2"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from swarm.runlock import RunLock; "
        "RunLock(sys.argv[1], interval=3600).acquire(); print('held', flush=True); time.sleep(60)"), str(run_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        _stale_holder(run_dir, holder.pid)  # as if its heartbeat thread had been frozen for two minutes
        with pytest.raises(RunLocked, match=f"alive but not beating.*kill {holder.pid}"):
            RunLock(run_dir).acquire()
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped its lock with the process: the run is taken over, the dead holder reported
    lock = RunLock(run_dir)
    previous = lock.acquire()
    assert previous is not None and previous.pid == holder.pid
    lock.release()


def test_a_fresh_heartbeat_of_a_dead_local_process_is_dead(tmp_path):
    run_dir = tmp_path / "r3"
    run_dir.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _stale_holder(run_dir, gone.pid, age=1.0)
    state, holder = liveness(run_dir)
    assert state == "dead" and holder.pid == gone.pid
    lock = RunLock(run_dir)
    assert lock.acquire().pid == gone.pid
    lock.release()


def test_another_hosts_fresh_heartbeat_is_refused_and_its_stale_one_taken_over(tmp_path):
    run_dir = tmp_path / "r4"
    run_dir.mkdir()
    _stale_holder(run_dir, 4242, host="node-7.example", age=2.0)
    assert liveness(run_dir)[0] == "running"  # not this host's process: the heartbeat decides
    with pytest.raises(RunLocked, match="pid 4242 on node-7.example"):
        RunLock(run_dir).acquire()
    _stale_holder(run_dir, 4242, host="node-7.example", age=300.0)
    assert liveness(run_dir)[0] == "dead"
    lock = RunLock(run_dir)
    assert lock.acquire().host == "node-7.example"
    assert read_holder(run_dir).pid == os.getpid()
    lock.release()


def test_a_refused_start_leaves_no_run_dir(tmp_path):
    run_dir = tmp_path / "r5"
    lock = RunLock(run_dir)
    lock.acquire()
    lock.release()  # no journal was written (e.g. the start was refused): nothing is left behind
    assert not run_dir.exists()
