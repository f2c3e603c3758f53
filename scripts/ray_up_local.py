"""`ray up` end to end on this machine: the README's cluster flow against 127.0.0.1.

It does what a user of `cluster-onprem.yaml` does, with this machine as the cluster:

  1. an SSH server on 127.0.0.1 (a free port, a throw-away key and host key) in its own PID
     namespace, so that the `ray stop` that `ray down` runs over SSH ends only the Ray it started;
  2. a local-provider cluster file made from `cluster-onprem.yaml`: head_ip 127.0.0.1, the key,
     the setup commands pointed at a node directory (a pinned clone of this repository's HEAD, a
     virtualenv over the installed packages, `autoresearch prepare` into the node's own data
     home) and explicit Ray ports;
  3. `ray up -y`; `ray exec` the swarm on the head (a small CPU run with the built-in agent);
     `ray exec ... autoresearch status`; `ray rsync-down` the run's directory and `git fetch` the
     best branch from the head's clone; `ray down -y`;
  4. checks: every experiment recorded, results.tsv and the best branch back on the "laptop", and
     no process of the cluster left.

It prints each step's time and ends with a table. Needs root (the PID namespace), sshd, rsync and
nc (`apt-get install -y openssh-server rsync netcat-openbsd`); it exits with status 3 and one line
saying what is missing otherwise (the pytest wrapper, tests/test_ray_up_local.py, skips then).

    python scripts/ray_up_local.py [--workdir DIR] [--experiments 4] [--keep]

Not covered: more than one machine (the multi-node behaviour is tested on Ray's own multi-node
test cluster, tests/test_multinode.py), cloud providers, GPUs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MISSING = 3  # exit status: something this script needs is not on the machine
TAG = "e2e"


class StepFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def what_is_missing() -> str | None:
    """One line naming what this machine lacks for the script, or None."""
    if os.geteuid() != 0:
        return "needs root (the SSH server runs in its own PID namespace)"
    for tool in ("sshd", "ssh", "ssh-keygen", "rsync", "nc", "unshare", "git"):
        if shutil.which(tool) is None and not (tool == "sshd" and Path("/usr/sbin/sshd").exists()):
            return f"{tool} not found (apt-get install -y openssh-server rsync netcat-openbsd)"
    return None


class Steps:
    """Runs the flow's commands, printing and timing each one."""

    def __init__(self, log_dir: Path):
        self.times: list[tuple[str, float]] = []
        self.log_dir = log_dir

    def run(self, name: str, argv: list[str], timeout: float, env: dict | None = None) -> str:
        print(f"--- {name}: {shlex.join(argv)}", flush=True)
        start = time.monotonic()
        log = self.log_dir / f"{len(self.times):02d}-{name.replace(' ', '_')}.log"
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
        except subprocess.TimeoutExpired as e:
            log.write_text((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""))
            raise StepFailed(f"{name}: timed out after {timeout:.0f} s (log: {log})") from None
        seconds = time.monotonic() - start
        self.times.append((name, seconds))
        log.write_text(done.stdout + done.stderr)
        print(f"    {seconds:.1f} s, exit {done.returncode} (log: {log})", flush=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            raise StepFailed(f"{name}: exit {done.returncode}\n{tail}")
        return done.stdout


def start_sshd(work: Path, port: int) -> tuple[subprocess.Popen, Path]:
    """An sshd on 127.0.0.1:port in a new PID namespace, accepting only a fresh key for root."""
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    host_key = work / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    authorized = work / "authorized_keys"
    authorized.write_text(Path(f"{key}.pub").read_text())
    authorized.chmod(0o600)
    config = work / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        "StrictModes no", f"PidFile {work / 'sshd.pid'}", "AllowTcpForwarding yes",
        "MaxStartups 100", "MaxSessions 100", "",
    ]))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sshd, "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL, stderr=open(work / "sshd.log", "w"), start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StepFailed(f"sshd exited {proc.returncode}: {(work / 'sshd.log').read_text()[-500:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, key
        time.sleep(0.2)
    raise StepFailed("sshd did not listen within 20 s")


def stop_sshd(proc: subprocess.Popen) -> None:
    """End the namespace: its init (unshare's child) dying takes every process in it along."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def cluster_file(work: Path, key: Path, ssh_port: int, ports: dict[str, int], node: Path, pin: str,
                 ray_tmp: Path) -> Path:
    """The on-prem cluster file, filled in for this machine (a single head at 127.0.0.1)."""
    config = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    config["cluster_name"] = f"autoresearch-e2e-{ports['gcs']}"
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["auth"] = {
        "ssh_user": "root",
        "ssh_private_key": str(key),
        # Ray's SSH runner always dials port 22; a proxy command reaches our port instead.
        "ssh_proxy_command": f"nc 127.0.0.1 {ssh_port}",
    }
    repo, env = node / "autoresearch-swarm", node_env(node)
    venv = node / "venv"
    # The same three steps as the shipped file's setup, at a node directory instead of ~:
    # a pinned checkout, the install (a virtualenv over this machine's packages: no download),
    # and the node's own data.
    config["setup_commands"] = [
        f"(test -d {repo} || git clone -q {ROOT} {repo}) && git -C {repo} fetch -q origin && "
        f"git -C {repo} checkout -q --detach {pin}",
        f"test -x {venv}/bin/python || python3 -m venv --system-site-packages {venv}",
        f"{venv}/bin/pip install -q --no-deps -e {repo}",
        f"{env} && cd {repo} && autoresearch prepare --source stdlib --profile cpu",
    ]
    # Explicit ports, and no `ray stop` (the namespace starts empty; `ray down` stops what is in it).
    # Ray's own directory apart from /tmp/ray: a `ray.init()` elsewhere on this machine must not
    # find this cluster there and join it instead of starting its own.
    # (Short: Ray's socket paths must fit in 107 characters.)
    config["head_start_ray_commands"] = [
        f"{env} && ulimit -n 65536; ray start --head --port={ports['gcs']} "
        f"--dashboard-host=127.0.0.1 --dashboard-port={ports['dashboard']} "
        f"--metrics-export-port={ports['metrics']} --ray-client-server-port={ports['client']} "
        f"--dashboard-agent-listen-port={ports['agent']} --num-cpus=2 --temp-dir={ray_tmp} "
        "--autoscaling-config=~/ray_bootstrap_config.yaml"
    ]
    config["worker_start_ray_commands"] = []
    path = work / "cluster-local.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def node_env(node: Path) -> str:
    """The head's shell environment: the node's data home, and its virtualenv first on the PATH
    (what `pip install` into the login shell's Python gives a real node)."""
    return (f"export AUTORESEARCH_HOME={node / 'data-home'} LITELLM_LOCAL_MODEL_COST_MAP=True "
            f"PATH={node / 'venv'}/bin:$PATH")


def ray_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts", *args]


def flow(work: Path, experiments: int) -> list[tuple[str, float]]:
    pin = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    ssh_port = free_port()
    ports = {name: free_port() for name in ("gcs", "dashboard", "metrics", "client", "agent")}
    node = work / "node"  # the head's disk: nothing in it is shared with the "laptop" side but the path
    node.mkdir()
    logs = work / "logs"
    logs.mkdir()
    steps = Steps(logs)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}

    sshd, key = start_sshd(work, ssh_port)
    print(f"sshd on 127.0.0.1:{ssh_port} (pid namespace {sshd.pid}); cluster ports {ports}", flush=True)
    ray_tmp = Path(tempfile.mkdtemp(prefix="rayup-"))
    cfg = cluster_file(work, key, ssh_port, ports, node, pin, ray_tmp)
    repo_on_head = node / "autoresearch-swarm"
    up = False
    try:
        steps.run("ray up", ray_cli("up", "-y", "--no-config-cache", str(cfg)), timeout=900, env=env)
        up = True
        # The README says `--address auto`; the explicit address keeps this run off any other Ray on
        # the machine, and with it Ray wants RAY_AUTH_MODE=token to send its token (`auto` does that).
        run_cmd = (f"{node_env(node)} RAY_AUTH_MODE=token && cd {repo_on_head} && autoresearch run --address 127.0.0.1:{ports['gcs']} --tag {TAG} "
                   f"--workers 2 --max-experiments {experiments} --profile cpu")
        steps.run("swarm on the head (ray exec)", ray_cli("exec", str(cfg), run_cmd), timeout=1500, env=env)
        status = steps.run("status (ray exec)", ray_cli("exec", str(cfg), f"{node_env(node)} && cd {repo_on_head} && autoresearch status --tag {TAG}"),
                           timeout=300, env=env)
        print(status[-1500:])
        local_run = work / "laptop" / TAG
        local_run.parent.mkdir()
        steps.run("results back (ray rsync-down)",
                  ray_cli("rsync-down", str(cfg), f"{repo_on_head}/.swarm/{TAG}/", str(local_run)), timeout=300, env=env)
        laptop_repo = work / "laptop" / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(laptop_repo)], check=True)
        ssh = f"ssh -i {key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -p {ssh_port}"
        steps.run("best branch back (git fetch)",
                  ["git", "-C", str(laptop_repo), "-c", f"core.sshCommand={ssh}", "fetch", "-q",
                   f"ssh://root@127.0.0.1{repo_on_head}", f"refs/heads/swarm/{TAG}/best:refs/heads/best-{TAG}"],
                  timeout=120, env=env)
        check_results(local_run, laptop_repo, experiments)
    finally:
        if up:
            try:
                steps.run("ray down", ray_cli("down", "-y", str(cfg)), timeout=300, env=env)
            except StepFailed as e:
                print(f"ray down failed: {e}", file=sys.stderr)
        left = subprocess.run(["pgrep", "-f", f"--gcs_server_port={ports['gcs']}|{node}"], capture_output=True, text=True).stdout
        stop_sshd(sshd)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if left.strip():
        raise StepFailed(f"processes of the cluster outlived `ray down`: pids {left.split()}")
    return steps.times


def check_results(run_dir: Path, laptop_repo: Path, experiments: int) -> None:
    """What the user gets back: every experiment in results.tsv, and a best branch to look at."""
    tsv = run_dir / "results.tsv"
    if not tsv.exists():
        raise StepFailed(f"no results.tsv came back ({sorted(p.name for p in run_dir.iterdir())})")
    rows = tsv.read_text().splitlines()[1:]
    proposals = [r for r in rows if "\tconfirm\t" not in r]
    if len(proposals) < experiments:
        raise StepFailed(f"results.tsv has {len(proposals)} experiments, wanted {experiments}")
    logs = list((run_dir / "logs").glob("*.log"))
    if len(logs) < experiments:
        raise StepFailed(f"only {len(logs)} experiment logs came back, wanted {experiments}")
    best = subprocess.run(["git", "-C", str(laptop_repo), "log", "--oneline", f"best-{TAG}", "-3"],
                          capture_output=True, text=True, check=True).stdout
    print(f"results.tsv: {len(rows)} rows, {len(logs)} logs; best branch:\n{best}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", help="where keys, the cluster file, the node and logs go (default: a temp dir)")
    ap.add_argument("--experiments", type=int, default=4, help="experiments of the swarm on the head")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    missing = what_is_missing()
    if missing:
        print(f"ray_up_local: {missing}", file=sys.stderr)
        return MISSING
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ray-up-local-"))
    work.mkdir(parents=True, exist_ok=True)
    total = time.monotonic()
    try:
        times = flow(work, args.experiments)
    except StepFailed as e:
        print(f"ray_up_local: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print("\nstep                             seconds")
    for name, seconds in times:
        print(f"{name:<32} {seconds:7.1f}")
    print(f"{'total':<32} {time.monotonic() - total:7.1f}")
    print("ray_up_local: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
