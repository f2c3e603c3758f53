"""Chaos: a stand-in swarm of 8 workers under random faults, then every invariant checked.

Runs the coordinator as a user does (`python -m swarm.cli run ... --workers 8 --quiet`, its own
local Ray cluster, the built-in HillClimber stand-in agent) on the stand-in task of
tests/standin.py (each experiment sleeps 0.3-0.5 s), for --experiments experiments, while
injecting faults at random times (seeded by --seed):

- task: SIGKILL a running task process of this run (found by AUTORESEARCH_RUN in /proc/*/environ);
- actor: SIGKILL a worker actor's Ray process (`ray::WorkerActor...`, mostly the parent of a running
  task, tied to this run by a marker variable in its environment);
- coordinator kill: SIGKILL the `swarm.cli run` process, then `run --resume`;
- coordinator stop: SIGINT (a clean stop), then `run --resume`;
- torn line: while the coordinator is down (--torn-prob), append a truncated JSON object to the
  journal, with a trailing newline or without one.

Kills and clean stops of the coordinator take turns, and so do the two kinds of torn line, so that
even a short run sees each.

Then it checks, and prints "lost: N" for each (target: 0 everywhere):

- every experiment started once, finished once and decided once (a `pending` decision may be
  followed by the final one; candidates still pending at the stop are listed, not lost);
- the exports equal the journal (results.tsv row by row, results.parquet ids/statuses/commits);
- the best-branch invariants (tests/standin.check_invariants);
- every tried diff reachable: each record with a commit has refs/swarm/chaos/exp/<id> on it, and
  no proposal / combination that ran (keep, discard, crash, timeout, rejected) has an empty commit
  ("lost diffs"; not counted: a combination queued again and measured under a later id, and an
  experiment whose actor died before its edit was committed and before its task started, i.e.
  nothing was tried; both are listed);
- `git fsck --no-dangling` is clean and no git lock file is left (a worker killed inside a git
  command leaves one, and every later git command in that worktree fails); no worker retired;
- `status` and `report` read the run as it was left (exit 0); the journal has no bad line inside
  it, and no resume was refused for one (the benchmark then drops the bad lines itself, counts
  that, and goes on so that the other checks still mean something);
- the coordinator never exited on its own nor hung on SIGINT; no process of the run outlives it.

The coordinator gets its own Ray temp dir (RAY_TMPDIR), so it never joins another cluster running
on this machine. Figures: faults by kind and what each task / actor kill became in the journal,
coordinator restarts, time from a resume to its first experiment, experiments by status and kind,
wall time.

    python benchmarks/bench_chaos.py                 # 500 experiments, ~3-5 minutes on 2 cores
    python benchmarks/bench_chaos.py --quick         # smoke check, ~1-2 minutes
    python benchmarks/bench_chaos.py --experiments 400 --seed 3 --minutes 15 --json out.json

Exit status 0 when nothing was lost, 1 otherwise. Nothing outside its own temporary directory is
touched; it kills only processes carrying its own marker variable (never `ray stop`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swarm import exports  # noqa: E402
from swarm.errors import JournalError  # noqa: E402
from swarm.journal import read_events  # noqa: E402
from swarm.state import replay  # noqa: E402
from tests.standin import check_invariants, git, make_standin_repo  # noqa: E402

TAG = "chaos"
AGENT = "py:tests.standin_agents:HillClimber"
MARK = "CHAOS_BENCH_ID"
RAN = {"keep", "discard", "crash", "timeout", "rejected"}  # statuses of an experiment that ran
TASK_TOML = ('[task]\nname = "standin"\nmutable_files = ["train.py"]\ncommand = ["{python}", "train.py"]\n'
             'metric = "val_bpb"\ndirection = "min"\ntime_budget = 1.0\ntimeout = 20.0\n')


# ---- processes of this run ------------------------------------------------------------------

def processes(*markers: str) -> list[dict]:
    """Live processes whose environment carries one of `markers` (NAME=value): pid, ppid, cmd, env."""
    want = {m.encode() for m in markers}
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if want.isdisjoint(raw):
                continue
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        env = dict(kv.decode(errors="replace").split("=", 1) for kv in raw if kv.startswith(b"AUTORESEARCH_"))
        found.append({"pid": pid, "ppid": int(fields[1]), "cmd": cmd, "env": env})
    return found


def parents() -> dict[int, int]:
    """pid -> parent pid of every live process (a sandboxed task's bwrap parents carry no marker)."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return found


def kill(pid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


# ---- the journal, followed as it grows ----------------------------------------------------------

class Tail:
    """Counts of the journal's events, read incrementally (a torn last line waits for its end)."""

    def __init__(self, path: Path):
        self.path = path
        self.reset()

    def reset(self) -> None:
        self.offset = 0
        self.sessions = self.started = self.started_session = self.interrupted = 0
        self.session_first_start: float | None = None
        self.stop_reason: str | None = None

    def poll(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size < self.offset:  # cut or repaired under us: count again from the start
            self.reset()
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        lines = data.split(b"\n")[:-1]  # complete lines only: a torn tail may yet be cut by the writer
        for n, line in enumerate(lines):
            try:
                e = json.loads(line)
            except ValueError:
                if n == len(lines) - 1:
                    break  # a torn last line, newline and all: the writer may cut it, so read it again
                self.offset += len(line) + 1
                continue
            self.offset += len(line) + 1
            kind = e.get("event") if isinstance(e, dict) else None
            if kind in ("run_started", "run_resumed"):
                self.sessions += 1
                self.started_session, self.session_first_start, self.stop_reason = 0, None, None
            elif kind == "experiment_started":
                self.started += 1
                self.started_session += 1
                if self.session_first_start is None:
                    self.session_first_start = time.monotonic()
            elif kind == "experiment_finished" and e.get("record", {}).get("status") == "interrupted":
                self.interrupted += 1
            elif kind == "run_stopped":
                self.stop_reason = e.get("reason", "")


# ---- the chaos run ------------------------------------------------------------------------------

class Chaos:
    def __init__(self, args, workdir: Path):
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = workdir
        self.repo = make_standin_repo(workdir / "repo", sleep=0.4)
        train = self.repo / "train.py"  # 0.3-0.5 s per experiment
        train.write_text(train.read_text().replace("time.sleep(SLEEP)",
                                                   "time.sleep(SLEEP * random.uniform(0.75, 1.25))"))
        git(self.repo, "commit", "-qam", "sleep 0.3-0.5 s")
        self.task_file = workdir / "standin.toml"
        self.task_file.write_text(TASK_TOML)
        self.run_dir = (self.repo / ".swarm" / TAG).resolve()
        self.journal = self.run_dir / "journal.jsonl"
        self.tail = Tail(self.journal)
        self.marker = f"{MARK}={uuid.uuid4().hex[:12]}"
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep), MARK: self.marker.split("=", 1)[1], "RAY_TMPDIR": str(workdir / "r")}
        self.env.pop("RAY_ADDRESS", None)  # its own local cluster, never one that happens to run here
        (workdir / "r").mkdir()
        self.faults: Counter = Counter()
        self.outcomes: dict[str, list] = defaultdict(list)  # fault kind -> exp ids it hit
        self.events: list[str] = []  # what happened, for the log
        self.sessions: list[dict] = []
        self.proc: subprocess.Popen | None = None
        self.torn_injected: list[bytes] = []
        self.journal_repairs: list[str] = []
        self.unexpected: list[str] = []
        self.ray_leftovers = 0  # Ray processes of a killed coordinator still alive after the grace time
        self.coordinator_faults = 0
        self.first_turn = self.rng.randrange(2)  # which coordinator fault / torn line kind comes first
        n, span = args.coordinator_faults, args.experiments / (args.coordinator_faults + 1)
        # coordinator faults at progress points spread over the run (experiments started, interrupted
        # ones left out), each jittered by up to a quarter of the spacing
        self.coordinator_at = sorted(int((k + 1) * span + self.rng.uniform(-span / 4, span / 4)) for k in range(n))
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s] {text}"
        self.events.append(line)
        if not self.args.silent:
            print(line, flush=True)

    # -- the coordinator --

    def start(self, resume: bool) -> None:
        argv = [sys.executable, "-m", "swarm.cli", "run", "--repo", str(self.repo), "--tag", TAG, "--quiet"]
        if resume:
            argv.append("--resume")
        else:
            argv += ["--task", str(self.task_file), "--agents", AGENT, "--workers", str(self.args.workers),
                     "--max-experiments", str(self.args.experiments), "--seed", str(self.args.seed)]
            if self.args.max_runs is not None:
                argv += ["--max-runs", str(self.args.max_runs)]
            if self.args.baseline_runs is not None:
                argv += ["--baseline-runs", str(self.args.baseline_runs)]
        self.tail.poll()
        log = self.work / f"coordinator-{len(self.sessions)}.log"
        with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.sessions.append({"pid": self.proc.pid, "log": log, "spawned": time.monotonic(), "resume": resume,
                              "sessions_before": self.tail.sessions, "first_start": None, "end": None})
        self.say(f"coordinator {'resumed' if resume else 'started'} (pid {self.proc.pid})")

    def running_experiments(self) -> bool:
        """The current coordinator has started experiments in its own session."""
        s = self.sessions[-1]
        if self.tail.sessions > s["sessions_before"] and self.tail.started_session > 0:
            if s["first_start"] is None:
                s["first_start"] = self.tail.session_first_start
            return True
        return False

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def reap_ray(self, grace: float = 15.0) -> None:
        """After the coordinator died: its Ray processes should follow it; kill what outlives `grace`."""
        end = time.monotonic() + grace
        while time.monotonic() < end:
            left = [p for p in self.mine() if "train.py" not in p["cmd"] and "AUTORESEARCH_RUN" not in p["env"]]
            if not left:
                return
            time.sleep(0.5)
        left = [p for p in self.mine() if "train.py" not in p["cmd"] and "AUTORESEARCH_RUN" not in p["env"]]
        for p in left:
            kill(p["pid"])
        if left:
            self.ray_leftovers += len(left)
            self.say(f"{len(left)} Ray process(es) of the dead coordinator still alive after {grace:.0f} s: killed "
                     f"({', '.join(sorted({p['cmd'].split()[0][:40] for p in left}))})")

    # -- faults --

    def mine(self) -> list[dict]:
        """This run's processes: the coordinator's tree (marker) and its tasks (a sandboxed task gets an
        allow-listed environment without the marker, but always AUTORESEARCH_RUN)."""
        return processes(self.marker, f"AUTORESEARCH_RUN={self.run_dir}")

    def tasks(self) -> list[dict]:
        return [p for p in self.mine() if p["env"].get("AUTORESEARCH_RUN") == str(self.run_dir)
                and p["cmd"].endswith("train.py") and not p["cmd"].startswith(("bwrap", "/usr/bin/bwrap"))]

    def kill_task(self) -> bool:
        tasks = self.tasks()
        if not tasks:
            return False
        p = self.rng.choice(tasks)
        if not kill(p["pid"]):
            return False
        exp = int(p["env"].get("AUTORESEARCH_EXP_ID", 0))
        self.outcomes["task"].append(exp)
        self.say(f"killed the task of #{exp} ({p['env'].get('AUTORESEARCH_WORKER')}, pid {p['pid']})")
        return True

    def kill_actor(self) -> bool:
        """SIGKILL a worker actor's process: 3 times in 4 one that runs a task (found by walking up
        from the task, past bwrap), else any (it may be asking its agent, committing, or idle)."""
        want_busy = self.rng.random() < 0.75
        end = time.monotonic() + 2.0
        while True:
            procs = self.mine()
            actors = {p["pid"]: p for p in procs if p["cmd"].startswith("ray::") and "WorkerActor" in p["cmd"]}
            parent = parents()
            busy = {}
            for task in self.tasks():
                pid = task["ppid"]
                while pid > 1 and pid in parent and pid not in actors:
                    pid = parent[pid]
                if pid in actors:
                    busy[pid] = task
            if busy or not want_busy or time.monotonic() > end:
                break
            time.sleep(0.05)
        if not actors:
            return False
        if want_busy and busy:
            pid = self.rng.choice(sorted(busy))
            task = busy[pid]
            exp = int(task["env"].get("AUTORESEARCH_EXP_ID", 0))
            what = f"running #{exp} on {task['env'].get('AUTORESEARCH_WORKER')}"
        else:
            pid, exp = self.rng.choice(sorted(actors)), None
            what = f"not inside a task: {actors[pid]['cmd'][:40]}"
        if not kill(pid):
            return False
        self.outcomes["actor"].append(exp)
        self.say(f"killed a worker actor (pid {pid}, {what})")
        return True

    def stop_coordinator(self, hard: bool) -> None:
        if hard:
            self.proc.send_signal(signal.SIGKILL)
            rc = self.wait_exit(30)
            self.say(f"SIGKILLed the coordinator (rc {rc})")
            self.reap_ray()
        else:
            self.proc.send_signal(signal.SIGINT)
            rc = self.wait_exit(90)
            if rc is None:
                self.unexpected.append("SIGINT: the coordinator did not stop within 90 s")
                self.proc.send_signal(signal.SIGINT)  # the second Ctrl-C: stop now
                rc = self.wait_exit(30)
                if rc is None:
                    self.proc.send_signal(signal.SIGKILL)
                    rc = self.wait_exit(30)
            self.say(f"SIGINT: the coordinator stopped (rc {rc}, {self.tail_reason()})")
            if rc != 130:
                self.unexpected.append(f"SIGINT: exit status {rc}, expected 130")
            self.reap_ray(5.0)
        self.sessions[-1]["end"] = time.monotonic()
        if self.rng.random() < self.args.torn_prob:
            self.inject_torn_line()

    def tail_reason(self) -> str:
        self.tail.poll()
        return f"journal says {self.tail.stop_reason!r}" if self.tail.stop_reason is not None else "no run_stopped"

    def inject_torn_line(self) -> None:
        fake = json.dumps({"event": "experiment_finished", "t": time.time(), "record": {
            "exp_id": 10 ** 6, "worker": "w9", "status": "keep", "commit": "0" * 40, "description": "torn"}},
            separators=(",", ":")).encode()
        cut = fake[: self.rng.randrange(8, len(fake) - 1)]
        newline = (self.faults["torn line + newline"] + self.faults["torn line, no newline"] + self.first_turn) % 2 == 1
        with open(self.journal, "ab") as f:
            f.write(cut + (b"\n" if newline else b""))
        self.torn_injected.append(cut)
        self.faults["torn line + newline" if newline else "torn line, no newline"] += 1
        self.say(f"torn journal line injected ({len(cut)} bytes, {'with' if newline else 'no'} trailing newline)")

    def repair_journal(self, why: str) -> bool:
        """A resume was refused for a bad line: drop every unparsable line but the last (what a
        correct writer does), count it, go on. False when there was nothing to repair."""
        data = self.journal.read_bytes()
        lines = data.split(b"\n")
        keep, dropped = [], 0
        for i, line in enumerate(lines):
            last = i == len(lines) - 1 or (i == len(lines) - 2 and not lines[-1])
            if line.strip() and not last:
                try:
                    json.loads(line)
                except ValueError:
                    dropped += 1
                    continue
            keep.append(line)
        if not dropped:
            return False
        self.journal.write_bytes(b"\n".join(keep))
        self.tail.reset()
        if why != "the final check":
            self.journal_repairs.append(f"{dropped} bad line(s) dropped after: {why}")
        self.say(f"journal repaired by the benchmark: {dropped} bad line(s) in the middle ({why})")
        return True

    def fault(self) -> None:
        """A task or worker actor fault (the coordinator's own come by progress: `coordinator_fault`)."""
        kind = self.rng.choices(["task", "actor"], weights=[0.6, 0.4])[0]
        if self.kill_task() if kind == "task" else self.kill_actor():
            self.faults[kind] += 1

    def coordinator_fault(self) -> None:
        """Kill or stop the coordinator (they take turns, from a random first one), then resume it."""
        kind = ("coordinator kill", "coordinator stop")[(self.coordinator_faults + self.first_turn) % 2]
        self.coordinator_faults += 1
        self.stop_coordinator(hard=kind == "coordinator kill")
        self.faults[kind] += 1
        self.start(resume=True)

    # -- the loop --

    def run(self) -> str:
        deadline = self.t0 + self.args.minutes * 60
        next_fault = None
        failures = 0
        self.start(resume=False)
        while True:
            self.tail.poll()
            rc = self.proc.poll()
            if rc is not None:
                self.sessions[-1]["end"] = time.monotonic()
                out = self.sessions[-1]["log"].read_text(errors="replace")
                if rc == 0 and self.tail.stop_reason == "max_experiments":
                    self.say(f"the run reached --max-experiments {self.args.experiments}")
                    return "max_experiments"
                last = (out.strip().splitlines() or ["(no output)"])[-1][:300]
                bad_journal = "not valid JSON" in out or "not an event object" in out
                if not bad_journal:  # (a refused resume is counted with the journal's repairs)
                    self.unexpected.append(f"coordinator exited with {rc} on its own: {last}")
                self.say(f"the coordinator exited with {rc} on its own: {last}")
                if rc == 1 and self.tail.stop_reason == "no_workers":
                    return "no_workers"
                if not self.journal.exists():
                    return "the run never started"
                failures += 1
                if bad_journal:
                    self.repair_journal(last)
                if failures > 3 or time.monotonic() > deadline:
                    return "gave up"
                self.start(resume=True)
                next_fault = None
                continue
            if time.monotonic() > deadline:
                self.say(f"--minutes {self.args.minutes} reached: stopping the run cleanly")
                self.proc.send_signal(signal.SIGINT)
                if self.wait_exit(90) is None:
                    self.proc.send_signal(signal.SIGKILL)
                    self.wait_exit(30)
                return "minutes"
            if self.running_experiments():
                failures = 0
                now = time.monotonic()
                progress = self.tail.started - self.tail.interrupted
                near_end = progress >= self.args.experiments - self.args.workers
                if self.coordinator_at and progress >= self.coordinator_at[0] and not near_end:
                    self.coordinator_at.pop(0)
                    self.coordinator_fault()
                    next_fault = None
                    continue
                if next_fault is None:
                    next_fault = now + self.rng.expovariate(1.0 / self.args.interval)
                elif now >= next_fault and not near_end:
                    self.fault()
                    next_fault = None
            time.sleep(0.2)

    def leftovers(self, grace: float = 15.0) -> list[dict]:
        end = time.monotonic() + grace
        while time.monotonic() < end:
            left = self.mine()
            if not left:
                return []
            time.sleep(0.5)
        left = self.mine()
        for p in left:
            kill(p["pid"])
        return left


# ---- the checks ---------------------------------------------------------------------------------

def check_run(chaos: Chaos) -> tuple[dict, dict, list[str]]:
    """(lost per invariant, figures, notes)."""
    repo, run = chaos.repo, chaos.run_dir
    lost: dict[str, int] = {}
    notes: list[str] = []
    figures: dict = {}
    if not (run / "journal.jsonl").exists():
        lost["run never started (no journal)"] = 1
        return lost, figures, notes
    # the CLI reads the run as the run left it (before any repair here)
    for cmd in ("status", "report"):
        p = subprocess.run([sys.executable, "-m", "swarm.cli", cmd, "--repo", str(repo), "--tag", TAG], cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
        lost[f"`{cmd}` failed"] = int(p.returncode != 0)
        figures[f"{cmd} output"] = (p.stdout + p.stderr).strip()
        if p.returncode:
            notes.append(f"{cmd} exit {p.returncode}: {(p.stdout + p.stderr).strip()[-300:]}")
    # the journal as the run left it: a torn line may only be the last one (then it is ignored)
    raw = (run / "journal.jsonl").read_bytes().split(b"\n")
    bad = [i + 1 for i, line in enumerate(raw[:-1]) if line.strip() and not _parses(line)
           and not (i == len(raw) - 2 and not raw[-1])]
    lost["bad lines inside the journal"] = len(bad)
    lost["resumes refused by a bad journal line"] = len(chaos.journal_repairs)
    if bad:
        injected = sum(1 for i in bad if any(raw[i - 1] == cut for cut in chaos.torn_injected))
        notes.append(f"journal lines {bad[:10]} are not JSON ({injected} of them torn lines injected here, "
                     "each followed by events the resumed coordinator appended); repaired here to check the rest")
        chaos.repair_journal("the final check")
    events = read_events(run / "journal.jsonl")
    # every experiment started once, finished once, decided once
    started, finished, decisions = Counter(), Counter(), defaultdict(list)
    for e in events:
        kind = e["event"]
        if kind == "experiment_started":
            started[e["assignment"]["exp_id"]] += 1
        elif kind == "experiment_finished":
            finished[e["record"]["exp_id"]] += 1
        elif kind == "decision":
            decisions[int(e["exp_id"])].append(e["status"])
        elif kind == "agent_error" and e.get("exp_id") is not None and int(e["exp_id"]) not in finished:
            started[int(e["exp_id"])] -= 1  # withdrawn: its id is handed out again
    ids = sorted(set(started) | set(finished) | set(decisions))
    twice = [i for i in ids if started[i] > 1 or finished[i] > 1]
    never_finished = [i for i in ids if started[i] == 1 and finished[i] == 0]
    undecided = [i for i in ids if finished[i] and not decisions[i]]
    bad_decisions = [i for i in ids if any(s != "pending" for s in decisions[i][:-1])]  # nothing after a final
    orphans = [i for i in ids if (finished[i] or decisions[i]) and started[i] < 1]
    pending_end = [i for i in ids if decisions[i] and all(s == "pending" for s in decisions[i])]
    lost["started/finished twice"] = len(twice)
    lost["started, never finished"] = len(never_finished)
    lost["finished, never decided"] = len(undecided)
    lost["decided twice / after final"] = len(bad_decisions)
    lost["result without a start"] = len(orphans)
    for name, xs in (("twice", twice), ("never finished", never_finished), ("undecided", undecided),
                     ("bad decisions", bad_decisions), ("no start", orphans)):
        if xs:
            notes.append(f"experiments {name}: {xs[:20]}")
    figures["pending at the stop (not lost)"] = pending_end
    try:
        state = replay(events)
    except JournalError as exc:
        notes.append(f"replay: {exc}")
        lost["replay refused"] = 1
        return lost, figures, notes
    lost["replay refused"] = 0
    records = state.result_records()
    figures["records"] = len(state.records)
    figures["statuses"] = dict(sorted(state.counts().items()))
    figures["kinds"] = dict(sorted(Counter(r.kind.value for r in state.records.values()).items()))
    figures["sessions"] = state.sessions
    figures["best"] = (state.best.metric, state.baseline_metric) if state.best else None
    # exports equal the journal
    metric = state.config.get("task", {}).get("metric", "val_bpb")
    expected = exports.tsv_rows(records, state.measurements, state.noise_model().sigma)
    try:
        lines = (run / "results.tsv").read_text().splitlines()
        header, rows = lines[0].split("\t"), [line.split("\t") for line in lines[1:]]
        col = header.index("exp_id")
        want = {int(r[col]): r for r in expected}
        have = defaultdict(list)
        for r in rows:
            have[int(r[col])].append(r)
        diff = sorted(i for i in set(want) | set(have) if have.get(i) != [want.get(i)])
        lost["results.tsv rows != journal"] = len(diff) + (header != list(exports.columns(metric)))
        if diff:
            notes.append(f"results.tsv differs from the journal for ids {diff[:20]}")
        if [r[col] for r in rows] != [r[col] for r in expected]:
            notes.append("results.tsv rows are not in decision order")
    except (OSError, IndexError, ValueError) as exc:
        lost["results.tsv rows != journal"] = len(expected) or 1
        notes.append(f"results.tsv: {exc}")
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(run / "results.parquet").to_pydict()
        got = list(zip(table["exp_id"], table["status"], table["commit"]))
        exp = [(r.exp_id, r.status.value, r.commit) for r in records]
        lost["results.parquet rows != journal"] = len(set(got) ^ set(exp)) + abs(len(got) - len(exp))
    except Exception as exc:  # noqa: BLE001
        lost["results.parquet rows != journal"] = 1
        notes.append(f"results.parquet: {exc}")
    # best-branch invariants
    try:
        check_invariants(repo, TAG)
        lost["check_invariants"] = 0
    except Exception as exc:  # noqa: BLE001 - AssertionError, JournalError, git errors
        lost["check_invariants"] = 1
        notes.append(f"check_invariants: {type(exc).__name__}: {str(exc)[:400]}")
    # every tried diff reachable
    refs = {}
    for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)", f"refs/swarm/{TAG}/exp/").splitlines():
        name, sha = line.split()
        refs[int(name.rsplit("/", 1)[1])] = sha
    unreachable = [r.exp_id for r in state.records.values() if r.commit and refs.get(r.exp_id) != r.commit]
    lost["commit without its exp ref"] = len(unreachable)
    if unreachable:
        notes.append(f"no refs/swarm/{TAG}/exp/<id> on the commit of {unreachable[:20]}")
    empty = [r for r in state.records.values()
             if r.kind.value in ("proposal", "combination") and r.status.value in RAN and not r.commit]
    rerun = [r for r in empty if _run_again(state, r)]  # a combination queued again: its diff ran later
    # its worker died before its agent's edit became a commit and before its task started: nothing was tried
    untried = [r for r in empty if r not in rerun and _exp_commit(repo, r.exp_id) is None
               and not (run / "logs" / f"{r.exp_id}.log").exists()]
    empty = [r for r in empty if r not in rerun and r not in untried]
    if rerun:
        figures["empty commit, combination run again (not lost)"] = sorted(r.exp_id for r in rerun)
    if untried:
        figures["empty commit, died before commit and task (not lost)"] = sorted(r.exp_id for r in untried)
    lost["lost diffs (ran, empty commit)"] = len(empty)
    if empty:
        why = Counter(" ".join(r.error.split()[:4]) for r in empty)
        notes.append("lost diffs: " + "; ".join(f"{n} x {w!r}" for w, n in why.most_common()) +
                     f" (ids {sorted(r.exp_id for r in empty)[:20]})")
        notes.append("lost diffs in detail: " + "; ".join(_lost_diff_detail(repo, state, r) for r in empty[:12]))
    other_empty = Counter(f"{r.kind.value}/{r.status.value}" for r in state.records.values()
                          if not r.commit and r.status.value != "interrupted" and r not in empty + rerun + untried)
    if other_empty:
        figures["no commit, not a lost diff"] = dict(other_empty)
    # git: no lock file left behind (a worker killed inside a git command leaves one; every later git
    # command in that worktree then fails) and a clean object store
    locks = sorted(str(p.relative_to(repo)) for p in (repo / ".git").rglob("*.lock"))
    lost["stale git lock files"] = len(locks)
    if locks:
        notes.append(f"git lock files left: {', '.join(locks[:6])}")
    fsck = subprocess.run(["git", "fsck", "--no-dangling", "--no-progress"], cwd=repo, capture_output=True, text=True)
    problems = [ln for ln in (fsck.stdout + fsck.stderr).splitlines() if ln.strip()]
    lost["git fsck problems"] = len(problems) + (fsck.returncode != 0 and not problems)
    if problems:
        notes.append("git fsck: " + " | ".join(problems[:5]))
    # what the faults did to the experiments they hit
    for kind, hit in chaos.outcomes.items():
        seen = Counter()
        for exp in hit:
            r = state.records.get(exp) if exp is not None else None
            seen["(no task running)" if exp is None else (f"{r.status.value}" + ("" if r.commit else ", no commit"))
                 if r else "no record"] += 1
        figures[f"{kind} kills -> record"] = dict(seen)
    dead = Counter(f"{r.kind.value}/{r.status.value}" + ("" if r.commit else ", no commit")
                   for r in state.records.values() if "actor died" in r.error)
    if dead:
        figures["records of dead actors"] = dict(dead)
    retired = [n for n in state.notes if " retired: " in n]
    lost["workers retired"] = len(retired)
    notes.extend(f"retired: {n[:300]}" for n in retired)
    return lost, figures, notes


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def _run_again(state, r) -> bool:
    """A record with no commit whose combination was queued again and then measured with a commit."""
    a = state.assignments.get(r.exp_id)
    if a is None or a.combo_id is None:
        return False
    return any(b.combo_id == a.combo_id and i > r.exp_id and state.records.get(i) is not None
               and state.records[i].commit for i, b in state.assignments.items())


def _exp_commit(repo: Path, exp_id: int) -> str | None:
    """The commit a worker made for experiment `exp_id` (its message names it), wherever a ref or a
    reflog still holds it; None when there is none."""
    log = git(repo, "log", "--all", "--reflog", "--format=%H", f"--grep=swarm-exp: {TAG}/{exp_id} (")
    return log.split()[0] if log else None


def _lost_diff_detail(repo: Path, state, r) -> str:
    """What became of a lost diff: committed before its worker died (then only a reflog or a
    worker branch has it), a combination queued again and run under another id, or never committed."""
    a = state.assignments.get(r.exp_id)
    again = [i for i, b in state.assignments.items() if a is not None and a.combo_id is not None
             and b.combo_id == a.combo_id and i > r.exp_id]
    committed = _exp_commit(repo, r.exp_id)
    what = f"#{r.exp_id} {r.kind.value}"
    if a is not None and a.combo_id is not None:
        what += f" (combination {a.combo_id}{', run again as #' + str(again[0]) if again else ', not run again'})"
    log = repo / ".swarm" / TAG / "logs" / f"{r.exp_id}.log"
    return what + (f": committed as {committed[:7]}, which only a reflog / worker branch still holds" if committed
                   else ": never committed" + (", but its task started (log there)" if log.exists() else ""))


def report(chaos: Chaos, ending: str, lost: dict, figures: dict, notes: list[str], leaked: list[dict],
           wall: float) -> None:
    a = chaos.args
    restarts = len(chaos.sessions) - 1
    print(f"\n=== chaos: {a.workers} workers, stand-in task 0.3-0.5 s, --experiments {a.experiments}, "
          f"seed {a.seed} ===")
    print(f"ending: {ending}; wall time {wall:.0f} s; coordinator sessions {len(chaos.sessions)} "
          f"({restarts} restarts; journal sessions {figures.get('sessions')})")
    print("faults injected:")
    for kind in ("task", "actor", "coordinator kill", "coordinator stop", "torn line, no newline",
                 "torn line + newline"):
        print(f"  {kind:<24} {chaos.faults.get(kind, 0)}")
    for kind in ("task", "actor"):
        if f"{kind} kills -> record" in figures:
            print(f"  {kind} kills -> record: {figures[f'{kind} kills -> record']}")
    starts = [s["first_start"] - s["spawned"] for s in chaos.sessions[1:] if s["first_start"]]
    if starts:
        print(f"resume -> first experiment: median {sorted(starts)[len(starts) // 2]:.1f} s, max {max(starts):.1f} s")
    if chaos.ray_leftovers:
        print(f"Ray processes of killed coordinators that outlived them by 15 s: {chaos.ray_leftovers}")
    print(f"experiments: {figures.get('records')} recorded; by status {figures.get('statuses')}; "
          f"by kind {figures.get('kinds')}")
    if figures.get("pending at the stop (not lost)"):
        print(f"pending at the stop (not lost): {figures['pending at the stop (not lost)']}")
    untried = figures.get("empty commit, died before commit and task (not lost)")
    if untried:
        print(f"empty commit, the worker died before its commit and task (nothing tried, not lost): {untried}")
    rerun = figures.get("empty commit, combination run again (not lost)")
    if rerun:
        print(f"empty commit, combination run again (not lost): {rerun}")
    if figures.get("no commit, not a lost diff"):
        print(f"no commit, not a lost diff (kind/status): {figures['no commit, not a lost diff']}")
    if figures.get("records of dead actors"):
        print(f"records of dead actors (kind/status): {figures['records of dead actors']}")
    if figures.get("best"):
        best, base = figures["best"]
        print(f"best val_bpb {best:.6f} (baseline {base:.6f})" if base is not None else f"best {best:.6f}")
    for line in chaos.unexpected:
        print(f"unexpected: {line}")
    lost["coordinator failures (own exits, hung stops)"] = len(chaos.unexpected)
    lost["processes left after the run"] = len(leaked)
    if leaked:
        notes.append("left running: " + "; ".join(p["cmd"][:60] for p in leaked[:5]))
    lost["run did not reach --max-experiments"] = int(ending != "max_experiments")
    print("invariants (lost: target 0):")
    for name, n in lost.items():
        print(f"  {name:<46} lost: {n}")
    for note in notes:
        print(f"  ! {note}")
    status = figures.get("status output", "")
    if status:
        print("`status` says:\n" + "\n".join("  " + ln for ln in status.splitlines()[:8]))
    print(f"TOTAL lost: {sum(lost.values())}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, help="--max-experiments of the run (default 500; --quick 160)")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, help="wall-clock cap; then the run is stopped cleanly and checked "
                    "(default 10; --quick 3)")
    ap.add_argument("--interval", type=float, help="mean seconds between two faults while experiments run (default 1)")
    ap.add_argument("--coordinator-faults", type=int,
                    help="coordinator kills + stops, spread over the run by progress (default 8; --quick 2)")
    ap.add_argument("--torn-prob", type=float, default=0.6, help="chance of a torn journal line per coordinator stop")
    ap.add_argument("--max-runs", type=int, help="passed to `run` (default: the run's default, gate on)")
    ap.add_argument("--baseline-runs", type=int, help="passed to `run`")
    ap.add_argument("--quick", action="store_true", help="fewer experiments and faults: a 1-2 minute smoke check")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (kept anyway when lost > 0)")
    ap.add_argument("--silent", action="store_true", help="no line per fault, only the table")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    quick = args.quick
    args.experiments = args.experiments or (160 if quick else 500)
    args.minutes = args.minutes or (3.0 if quick else 10.0)
    args.interval = args.interval or 1.0
    args.coordinator_faults = args.coordinator_faults if args.coordinator_faults is not None else (2 if quick else 8)

    workdir = Path(tempfile.mkdtemp(prefix="chaos-", dir="/tmp"))
    chaos = Chaos(args, workdir)
    print(f"chaos run in {workdir} (marker {chaos.marker})", flush=True)
    ending = "error"
    try:
        ending = chaos.run()
    except KeyboardInterrupt:
        ending = "interrupted (Ctrl-C)"
        if chaos.proc and chaos.proc.poll() is None:
            chaos.proc.send_signal(signal.SIGINT)
            chaos.wait_exit(60)
    finally:
        if chaos.proc and chaos.proc.poll() is None:
            chaos.proc.kill()
            chaos.wait_exit(30)
    wall = time.monotonic() - chaos.t0
    leaked = chaos.leftovers()
    lost, figures, notes = check_run(chaos)
    report(chaos, ending, lost, figures, notes, leaked, wall)
    total = sum(lost.values())
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "ending": ending, "wall_s": wall,
                                               "faults": dict(chaos.faults), "lost": lost, "notes": notes,
                                               "figures": figures, "log": chaos.events}, indent=2, default=str))
    if total or args.keep:
        print(f"kept {workdir} (coordinator logs, repo, journal)")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
