"""The one subprocess helper: argument lists, explicit cwd and env, a hard timeout, a result.

Output goes to a log file (or is captured when no log is given); on timeout the whole process
group is killed so that children of the task (dataloader workers, compilers) die with it.
Also `kill_strays`, which ends a run's task processes that outlived their worker, and the
name-based scrubber that keeps credentials out of the journal (swarm.config; the task's own
environment is an allow-list: swarm.sandbox).
Not covered: Ray, git (GitPython), anything interactive.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

# Names that look like credentials. Matched case-insensitively against the whole variable name.
_SECRET_NAME = re.compile(
    r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION)"
    r"|^(AWS_|AZURE_|GCP_|GOOGLE_APPLICATION|HF_|HUGGING|OPENAI|ANTHROPIC|GEMINI|LITELLM|"
    r"MISTRAL|COHERE|GROQ|DEEPSEEK|TOGETHER|OPENROUTER|XAI_|FIREWORKS|REPLICATE)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ProcResult:
    returncode: int | None  # None when killed at the timeout
    timed_out: bool
    seconds: float
    output_tail: str  # last lines of stdout+stderr
    log_path: str = ""

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.returncode == 0


def scrub_env(env: Mapping[str, str], keep: Sequence[str] = ()) -> dict[str, str]:
    """A copy of `env` without credential-like variables (names in `keep` survive)."""
    return {k: v for k, v in env.items() if k in keep or not _SECRET_NAME.search(k)}


def tail_text(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run_process(
    args: Sequence[str],
    *,
    cwd: str | os.PathLike,
    env: Mapping[str, str],
    timeout: float,
    log_path: str | os.PathLike | None = None,
    stdin_text: str | None = None,
    tail_lines: int = 60,
    stream: bool = False,
) -> ProcResult:
    """Run `args` to completion or until `timeout` seconds; never raises for the child's failure.

    With `log_path`, stdout and stderr go (merged) to that file, appended; with `stream` they go
    to this process's own stdout/stderr (for interactive commands; no tail is kept); else they
    are captured.
    """
    start = time.monotonic()
    log_file = None
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "ab")
    try:
        proc = subprocess.Popen(
            list(map(str, args)),
            cwd=str(cwd),
            env=dict(env),
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=None if stream else (log_file if log_file else subprocess.PIPE),
            stderr=None if stream else subprocess.STDOUT,
            start_new_session=True,  # own process group: killed whole on timeout
        )
    except OSError as exc:
        if log_file:
            log_file.write(f"failed to start {args[0]}: {exc}\n".encode())
            log_file.close()
        return ProcResult(127, False, time.monotonic() - start, f"failed to start {args[0]}: {exc}", str(log_path or ""))
    timed_out = False
    try:
        out, _ = proc.communicate(
            input=stdin_text.encode() if stdin_text is not None else None, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        out = _drain_after_kill(proc)
    except BaseException:  # KeyboardInterrupt, Ray cancellation: never leave the child behind
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        if log_file:
            log_file.close()
    seconds = time.monotonic() - start
    if log_path is not None:
        text = _read_tail(Path(log_path))
    else:
        text = (out or b"").decode("utf-8", errors="replace")
    return ProcResult(
        None if timed_out else proc.returncode,
        timed_out,
        seconds,
        tail_text(text, tail_lines),
        str(log_path or ""),
    )


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, give it a moment, then SIGKILL whatever of it is left."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return  # the group is gone
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass


def _drain_after_kill(proc: subprocess.Popen) -> bytes | None:
    """Collect what the killed child wrote, without waiting on a process that left its group
    (a `setsid` daemon) and still holds the pipe open."""
    try:
        out, _ = proc.communicate(timeout=5)
        return out
    except subprocess.TimeoutExpired:
        for stream in (proc.stdout, proc.stdin):
            if stream:
                stream.close()
        proc.wait()
        return None


def read_end(path: str | os.PathLike, max_bytes: int) -> bytes | None:
    """The last `max_bytes` of a file (None when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read()
    except OSError:
        return None


def _read_tail(path: Path, max_bytes: int = 64_000) -> str:
    return (read_end(path, max_bytes) or b"").decode("utf-8", errors="replace")


def kill_strays(run_mark: str, worker: str) -> None:
    """Kill tasks a dead predecessor of this worker left running (Linux; best effort).

    A task runs in its own process group; when its worker actor is killed the task survives as
    an orphan still holding the GPU. The replacement finds it by the AUTORESEARCH_RUN and
    AUTORESEARCH_WORKER variables the task was started with, and kills its process group. (A
    sandboxed task dies with its worker anyway: bwrap, which carries the same variables, has
    --die-with-parent, and killing bwrap ends its PID namespace, daemons included.)
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return
    marks = {f"AUTORESEARCH_RUN={run_mark}".encode(), f"AUTORESEARCH_WORKER={worker}".encode()}
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if marks <= environ:
            try:
                os.killpg(os.getpgid(int(entry.name)), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
