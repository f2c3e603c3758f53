"""One coordinator per run: an exclusive run lock with a heartbeat.

A coordinator holds `.swarm/<tag>/coordinator.lock` with an exclusive OS lock (`flock`) for its
whole life and keeps `.swarm/<tag>/coordinator.json` (host, pid, start, last heartbeat) fresh
from a daemon thread. A second coordinator on the same run is refused with one line naming the
live one. The kernel drops the lock when its process dies (even on SIGKILL), so a dead
coordinator's run is taken over at once by `--resume`; the heartbeat file it leaves behind says
who it was and when it was last seen (the coordinator journals a note). Where the OS lock cannot
see the holder (another host on a shared file system), a fresh heartbeat from another host
refuses the start, a stale one is taken over. `status` tells a live run from a dead one by the
heartbeat (`liveness`). Not covered: what a resumed coordinator does (swarm.coordinator).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from swarm.errors import ConfigError

HEARTBEAT_S = 5.0  # seconds between two heartbeats
STALE_S = 30.0  # a heartbeat older than this: its coordinator is dead (or frozen)
LOCK_FILE = "coordinator.lock"
HOLDER_FILE = "coordinator.json"


class RunLocked(ConfigError):
    """Another coordinator holds this run."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a run: written by the coordinator, read by everyone else."""

    host: str
    pid: int
    started: float
    heartbeat: float

    def age(self, now: float | None = None) -> float:
        return max(0.0, (now or time.time()) - self.heartbeat)

    def fresh(self, now: float | None = None, stale_after: float = STALE_S) -> bool:
        return self.age(now) < stale_after

    def describe(self, now: float | None = None) -> str:
        return f"pid {self.pid} on {self.host}, last heartbeat {_ago(self.age(now))}"


def read_holder(run_dir: str | os.PathLike) -> Holder | None:
    """The heartbeat file of a run, or None (no coordinator left one, or it is unreadable)."""
    try:
        data = json.loads((Path(run_dir) / HOLDER_FILE).read_text())
        return Holder(str(data["host"]), int(data["pid"]), float(data["started"]), float(data["heartbeat"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def liveness(run_dir: str | os.PathLike, now: float | None = None, stale_after: float = STALE_S) -> tuple[str, Holder | None]:
    """("running", holder) while a coordinator's heartbeat is fresh, ("dead", holder or None) otherwise.

    Only meaningful for a run whose journal does not say it stopped."""
    holder = read_holder(run_dir)
    if holder is not None and holder.fresh(now, stale_after):
        if holder.host == socket.gethostname() and not _pid_alive(holder.pid):
            return "dead", holder  # killed a moment ago: its heartbeat has not gone stale yet
        return "running", holder
    return "dead", holder


def refuse_if_running(run_dir: str | os.PathLike) -> None:
    """The cheap early check (before Ray and data preparation): `RunLocked` while the run's
    coordinator beats. `RunLock.acquire` is still the check that counts."""
    alive, holder = liveness(run_dir)
    if alive == "running" and (holder.pid, holder.host) != (os.getpid(), socket.gethostname()):  # not this process
        raise RunLocked(refusal(Path(run_dir), holder, alive=True))


class RunLock:
    """The exclusive lock of one run dir; `acquire` once, `release` at the end (or let the process die)."""

    def __init__(self, run_dir: str | os.PathLike, interval: float = HEARTBEAT_S, stale_after: float = STALE_S):
        self.run_dir = Path(run_dir)
        self.interval = interval
        self.stale_after = stale_after
        self.holder: Holder | None = None
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> Holder | None:
        """Take the run; returns the dead coordinator it takes over from (None: the last one ended
        cleanly, or there was none). Raises `RunLocked` (one line) when a live coordinator holds it."""
        fd = self._lock_file()
        previous = read_holder(self.run_dir)
        me = socket.gethostname()
        if (previous is not None and previous.host != me and previous.fresh(stale_after=self.stale_after)):
            os.close(fd)  # another host's coordinator, behind a file system that does not share the lock
            raise RunLocked(refusal(self.run_dir, previous, False, self.stale_after))
        self._fd = fd
        now = time.time()
        self.holder = Holder(me, os.getpid(), now, now)
        try:
            self._write()
        except BaseException:
            self.release()
            raise
        self._thread = threading.Thread(target=self._beat, name="swarm-heartbeat", daemon=True)
        self._thread.start()
        return previous

    def _lock_file(self) -> int:
        """The lock file's descriptor, flock-ed. A release that found no journal removes the file:
        a lock taken on a file removed meanwhile is no lock, so it is taken again on the new one."""
        path = self.run_dir / LOCK_FILE
        while True:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the run dir was removed a moment ago (a refused start's release)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLocked(refusal(self.run_dir, read_holder(self.run_dir), True, self.stale_after)) from None
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def release(self) -> None:
        """A clean end: the heartbeat file goes (status then reads the journal's run_stopped)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1)
        if self._fd is None:
            return
        try:
            (self.run_dir / HOLDER_FILE).unlink(missing_ok=True)
            if not (self.run_dir / "journal.jsonl").exists():  # refused before it started: leave no run dir
                (self.run_dir / LOCK_FILE).unlink(missing_ok=True)
                try:
                    self.run_dir.rmdir()
                except OSError:
                    pass
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._write()
            except OSError:  # a full disk must not kill the run; the heartbeat goes stale instead
                pass

    def _write(self) -> None:
        holder = Holder(self.holder.host, self.holder.pid, self.holder.started, time.time())
        self.holder = holder
        tmp = self.run_dir / f"{HOLDER_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(asdict(holder)))
        os.replace(tmp, self.run_dir / HOLDER_FILE)



def refusal(run_dir: Path, holder: Holder | None, alive: bool, stale_after: float = STALE_S) -> str:
    """The one line that refuses a second coordinator (`alive`: the OS lock says its holder lives)."""
    tag = run_dir.name
    if holder is None:
        return f"run {tag!r} is held by another coordinator (lock {run_dir / LOCK_FILE}); stop it first"
    if alive and not holder.fresh(stale_after=stale_after):
        return (f"run {tag!r} is held by a coordinator that is alive but not beating ({holder.describe()}): "
                f"stop it (kill {holder.pid}) before resuming")
    return f"run {tag!r} is already running: coordinator {holder.describe()}; stop it first (Ctrl-C there)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


__all__ = ["RunLock", "RunLocked", "refuse_if_running", "refusal", "Holder", "read_holder", "liveness", "HEARTBEAT_S", "STALE_S"]
