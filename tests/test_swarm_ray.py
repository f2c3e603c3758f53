"""The whole swarm on a real local Ray cluster with fake GPUs, on the fast stand-in task.

One cluster for the module (ray.init takes ~10 s). Each test builds its own stand-in repo.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from swarm import gitops  # noqa: E402
from swarm.agents import parse_agent_spec  # noqa: E402
from swarm.config import SwarmConfig  # noqa: E402
from swarm.coordinator import Coordinator  # noqa: E402
from swarm.commands.status import status_text  # noqa: E402
from swarm.journal import read_events  # noqa: E402
from swarm.records import Kind, Status  # noqa: E402
from swarm.state import replay  # noqa: E402
from tests.standin import check_invariants, git, make_standin_repo, standin_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECRET = "SWARM_TEST_API_KEY"
SCRIPTED = "py:tests.standin_agents:ScriptedAgent"
HILL = "py:tests.standin_agents:HillClimber"


@pytest.fixture(scope="module")
def cluster():
    os.environ[SECRET] = "sekret-value"  # before ray.init: every actor inherits it
    ray.init(address="local", num_cpus=4, num_gpus=4, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    os.environ.pop(SECRET, None)


def config(repo: Path, tag: str, agents, **kw) -> SwarmConfig:
    specs = tuple(parse_agent_spec(a) if isinstance(a, str) else parse_agent_spec(a[0], a[1]) for a in agents)
    kw.setdefault("task", standin_task(timeout=20))
    kw.setdefault("baseline_runs", 1)  # one baseline per worker, and the gate decides on one run
    kw.setdefault("max_runs", 1)  # (no re-measurements): the gate's own tests ask for more
    return SwarmConfig(repo=repo, tag=tag, agents=specs, **kw)


def records(repo: Path, tag: str):
    return replay(read_events(repo / ".swarm" / tag / "journal.jsonl"))


def test_whole_loop_four_workers(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.3)
    dump = tmp_path / "env"
    task = standin_task(env={"STANDIN_ENV_DUMP": str(dump), "STANDIN_FORBIDDEN": SECRET})
    lines: list[str] = []
    # sandbox off: the stand-in dumps its env outside the worktree (tests/test_sandbox.py runs sandboxed)
    cfg = config(repo, "loop", [HILL], task=task, max_experiments=20, sandbox="off")
    summary = Coordinator(cfg, out=lines.append).run()
    assert summary.reason == "max_experiments" and summary.experiments == 20
    check_invariants(repo, "loop")
    s = records(repo, "loop")
    first = [s.assignments[i] for i in range(1, 5)]
    assert all(a.kind == Kind.BASELINE for a in first) and {a.worker for a in first} == {"w0", "w1", "w2", "w3"}
    assert s.baseline_metric == pytest.approx(2.0, abs=0.001) and 0 <= s.noise < 0.002
    assert not s.counts().get("crash"), [r.error for r in s.records.values()]  # exit 3 = secret seen
    envs = [json.loads(p.read_text()) for p in dump.glob("*.json")]
    assert len(envs) == 20 and not any(SECRET in e for e in envs)
    assert {e["CUDA_VISIBLE_DEVICES"] for e in envs} == {"0", "1", "2", "3"}
    assert s.best.metric < s.baseline_metric and summary.counts.get("keep", 0) >= 5
    assert len(lines) == 20 and lines[0].startswith("#")
    gitops.fsck(gitops.open_repo(repo))  # concurrent promotions left the object store clean
    assert ".swarm/" in (repo / ".git" / "info" / "exclude").read_text()
    assert git(repo, "status", "--porcelain") == ""  # tracked files of the task repo untouched
    import pandas as pd

    df = pd.read_parquet(repo / ".swarm" / "loop" / "results.parquet")
    assert sorted(df.exp_id) == list(range(1, 21)) and list(df.columns[:5]) == [
        "commit", "val_bpb", "memory_gb", "status", "description"]
    from swarm.commands.status import status_text

    text = status_text(str(repo), None)
    assert "run loop: stopped (max_experiments)" in text and "keep" in text
    assert "best: not yet" not in text and f"best val_bpb {s.best.metric:.6f}" in text


def _race(repo: Path, tag: str, fast: dict, slow: dict):
    """w0: a fast win then a slow second step; w1: a slower, bigger win from the same baseline."""
    agents = [
        (SCRIPTED, {"steps": [fast, {"X": 0.5, "SLEEP": 3.0}]}),
        (SCRIPTED, {"steps": [slow, {"X": 0.1, "SLEEP": 0.1}]}),
    ]
    Coordinator(config(repo, tag, agents, workers=2, max_experiments=6), out=lambda _: None).run()
    check_invariants(repo, tag)
    return records(repo, tag), read_events(repo / ".swarm" / tag / "journal.jsonl")


def test_parallel_wins_promote_and_combine(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.2)
    s, events = _race(repo, "race", {"Y": -1.0}, {"X": 3.0, "SLEEP": 1.5})
    fast, slow = s.records[3], s.records[4]
    assert fast.status == Status.KEEP and slow.status == Status.KEEP
    assert slow.parent == fast.parent == s.base_commit  # raced from the same old best
    queued = [e for e in events if e["event"] == "combination_queued" and "reapply" not in e]
    assert len(queued) == 1 and queued[0]["parent"] == slow.commit
    combo = [r for r in s.records.values() if r.kind == Kind.COMBINATION]
    assert len(combo) == 1 and combo[0].parent == slow.commit
    assert combo[0].metric == pytest.approx(1.0, abs=0.002) and combo[0].status == Status.KEEP
    assert s.best.commit == combo[0].commit
    text = git(repo, "show", "swarm/race/best:train.py")
    assert "X = 3.0" in text and "Y = -1.0" in text


def test_conflicting_wins_reapply_the_lost_change(cluster, tmp_path):
    """Both wins changed X: the one that lost its place on the best is re-proposed on the new best."""
    repo = make_standin_repo(tmp_path / "task", sleep=0.2)
    s, events = _race(repo, "conflict", {"X": 1.0}, {"X": 3.0, "SLEEP": 1.0})
    fast, slow = s.records[3], s.records[4]
    assert fast.status == Status.KEEP and slow.status == Status.KEEP and s.best.metric <= slow.metric
    queued = [e for e in events if e["event"] == "combination_queued" and e.get("reapply", {}).get("exp_id") == 3]
    assert len(queued) == 1 and queued[0]["reapply"]["exp_id"] == 3 and "+X = 1.0" in queued[0]["reapply"]["diff"]
    assert "conflict" in queued[0]["description"]
    again = [r for r in s.records.values() if r.description.startswith("re-apply #3")]
    assert len(again) == 1 and again[0].kind == Kind.PROPOSAL and again[0].parent == slow.commit
    assert again[0].status == Status.DISCARD  # X back to 1.0 is worse than 3.0: measured, then decided
    assert not [r for r in s.records.values() if r.kind == Kind.COMBINATION]


def test_failures_never_stop_the_swarm(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.1)
    steps = [{"CRASH": 1}, {"SLEEP": 30.0}, {"X": 1.0, "__write__": {"README.md": "touched\n"}}, {"__error__": "no idea"},
             {"NAN": 1}, {"X": 2.0}]
    cfg = config(repo, "fail", [(SCRIPTED, {"steps": steps})], workers=1, max_experiments=7,
                 task=standin_task(timeout=2.0))
    Coordinator(cfg, out=lambda _: None).run()
    check_invariants(repo, "fail")
    s = records(repo, "fail")
    statuses = [s.records[i].status for i in range(2, 8)]
    assert statuses == [Status.CRASH, Status.TIMEOUT, Status.INVALID, Status.INVALID, Status.CRASH, Status.KEEP]
    assert s.best.commit == s.records[7].commit
    # the invalid commit stays reachable; the agent error had none
    assert git(repo, "rev-parse", "refs/swarm/fail/exp/4") == s.records[4].commit
    assert s.records[5].commit == ""


def _run_in_thread(cfg):
    box: dict = {}
    coord = Coordinator(cfg, out=lambda _: None)

    def target():
        try:
            box["summary"] = coord.run()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return coord, t, box


def _wait_for(predicate, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def _started(repo, tag, worker, kind="proposal"):
    events = read_events(repo / ".swarm" / tag / "journal.jsonl")
    done = {e["record"]["exp_id"] for e in events if e["event"] == "experiment_finished"}
    hits = [e["assignment"] for e in events if e["event"] == "experiment_started"
            and e["assignment"]["worker"] == worker and e["assignment"]["kind"] == kind
            and e["assignment"]["exp_id"] not in done]
    return hits[0] if hits else None


def test_killed_worker_actor_is_replaced(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.2)
    # w0 is slow enough that the replacement (it gets work once its setup reported) has some left
    agents = [(SCRIPTED, {"steps": [{"X": 1.0, "SLEEP": 2.0}, {"X": 2.0, "SLEEP": 2.0}, {"X": 3.0, "SLEEP": 2.0}]}),
              (SCRIPTED, {"steps": [{"Y": -0.5, "SLEEP": 6.0}, {"Y": -1.0}]})]
    coord, thread, box = _run_in_thread(config(repo, "kill", agents, workers=2, max_experiments=8))
    victim = _wait_for(lambda: _started(repo, "kill", "w1"))
    time.sleep(0.5)  # the task is running
    ray.kill(coord.slots[1].actor)
    thread.join(120)
    assert "error" not in box, box.get("error")
    check_invariants(repo, "kill")
    s = records(repo, "kill")
    dead = s.records[victim["exp_id"]]
    assert dead.status == Status.CRASH and "actor died" in dead.error
    # its tried diff is not lost: the commit it made before dying is recovered from its branch
    assert dead.commit and git(repo, "rev-parse", f"refs/swarm/kill/exp/{dead.exp_id}") == dead.commit
    assert "+Y = -0.5" in git(repo, "diff", dead.parent, dead.commit)
    assert coord.slots[1].generation == 2
    later = [r for r in s.records.values() if r.worker == "w1" and r.exp_id > dead.exp_id]
    assert later and later[0].metric is not None  # the replacement measured in the repaired worktree
    assert coord.slots[1].info["pid"] != 0 and not coord.pool.setups and not coord.slots[1].retired
    assert len(s.records) == 8
    # the orphaned task of the dead actor was killed by its replacement, not left to finish
    log = repo / ".swarm" / "kill" / "logs" / f"{dead.exp_id}.log"
    assert "val_bpb" not in log.read_text()


def test_replacement_actor_that_dies_while_starting_is_retried_with_backoff(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.2)
    die_file = tmp_path / "die"
    agents = [(SCRIPTED, {"steps": [{"X": 1.0, "SLEEP": 1.0}, {"X": 2.0, "SLEEP": 1.0}, {"X": 3.0, "SLEEP": 1.0}]}),
              ("py:tests.standin_agents:DiesOnStart", {"steps": [{"Y": -0.5, "SLEEP": 6.0}, {"Y": -1.0}],
                                                       "die_file": str(die_file)})]
    coord, thread, box = _run_in_thread(config(repo, "respawn", agents, workers=2, max_experiments=200))
    coord.pool.replace_backoff = 0.2
    victim = _wait_for(lambda: _started(repo, "respawn", "w1"))
    time.sleep(0.5)
    die_file.write_text("2")  # the next two actors of w1 die while they are being set up
    ray.kill(coord.slots[1].actor)

    def w1_works_again():
        events = read_events(repo / ".swarm" / "respawn" / "journal.jsonl")
        return any(e["event"] == "experiment_finished" and e["record"]["worker"] == "w1"
                   and e["record"]["exp_id"] > victim["exp_id"] for e in events)

    _wait_for(w1_works_again, timeout=120)
    coord.stop.set()
    thread.join(120)
    assert not thread.is_alive() and "error" not in box, box.get("error")
    check_invariants(repo, "respawn")
    s = records(repo, "respawn")
    assert s.records[victim["exp_id"]].status == Status.CRASH
    retries = [n for n in s.notes if n.startswith("w1: its replacement actor failed to start") and "trying again" in n]
    assert [r.split("(attempt ")[-1] for r in retries] == ["2 of 3)", "3 of 3)"]
    assert "w1: replacement actor started (attempt 3 of 3)" in s.notes
    assert coord.slots[1].generation == 4 and not coord.slots[1].retired


def test_permanent_agent_error_retires_workers_and_ends_the_run(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.1)
    agents = [(SCRIPTED, {"steps": [{"__outage__": "401 invalid api key", "__permanent__": True}]})]
    lines: list[str] = []
    summary = Coordinator(config(repo, "perm", agents, workers=2, max_experiments=10), out=lines.append).run()
    assert summary.reason == "no_workers" and "every worker is retired" in summary.message
    check_invariants(repo, "perm")
    s = records(repo, "perm")
    assert sorted(s.records) == [1, 2] and s.stop_reason == "no_workers"  # the baselines; then no one asked again
    assert s.agent_errors == 2 and not s.running()
    assert sorted(n.split()[0] for n in s.notes if " retired: agent " in n and "failed permanently" in n) == ["w0", "w1"]
    assert any("permanent" in line for line in lines) and any("every worker is retired" in line for line in lines)


def test_git_failure_storing_one_result_crashes_only_that_experiment(cluster, tmp_path, monkeypatch):
    repo = make_standin_repo(tmp_path / "task", sleep=0.2)
    real = gitops.write_ref

    def flaky(r, ref, sha):
        if ref.endswith("/exp/3"):
            raise gitops.GitError("cannot lock ref (simulated)")
        return real(r, ref, sha)

    monkeypatch.setattr(gitops, "write_ref", flaky)
    summary = Coordinator(config(repo, "gitfail", [HILL], workers=2, max_experiments=6), out=lambda _: None).run()
    assert summary.reason == "max_experiments"
    check_invariants(repo, "gitfail")  # every other commit has its exp ref
    s = records(repo, "gitfail")
    assert s.records[3].status == Status.CRASH and "could not be stored" in s.records[3].error
    assert s.records[3].commit == "" and len(s.records) == 6
    assert all(r.metric is not None for i, r in s.records.items() if i != 3)


def test_stop_records_running_as_interrupted_then_resume(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.2)
    agents = [(SCRIPTED, {"steps": [{"X": 1.0, "SLEEP": 5.0}]}), (SCRIPTED, {"steps": [{"Y": -1.0, "SLEEP": 5.0}]})]
    coord, thread, box = _run_in_thread(config(repo, "stop", agents, workers=2, max_experiments=6))
    _wait_for(lambda: _started(repo, "stop", "w0") and _started(repo, "stop", "w1"))
    coord.stop.set()
    thread.join(60)
    assert box["summary"].reason == "interrupted"
    s = records(repo, "stop")
    assert s.stopped and s.stop_reason == "interrupted"
    assert s.counts()["interrupted"] == 2 and not s.running()
    check_invariants(repo, "stop")
    summary = Coordinator(config(repo, "stop", [HILL], workers=2, max_experiments=6, resume=True),
                          out=lambda _: None).run()
    assert summary.reason == "max_experiments"
    check_invariants(repo, "stop")
    after = records(repo, "stop")  # the 2 interrupted ones do not count towards --max-experiments 6
    assert len(after.records) == 8 and after.counted_experiments() == 6 and after.counts()["interrupted"] == 2


def _task_toml(path: Path) -> Path:
    path.write_text('[task]\nname = "standin"\nmutable_files = ["train.py"]\ncommand = ["{python}", "train.py"]\n'
                    'time_budget = 1.0\ntimeout = 20.0\n')
    return path


def test_resume_after_coordinator_sigkill(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.6)
    task_file = _task_toml(tmp_path / "standin.toml")
    argv = [sys.executable, "-m", "swarm.cli", "run", "--repo", str(repo), "--tag", "crashy", "--task", str(task_file),
            "--agents", HILL, "--workers", "2", "--max-experiments", "12", "--address", cluster]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def progressed():
            s = records(repo, "crashy") if (repo / ".swarm" / "crashy" / "journal.jsonl").exists() else None
            return s and len(s.records) >= 4 and s.running()
        _wait_for(progressed, timeout=90)
        # a second coordinator on the live run is refused with one line naming the live one
        second = subprocess.run([*argv[:8], "--resume", "--address", cluster], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"already running: coordinator pid {proc.pid} on " in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert f"running (coordinator pid {proc.pid}" in status_text(str(repo), "crashy")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = records(repo, "crashy")
    unfinished = [a.exp_id for a in before.running()]
    assert unfinished and not before.stopped
    assert "coordinator died (last seen " in status_text(str(repo), "crashy")
    from swarm.cli import main

    assert main(["run", "--repo", str(repo), "--tag", "crashy", "--resume", "--quiet"]) == 0
    check_invariants(repo, "crashy")
    after = records(repo, "crashy")
    assert all(after.records[i].status == Status.INTERRUPTED for i in unfinished)
    assert len(after.records) == 12 + len(unfinished) and after.sessions == 2  # interrupted ones do not count
    assert any(n.startswith(f"took over from a coordinator that died (pid {proc.pid} on ") for n in after.notes)
    assert after.best.metric <= before.best.metric  # same best, only improved
    for i, r in before.records.items():
        assert after.records[i] == r  # nothing recorded twice or rewritten
    gitops.fsck(gitops.open_repo(repo))


def test_resume_settles_a_half_recorded_experiment(cluster, tmp_path):
    """A coordinator killed between `experiment_finished` and `decision`: resume decides it once."""
    repo = make_standin_repo(tmp_path / "task", sleep=0.1)
    Coordinator(config(repo, "half", [HILL], workers=2, max_experiments=6), out=lambda _: None).run()
    path = repo / ".swarm" / "half" / "journal.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    cut = max(i for i, line in enumerate(lines) if '"event":"experiment_finished"' in line)
    path.write_text("".join(lines[: cut + 1]) + '{"event":"decis')  # plus a torn line
    half = records(repo, "half")
    assert cut and len(half.verdicts) == 6 and len(half.records) == 5
    stray = next(r.commit for r in half.records.values() if r.commit and r.commit != half.best.commit)
    git(repo, "update-ref", "refs/heads/swarm/half/best", stray)  # a ref update the journal never saw
    Coordinator(config(repo, "half", [HILL], workers=2, max_experiments=8, resume=True), out=lambda _: None).run()
    check_invariants(repo, "half")
    assert len(records(repo, "half").records) == 8


def test_bundle_transport_swarm(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.2)
    cfg = config(repo, "bund", [HILL], workers=2, max_experiments=8, transport="bundle")
    coord = Coordinator(cfg, out=lambda _: None)
    coord.run()
    check_invariants(repo, "bund")
    assert all(slot.transport == "bundle" for slot in coord.slots)
    clone = repo / ".swarm" / "bund" / "clones" / "w0"
    assert (clone / ".git").is_dir() and not (repo / ".swarm" / "bund" / "worktrees" / "w0").exists()
    assert "worktree" not in git(repo, "worktree", "list").split("\n", 1)[-1]
    gitops.fsck(gitops.open_repo(repo))


def test_a_dead_bundle_workers_commit_is_recovered_from_its_node(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.2)
    agents = [(SCRIPTED, {"steps": [{"X": 1.0, "SLEEP": 1.0}, {"X": 2.0, "SLEEP": 1.0}]}),
              (SCRIPTED, {"steps": [{"Y": -0.5, "SLEEP": 6.0}, {"Y": -1.0}]})]
    coord, thread, box = _run_in_thread(config(repo, "bkill", agents, workers=2, max_experiments=6,
                                               transport="bundle"))
    victim = _wait_for(lambda: _started(repo, "bkill", "w1"))
    time.sleep(0.8)  # committed in its own clone, the task is running
    ray.kill(coord.slots[1].actor)
    thread.join(120)
    assert "error" not in box, box.get("error")
    check_invariants(repo, "bkill")
    dead = records(repo, "bkill").records[victim["exp_id"]]
    assert dead.status == Status.CRASH and dead.commit
    assert git(repo, "rev-parse", f"refs/swarm/bkill/exp/{dead.exp_id}") == dead.commit
    assert "+Y = -0.5" in git(repo, "diff", dead.parent, dead.commit)


def test_cli_errors_are_one_line(cluster, tmp_path, capsys):
    from swarm.cli import main

    plain = tmp_path / "plain"
    plain.mkdir()
    assert main(["run", "--repo", str(plain), "--task", str(_task_toml(tmp_path / "t.toml"))]) == 2
    assert "not inside a git repository" in capsys.readouterr().err
    repo = make_standin_repo(tmp_path / "task")
    assert main(["run", "--repo", str(repo), "--tag", "nope", "--resume"]) == 2
    assert "no run tagged 'nope'" in capsys.readouterr().err
    (repo / "train.py").write_text((repo / "train.py").read_text() + "\n# dirty\n")
    assert main(["run", "--repo", str(repo), "--task", str(tmp_path / "t.toml"), "--agents", HILL]) == 2
    assert "uncommitted changes in train.py" in capsys.readouterr().err


@pytest.mark.slow
def test_real_trainer_swarm_with_builtin_agent(cluster, tmp_path):
    """The README's main job in miniature: 2 workers, the real GPT trainer (cpu profile, stdlib
    corpus), the built-in agent, 4 experiments."""
    import shutil

    for needed in ("trainer/train.py", "prepare/core.py", "swarm/agents/builtin.py"):
        if not (ROOT / needed).exists():
            pytest.skip(f"{needed} is not there yet")
    from swarm.task import gpt_task

    repo = tmp_path / "gpt"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("prepare", "trainer"):
        shutil.copytree(ROOT / name, repo / name, ignore=ignore)
    shutil.copy(ROOT / "program.md", repo / "program.md")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "gpt task")
    cfg = SwarmConfig(repo=repo, tag="gpt", task=gpt_task("cpu"), agents=(parse_agent_spec("builtin"),),
                      workers=2, max_experiments=4, profile="cpu", source="stdlib", prepare_data=True)
    lines: list[str] = []
    summary = Coordinator(cfg, out=lines.append).run()
    print("\n".join(lines))
    check_invariants(repo, "gpt")
    s = records(repo, "gpt")
    assert len(s.records) == 4 and summary.reason == "max_experiments"
    baselines = [r for r in s.records.values() if r.kind == Kind.BASELINE]
    assert all(r.status == Status.KEEP and 0 < r.metric < 20 for r in baselines), [r.error for r in baselines]
    assert s.best is not None and s.best.metric <= s.baseline_metric
    proposals = [r for r in s.records.values() if r.kind != Kind.BASELINE]
    assert all(r.agent == "builtin" and r.commit != r.parent for r in proposals)
    assert all(r.status != Status.INVALID for r in proposals), [r.error for r in proposals]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_through_the_cli_is_a_clean_stop(cluster, tmp_path, signum):
    # SIGTERM matters because ray.init replaces its handler: the CLI re-installs its own after
    repo = make_standin_repo(tmp_path / "task", sleep=0.2)
    task_file = _task_toml(tmp_path / "standin.toml")
    agents = ",".join([HILL])
    argv = [sys.executable, "-m", "swarm.cli", "run", "--repo", str(repo), "--tag", "ctrlc", "--task", str(task_file),
            "--agents", agents, "--workers", "2", "--address", cluster]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (repo / ".swarm/ctrlc/journal.jsonl").exists()
                  and len(records(repo, "ctrlc").records) >= 4 and records(repo, "ctrlc").running(), timeout=90)
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert "stopped (interrupted)" in out
    s = records(repo, "ctrlc")
    assert s.stopped and s.stop_reason == "interrupted" and s.counts()["interrupted"] >= 1 and not s.running()
    check_invariants(repo, "ctrlc")


def test_hours_limit_stops_starting_new_experiments(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.3)
    summary = Coordinator(config(repo, "hours", [HILL], workers=2, hours=2.5 / 3600), out=lambda _: None).run()
    assert summary.reason == "hours" and 2 <= summary.experiments <= 12
    s = records(repo, "hours")
    assert not s.counts().get("interrupted") and not s.running()  # running ones were allowed to finish
    check_invariants(repo, "hours")


def test_unreachable_address_is_one_line(tmp_path, capsys):
    from swarm.cli import main

    repo = make_standin_repo(tmp_path / "task")
    task_file = _task_toml(tmp_path / "t.toml")
    code = main(["run", "--repo", str(repo), "--task", str(task_file), "--agents", HILL, "--address", "127.0.0.1:1"]) \
        if not ray.is_initialized() else None
    if code is None:  # the module's cluster is up in this process: check the guard directly
        from swarm.raycluster import check_reachable as _check_reachable
        from swarm.errors import ConfigError

        with pytest.raises(ConfigError, match="unreachable"):
            _check_reachable("127.0.0.1:1")
    else:
        assert code == 2 and "unreachable" in capsys.readouterr().err


def _noisy_repo(path: Path, noise: float, sleep: float = 0.1) -> Path:
    repo = make_standin_repo(path, sleep=sleep)
    train = repo / "train.py"
    train.write_text(train.read_text().replace("NOISE = 0.0005", f"NOISE = {noise}"))
    git(repo, "commit", "-qam", "noisier")
    return repo


def test_noise_gate_confirms_a_grey_zone_win_before_deciding(cluster, tmp_path):
    """One worker still measures the baseline three times; a change that measures about 2 standard
    errors better by luck alone (it has no true effect) is neither kept nor dropped on one run: it is
    measured again first, and the exports show every run."""
    repo = _noisy_repo(tmp_path / "task", noise=0.01)  # uniform +-0.01: sigma about 0.006
    steps = [{"SLEEP": 0.11}, {"Y": 0.5}]  # no true effect (its noise draw is lucky: -0.0068); a clear loss
    cfg = config(repo, "gate", [(SCRIPTED, {"steps": steps})], workers=1, max_experiments=9, baseline_runs=3,
                 max_runs=6)
    summary = Coordinator(cfg, out=lambda _: None).run()
    check_invariants(repo, "gate")
    s = records(repo, "gate")
    wave = [r for r in s.records.values() if r.kind == Kind.BASELINE]
    assert len(wave) == 3 and s.noise is not None and 0.002 < s.noise < 0.012
    candidate = s.records[4]
    confirms = [r for r in s.records.values() if r.kind == Kind.CONFIRM and r.commit == candidate.commit]
    assert confirms and confirms[0].exp_id == 5  # scheduled ahead of the next proposal
    assert confirms[0].description.startswith("confirm #4")
    decisions = [e for e in read_events(repo / ".swarm" / "gate" / "journal.jsonl")
                 if e["event"] == "decision" and e["exp_id"] == 4]
    assert decisions[0]["status"] == "pending" and "grey zone" in decisions[0]["reason"]
    # decided on its runs together (never on the lucky first one alone), the same fate on every run of it
    fate = s.records[4].status
    import re

    runs = int(re.search(r"over (\d+) runs", s.reasons[4]).group(1))
    assert fate in (Status.KEEP, Status.DISCARD) and runs >= 2
    assert all(r.status == fate for r in confirms)
    assert (s.best.commit == candidate.commit) == (fate == Status.KEEP)
    rows = [line.split("\t") for line in (repo / ".swarm" / "gate" / "results.tsv").read_text().splitlines()]
    head = rows[0]
    assert head[:8] == ["commit", "val_bpb", "memory_gb", "status", "description", "runs", "mean", "stderr"]
    row4 = next(r for r in rows[1:] if r[head.index("exp_id")] == "4")
    assert int(row4[5]) == 1 + len(confirms) and float(row4[7]) > 0
    assert sum(1 for r in rows[1:] if r[head.index("kind")] == "confirm") >= len(confirms)
    assert 0 < summary.confirm_share < 1 and summary.sigma.sigma is not None
    from swarm.commands.run import format_summary
    from swarm.commands.status import status_text

    assert "confirmations took" in format_summary(summary) and "noise sigma" in status_text(str(repo), "gate")


def test_same_change_on_the_same_parent_runs_once(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=1.0)
    agents = [(SCRIPTED, {"steps": [{"X": 1.0}, {"Y": -0.5}]}), (SCRIPTED, {"steps": [{"X": 1.0}, {"Y": -0.5}]})]
    Coordinator(config(repo, "dup", agents, workers=2, max_experiments=4), out=lambda _: None).run()
    check_invariants(repo, "dup")
    s = records(repo, "dup")
    dups = [r for r in s.records.values() if r.status == Status.DUPLICATE]
    ran = [r for r in s.records.values() if r.kind == Kind.PROPOSAL and r.status != Status.DUPLICATE]
    assert len(dups) == 1 and "the same change as #" in dups[0].error and dups[0].task_seconds == 0
    assert dups[0].commit and git(repo, "rev-parse", f"refs/swarm/dup/exp/{dups[0].exp_id}") == dups[0].commit
    assert len(ran) == 1 and ran[0].description == dups[0].description


def test_a_pending_candidate_is_confirmed_after_a_resume(cluster, tmp_path):
    repo = _noisy_repo(tmp_path / "task", noise=0.01)
    steps = [{"SLEEP": 0.11}, {"Y": 0.5}]  # #4 lands in the grey zone (see the test above)
    first = config(repo, "again", [(SCRIPTED, {"steps": steps})], workers=1, max_experiments=4, baseline_runs=3,
                   max_runs=6)
    summary = Coordinator(first, out=lambda _: None).run()
    assert summary.pending == 1 and records(repo, "again").pending_commits() == [records(repo, "again").records[4].commit]
    from dataclasses import replace

    Coordinator(replace(first, max_experiments=6, resume=True), out=lambda _: None).run()
    check_invariants(repo, "again")
    s = records(repo, "again")
    assert s.assignments[5].kind == Kind.CONFIRM and s.assignments[5].parent == s.records[4].commit
    assert s.records[5].description.startswith("confirm #4")


def test_a_raced_win_over_its_parent_is_combined_with_the_newer_best(cluster, tmp_path):
    """w1's change (Y) is a real gain over the baseline it started from, but the best moved to a
    bigger win (X) meanwhile: it is not promoted, yet its change reaches the best through a
    combination instead of being lost."""
    repo = make_standin_repo(tmp_path / "task", sleep=0.2)
    s, events = _race(repo, "raced", {"X": 3.0}, {"Y": -1.0, "SLEEP": 1.5})
    fast, slow = s.records[3], s.records[4]
    assert fast.status == Status.KEEP and slow.status == Status.DISCARD and slow.parent == s.base_commit
    assert "real gain over its parent" in s.reasons[4]
    queued = [e for e in events if e["event"] == "combination_queued"]
    assert len(queued) == 1 and queued[0]["parent"] == fast.commit and queued[0]["sources"] == [3, 4]
    combo = [r for r in s.records.values() if r.kind == Kind.COMBINATION]
    assert len(combo) == 1 and combo[0].status == Status.KEEP and s.best.commit == combo[0].commit
    text = git(repo, "show", "swarm/raced/best:train.py")
    assert "X = 3.0" in text and "Y = -1.0" in text


def test_task_processes_are_ended_on_the_node_that_ran_them(cluster):
    """At the stop, each node that ran a worker gets a Ray task that ends this run's task
    processes there (a task outlives an actor killed under it); here the node is the local one."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from swarm.worker_actor import _end_tasks_remote

    env = {**os.environ, "AUTORESEARCH_RUN": "/tmp/run-ended", "AUTORESEARCH_WORKER": "w9"}
    task = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    other = subprocess.Popen(["sleep", "300"], env={**env, "AUTORESEARCH_RUN": "/tmp/another-run"},
                             start_new_session=True)
    try:
        node = ray.get_runtime_context().get_node_id()
        ray.get(_end_tasks_remote().options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                .remote("/tmp/run-ended", ["w9"]), timeout=60)
        assert task.wait(timeout=10) == -signal.SIGKILL
        assert other.poll() is None  # another run's task is left alone
    finally:
        for p in (task, other):
            p.kill()
            p.wait()


def test_a_cpu_worker_in_a_gpu_run_is_refused_before_any_experiment(cluster, tmp_path):
    """Fake GPUs, no CUDA: every worker's node says it cannot train at the gpu profile."""
    from swarm.errors import ConfigError

    repo = make_standin_repo(tmp_path / "task")
    cfg = config(repo, "gpuless", [HILL], workers=2, max_experiments=4, profile="gpu", prepare_data=True)
    with pytest.raises(ConfigError, match="has no CUDA GPU, but the run uses the gpu profile"):
        Coordinator(cfg, out=lambda _: None).run()
    events = read_events(cfg.journal_path)
    assert not [e for e in events if e["event"] == "experiment_started"]
    assert events[-1]["event"] == "run_stopped" and "no CUDA GPU" in events[-1]["reason"]
