"""The sandbox (swarm.sandbox): the allow-listed environment and the bwrap argument list as plain
data; the modes and their plumbing (config, CLI); then real sandboxes where bubblewrap works: the
timeout kill and `kill_strays` end everything inside, a command agent writes only its worktree,
and, through the real swarm (one local Ray cluster for the module), a hostile train.py fails at
everything it tries, while the same train.py with `--sandbox off` succeeds (so the test can fail).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from swarm import sandbox
from swarm.agents.base import AgentContext
from swarm.agents.command import CommandAgent
from swarm.cli import build_parser, main
from swarm.commands.run import build_config
from swarm.config import SwarmConfig
from swarm.errors import ConfigError
from swarm.journal import EventType, Journal
from swarm.proc import run_process
from swarm.sandbox import SandboxPolicy, bwrap_argv, task_env
from swarm.proc import kill_strays
from tests.standin import git, make_standin_repo, standin_task

needs_bwrap = pytest.mark.skipif(not sandbox.probe(), reason="bubblewrap does not work here "
                                 "(apt-get install bubblewrap)")
SCRIPTED = "py:tests.standin_agents:ScriptedAgent"
SECRET_VAR = "SANDBOX_TEST_SERVICE_KEY"  # exported into the Ray cluster: no task may read it anywhere


# ---- the environment --------------------------------------------------------------------------


def test_task_env_is_an_allow_list_without_credentials():
    base = {
        "PATH": "/usr/bin", "HOME": "/home/u", "LC_ALL": "C.UTF-8", "TOKENIZERS_PARALLELISM": "false",
        "HF_HOME": "/hf", "CUDA_VISIBLE_DEVICES": "2", "OMP_NUM_THREADS": "4", "AUTORESEARCH_HOME": "/data",
        "TORCHINDUCTOR_CACHE_DIR": "/c", "NCCL_DEBUG": "WARN",
        # credentials, also under allowed prefixes, and things that are simply not on the list
        "AUTORESEARCH_API_KEY": "k1", "HF_TOKEN": "k2", "OPENAI_API_KEY": "k3", "CUDA_AUTH_TOKEN": "k4",
        "TORCH_HUB_PASSWORD": "k5", "DATABASE_URL": "postgres://u:k6@db", "MY_SERVICE_PW": "k7",
        "SSH_AUTH_SOCK": "/run/ssh", "RAY_ADDRESS": "10.0.0.1:6379", "LD_PRELOAD": "/evil.so",
    }
    env = task_env(base, {"AUTORESEARCH_EXP_ID": "3", "STANDIN_FORBIDDEN": "X", "OMP_NUM_THREADS": "1"})
    kept = {"PATH", "HOME", "LC_ALL", "TOKENIZERS_PARALLELISM", "HF_HOME", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
            "AUTORESEARCH_HOME", "TORCHINDUCTOR_CACHE_DIR", "NCCL_DEBUG", "AUTORESEARCH_EXP_ID", "STANDIN_FORBIDDEN"}
    assert set(env) == kept
    assert env["OMP_NUM_THREADS"] == "1" and env["CUDA_VISIBLE_DEVICES"] == "2"  # extra goes on top
    assert not any(v.startswith("k") or "k6" in v for v in env.values())


def test_worker_task_env_uses_the_allow_list(monkeypatch, tmp_path):
    from swarm.agents import parse_agent_spec
    from swarm.decisions import Assignment
    from swarm.records import Kind
    from swarm.worker import Worker, WorkerSpec

    monkeypatch.setenv("AUTORESEARCH_API_KEY", "sekret")
    monkeypatch.setenv("SOME_DAEMON_URL", "http://user:pw@host")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    spec = WorkerSpec(name="w0", tag="t", task=standin_task(), agent=parse_agent_spec("builtin"),
                      checkout=str(tmp_path), log_dir=str(tmp_path / "logs"), env={"OMP_NUM_THREADS": "2"})
    a = Assignment(exp_id=4, worker="w0", agent="builtin", kind=Kind.BASELINE, parent="abc", parent_metric=None)
    env = Worker(spec).task_env(a)
    assert "AUTORESEARCH_API_KEY" not in env and "SOME_DAEMON_URL" not in env
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["OMP_NUM_THREADS"] == "2" and env["AUTORESEARCH_EXP_ID"] == "4"


# ---- the bwrap argument list --------------------------------------------------------------------


def test_bwrap_argv_covers_first_then_binds_back():
    policy = SandboxPolicy(
        writable=("/repo/.swarm/t/worktrees/w0",),
        hidden=("/repo/.swarm/t", "/repo/.swarm/t/logs", "/"),  # nested and "/": covered once, "/" never
        masked=("/home/u", "/run"),
        keep=("/home/u/.cache/autoresearch", "/home/u/venv", "/home/u/venv/lib", "/usr/lib", "/home", "/tmp/data"),
        devices=("/dev/nvidia0", "/dev/nvidiactl"),
    )
    assert bwrap_argv(policy) == [
        "bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
        "--ro-bind", "/", "/", "--dev", "/dev",
        "--dev-bind", "/dev/nvidia0", "/dev/nvidia0", "--dev-bind", "/dev/nvidiactl", "/dev/nvidiactl",
        "--proc", "/proc", "--tmpfs", "/tmp", "--dir", "/tmp/home",
        "--tmpfs", "/run", "--tmpfs", "/home/u",
        # kept: what a cover hides (not /usr/lib: visible anyway; not /home: it would undo the cover of /home/u)
        "--ro-bind", "/tmp/data", "/tmp/data", "--ro-bind", "/home/u/venv", "/home/u/venv",
        "--ro-bind", "/home/u/.cache/autoresearch", "/home/u/.cache/autoresearch",
        "--tmpfs", "/repo/.swarm/t",
        "--bind", "/repo/.swarm/t/worktrees/w0", "/repo/.swarm/t/worktrees/w0",
        "--remount-ro", "/run", "--remount-ro", "/home/u", "--remount-ro", "/repo/.swarm/t",
        "--chdir", "/repo/.swarm/t/worktrees/w0", "--",
    ]


def test_the_checkouts_git_entry_is_bound_read_only_over_the_worktree(tmp_path):
    from swarm.sandbox import bwrap_argv, task_policy

    wt = tmp_path / "wt"
    wt.mkdir()
    (wt / ".git").write_text("gitdir: /somewhere\n")
    policy = task_policy(wt, env={"HOME": str(tmp_path / "nohome"), "PATH": "/usr/bin"})
    args = bwrap_argv(policy)
    git_entry = str((wt / ".git").resolve())
    assert policy.readonly == (git_entry,)
    rw = args.index("--bind", args.index(str(wt.resolve())) - 1)
    assert args.index("--ro-bind", rw) < args.index(git_entry) and args.index(git_entry) > rw


def test_command_policy_keeps_the_network_and_a_hidden_dir_never_covers_the_worktree(tmp_path):
    args = bwrap_argv(sandbox.command_policy(tmp_path, writable=[tmp_path / "state", "/no/such/dir"]))
    assert "--unshare-net" not in args and "--unshare-pid" in args and "--ro-bind" in args
    assert args[args.index("--bind") + 1] == str(tmp_path.resolve()) and "/no/such/dir" not in args
    inner = SandboxPolicy(writable=("/w",), hidden=("/w", "/w/x"))  # nothing may cover the writable dir
    assert "--tmpfs" not in bwrap_argv(inner)[bwrap_argv(inner).index("/tmp") + 1:]


# ---- modes and their plumbing -------------------------------------------------------------------


def test_resolve_modes(monkeypatch):
    monkeypatch.setattr(sandbox, "_probe", lambda network: "bwrap: setting up uid map: Permission denied")
    assert sandbox.resolve("off") == ("off", "")
    mode, warning = sandbox.resolve("auto")
    assert mode == "off" and "Permission denied" in warning and "\n" not in warning
    with pytest.raises(ConfigError, match=r"apt-get install bubblewrap\) or use --sandbox off"):
        sandbox.resolve("bwrap")
    with pytest.raises(ConfigError, match="sandbox must be one of"):
        sandbox.resolve("docker")
    monkeypatch.setattr(sandbox, "_probe", lambda network: "")
    assert sandbox.resolve("auto") == ("bwrap", "") == sandbox.resolve("bwrap")


def test_config_flag_file_and_resume(tmp_path):
    repo = make_standin_repo(tmp_path / "task")
    task = tmp_path / "standin.toml"
    task.write_text('[task]\nname = "standin"\nmutable_files = ["train.py"]\ncommand = ["{python}", "train.py"]\n')

    def build(*argv):
        return build_config(build_parser().parse_args(["run", "--repo", str(repo), *argv]))

    assert build("--task", str(task)).sandbox == "auto"
    cfg = build("--task", str(task), "--tag", "s", "--sandbox", "off")
    assert cfg.sandbox == "off" and cfg.to_dict()["sandbox"] == "off"
    Journal(cfg.journal_path).append(EventType.RUN_STARTED, tag="s", base_commit="x", config=cfg.to_dict())
    assert build("--resume", "--tag", "s").sandbox == "off"  # a resumed run keeps it
    assert build("--resume", "--tag", "s", "--sandbox", "bwrap").sandbox == "bwrap"
    conf = tmp_path / "run.toml"
    conf.write_text('[run]\nsandbox = "off"\n')
    assert build("--task", str(task), "--config", str(conf)).sandbox == "off"
    with pytest.raises(ConfigError, match="--sandbox must be one of"):
        SwarmConfig(repo=repo, tag="x", task=standin_task(), agents=cfg.agents, sandbox="on")


def test_run_fails_fast_when_bwrap_is_demanded_but_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "_probe", lambda network: "failed to start bwrap: [Errno 2] No such file")
    repo = make_standin_repo(tmp_path / "task")
    task = tmp_path / "standin.toml"
    task.write_text('[task]\nname = "standin"\nmutable_files = ["train.py"]\ncommand = ["{python}", "train.py"]\n')
    assert main(["run", "--repo", str(repo), "--task", str(task), "--sandbox", "bwrap"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "apt-get install bubblewrap" in err and "--sandbox off" in err
    assert not (repo / ".swarm").exists()  # nothing started


# ---- real sandboxes -------------------------------------------------------------------------------


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _gone(marker: str, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _processes_with(marker)


@needs_bwrap
def test_timeout_and_kill_strays_end_everything_inside(tmp_path):
    """A task that starts a child and a setsid daemon: the timeout kill of bwrap's process group
    and kill_strays (which finds bwrap and the task by their environment) each end them all."""
    marker = f"sandbox-marker-{uuid.uuid4().hex}"
    script = ("import subprocess, sys, time; "
              "cmd = [sys.executable, '-c', 'import time; time.sleep(300)', sys.argv[1]]; "
              "subprocess.Popen(['setsid', *cmd]); subprocess.Popen(cmd); time.sleep(300)")
    env = task_env(os.environ, {"AUTORESEARCH_RUN": marker, "AUTORESEARCH_WORKER": "w0"})
    argv, env = sandbox.wrap([sys.executable, "-c", script, marker], env, sandbox.task_policy(tmp_path, env=env))
    result = run_process(argv, cwd=tmp_path, env=env, timeout=3)
    assert result.timed_out and _gone(marker)
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, start_new_session=True)
    deadline = time.monotonic() + 10
    while len(_processes_with(marker)) < 5 and time.monotonic() < deadline:  # bwrap, its init, the task, 2 children
        time.sleep(0.1)
    assert len(_processes_with(marker)) == 5
    kill_strays(marker, "w0")
    assert proc.wait(timeout=10) != 0 and _gone(marker)


FAKE_CLI = """\
import json, os, socket, sys
notes = []
for name, path in json.loads(sys.argv[1]).items():
    try:
        with open(path, "a") as f:
            f.write("written by the CLI")
        notes.append(name + "=written")
    except OSError as exc:
        notes.append(name + "=blocked:" + exc.strerror)
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=5).close()
    notes.append("network=yes")
except OSError:
    notes.append("network=no")
notes.append("key=" + os.environ.get("SANDBOX_TEST_CLI_KEY", "none"))
text = open("train.py").read().replace("X = 0.0", "X = 3.0")
open("train.py", "w").write(text)
print("Description: " + " ".join(notes))
"""


@needs_bwrap
def test_command_agent_writes_only_its_worktree(tmp_path, monkeypatch):
    """A fake CLI through the plain Worker: its edit of train.py in the worktree is the measured
    proposal; its writes to the main checkout, the main repository's .git and a file elsewhere
    change nothing there; it keeps its environment (its key) and the network."""
    from swarm import gitops
    from swarm.agents import AgentSpec
    from swarm.decisions import Assignment
    from swarm.records import Kind, Status
    from swarm.worker import Worker, WorkerSpec

    repo = make_standin_repo(tmp_path / "task", sleep=0.05)
    base = git(repo, "rev-parse", "HEAD")
    checkout = repo / ".swarm" / "t" / "worktrees" / "w0"
    gitops.ensure_worktree(gitops.open_repo(repo), checkout, "swarm/t/w0", base)
    targets = {"checkout": repo / "README.md", "git": repo / ".git" / "HEAD",
               "elsewhere": Path(__file__).resolve().parent / f".sandbox-test-{uuid.uuid4().hex}"}  # not in /tmp
    before = {name: path.read_bytes() for name, path in targets.items() if path.exists()}
    monkeypatch.setenv("SANDBOX_TEST_CLI_KEY", "cli-key")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    argv = [sys.executable, "-c", FAKE_CLI, json.dumps({k: str(v) for k, v in targets.items()}),
            str(server.getsockname()[1])]
    spec = WorkerSpec(name="w0", tag="t", task=standin_task(timeout=10),
                      agent=AgentSpec("command", "cmd:fake", {"argv": argv, "timeout": 60}),
                      checkout=str(checkout), log_dir=str(repo / ".swarm" / "t" / "logs"))
    try:
        w = Worker(spec)
        assert w.setup()["sandbox"] == "bwrap" and w.agent.sandbox == "bwrap"
        a = Assignment(exp_id=1, worker="w0", agent="cmd:fake", kind=Kind.PROPOSAL, parent=base, parent_metric=2.0)
        rec = w.run(a).record
        assert not targets["elsewhere"].exists()
    finally:
        server.close()
        targets["elsewhere"].unlink(missing_ok=True)
    assert rec.status == Status.KEEP and rec.metric == pytest.approx(1.1, abs=0.001), (rec.status, rec.error)
    assert "X = 3.0" in git(repo, "show", f"{rec.commit}:train.py")  # its edit is the experiment
    assert {name: path.read_bytes() for name, path in targets.items() if path.exists()} == before
    # read-only, or (a checkout under /tmp, as in CI) not there at all in the private /tmp
    assert "elsewhere=blocked:" in rec.description and "git=blocked:" in rec.description
    assert "network=yes" in rec.description and "key=cli-key" in rec.description
    off = CommandAgent([*argv[:3], json.dumps({"elsewhere": str(targets["elsewhere"])}), "1"], sandbox="off")
    ctx = AgentContext(worker="w0", worktree=checkout, task=spec.task, program="", files={}, baseline_commit=base,
                       baseline_metric=2.0)
    try:
        assert "elsewhere=written" in off.propose(ctx).description  # unsandboxed it gets through: the test can fail
    finally:
        targets["elsewhere"].unlink(missing_ok=True)


# ---- a hostile train.py through the real swarm ----------------------------------------------------

HOSTILE = '''"""A hostile train.py: it tries what the sandbox forbids; `leaked:` lines say what worked."""
import json, os, signal, socket

cfg = json.loads(os.environ["SANDBOX_HOSTILE"])


def report(what, worked, detail=""):
    print(("leaked: " if worked else "blocked: ") + what + (" " + detail if detail else ""), flush=True)


for name, pid in (("parent", os.getppid()), ("pid 1", 1)):
    try:
        entries = open("/proc/%d/environ" % pid, "rb").read().split(b"\\0")
        report("environ of " + name, any(e.startswith(cfg["secret"].encode() + b"=") for e in entries))
    except OSError as exc:
        report("environ of " + name, False, repr(exc))
report("own environment", cfg["secret"] in os.environ)
try:
    socket.create_connection(("127.0.0.1", cfg["port"]), timeout=3).close()
    report("connect", True)
except OSError as exc:
    report("connect", False, repr(exc))
for name, path in sorted(cfg["targets"].items()):
    try:
        visible = open(path).read() == cfg["canary"]
    except OSError:
        visible = False
    try:
        with open(path, "a") as f:
            f.write("pwned")
        report("write " + name, visible, "" if visible else "(the real file is not there: a private copy)")
    except OSError as exc:
        report("write " + name, False, repr(exc))
try:
    os.kill(cfg["pid"], signal.SIGKILL)
    report("kill", True)
except OSError as exc:
    report("kill", False, repr(exc))
try:
    open(".git", "a").close()  # the worker runs git here outside the sandbox: no hook may be planted
    report("write .git", True)
except OSError as exc:
    report("write .git", False, repr(exc))
try:
    report("read journal", True, "%d bytes" % len(open(cfg["journal"]).read()))
except OSError as exc:
    report("read journal", False, repr(exc))
print("---")
print("val_bpb: 1.5")
'''
PROBES = {"environ of parent", "environ of pid 1", "own environment", "connect", "write checkout", "write prepare",
          "write data", "write home", "kill", "read journal", "write .git"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray cluster for the module, its processes started with a secret in their
    environment, HOME and AUTORESEARCH_HOME in temporary directories."""
    ray = pytest.importorskip("ray")
    base = tmp_path_factory.mktemp("sandbox")
    # HOME stays the user's own (Ray keeps its auth token under it); the canary there is removed after
    dirs = {"HOME": Path.home(), "AUTORESEARCH_HOME": base / "data"}
    dirs["AUTORESEARCH_HOME"].mkdir()
    saved = {name: os.environ.get(name) for name in ("AUTORESEARCH_HOME", SECRET_VAR)}
    os.environ["AUTORESEARCH_HOME"] = str(dirs["AUTORESEARCH_HOME"])
    os.environ[SECRET_VAR] = "sk-sandbox-test-0c9d"
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield dirs
    ray.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _hostile_run(dirs: dict, tmp_path: Path, tag: str, mode: str) -> tuple[str, dict, subprocess.Popen]:
    """Run a baseline and the hostile proposal; (its log, the canary files, the process it tried to kill)."""
    from swarm.agents import parse_agent_spec
    from swarm.coordinator import Coordinator
    from swarm.journal import read_events
    from swarm.state import replay

    repo = make_standin_repo(tmp_path / "task")
    (repo / "prepare").mkdir()
    (repo / "prepare" / "harness.py").write_text("TIME_BUDGET = 300\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a harness")
    canary = f"canary {uuid.uuid4().hex}"
    targets = {"checkout": repo / "README.md", "prepare": repo / "prepare" / "harness.py",
               "data": dirs["AUTORESEARCH_HOME"] / f"{tag}.bin",
               "home": dirs["HOME"] / f".autoresearch-sandbox-test-{tag}-{uuid.uuid4().hex[:8]}.rc"}
    for path in targets.values():
        path.write_text(canary)
    git(repo, "commit", "-qam", "canaries")
    victim = subprocess.Popen(["sleep", "300"])
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    hostile = {"secret": SECRET_VAR, "port": server.getsockname()[1], "pid": victim.pid, "canary": canary,
               "targets": {k: str(v) for k, v in targets.items()},
               "journal": str(repo / ".swarm" / tag / "journal.jsonl")}
    step = {"__write__": {"train.py": HOSTILE}, "__desc__": "hostile"}
    cfg = SwarmConfig(repo=repo, tag=tag, task=standin_task(timeout=30, env={"SANDBOX_HOSTILE": json.dumps(hostile)}),
                      agents=(parse_agent_spec(SCRIPTED, {"steps": [step]}),), workers=1, max_experiments=2,
                      baseline_runs=1, max_runs=1, sandbox=mode)
    try:
        Coordinator(cfg, out=lambda _: None).run()
    except BaseException:
        victim.kill()
        raise
    finally:
        server.close()
    state = replay(read_events(cfg.journal_path))
    record = state.records[2]
    assert record.description == "hostile" and record.status.value in ("keep", "discard"), (record.status, record.error)
    log = Path(record.log_path).read_text()
    return log, {name: (path, canary) for name, path in targets.items()}, victim


def _probe_lines(log: str) -> dict[str, str]:
    """probe -> "leaked" | "blocked" from the hostile train.py's lines."""
    out = {}
    for line in log.splitlines():
        verdict, _, rest = line.partition(": ")
        name = next((p for p in PROBES if rest == p or rest.startswith(p + " ")), None)
        if verdict in ("leaked", "blocked") and name:
            out[name] = verdict
    return out


@needs_bwrap
def test_hostile_train_py_fails_at_everything_in_the_sandbox(cluster, tmp_path):
    log, canaries, victim = _hostile_run(cluster, tmp_path, "hostile", "auto")
    try:
        assert "# sandbox: bwrap" in log
        probes = _probe_lines(log)
        assert PROBES <= set(probes), log
        assert not [line for line in log.splitlines() if line.startswith("leaked:")], log
        line = next(ln for ln in log.splitlines() if ln.startswith("blocked: write data"))
        assert "Read-only file system" in line, line  # failed outright (home and /tmp: hidden, a private copy)
        for name, (path, canary) in canaries.items():
            assert path.read_text() == canary, name  # nothing outside the worktree changed
        assert victim.poll() is None  # the other process lives
    finally:
        victim.kill()
        victim.wait()
        canaries["home"][0].unlink(missing_ok=True)


def test_the_same_train_py_without_sandbox_succeeds(cluster, tmp_path):
    """--sandbox off: the allow-listed environment only, so the hostile script gets through."""
    log, canaries, victim = _hostile_run(cluster, tmp_path, "open", "off")
    try:
        probes = _probe_lines(log)
        assert "# sandbox: off" in log
        for probe in ("environ of parent", "connect", "write checkout", "write prepare", "write data", "write home",
                      "kill", "read journal"):
            assert probes.get(probe) == "leaked", (probe, log)
        assert probes["own environment"] == "blocked"  # the allow-list holds in every mode
        assert canaries["checkout"][0].read_text().endswith("pwned")
        assert victim.wait(timeout=10) == -signal.SIGKILL
    finally:
        victim.kill()
        victim.wait()
        canaries["home"][0].unlink(missing_ok=True)
