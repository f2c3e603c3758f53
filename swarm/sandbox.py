"""The sandbox agent-written code runs in: an allow-listed environment, and bubblewrap (`bwrap`).

`task_env` builds a task's environment from an allow-list (locale, paths, GPU, thread and
compiler settings, AUTORESEARCH_*), never from a deny-list, and drops every name that looks like
a credential even when its prefix is allowed; it applies in every mode.

Mode `bwrap` (`task_policy` + `wrap`) runs the task under bubblewrap:
- its own PID namespace: it sees and can signal only its own processes (no worker, no other task,
  no /proc/<pid>/environ of anything outside); it dies with bwrap, bwrap dies with the worker;
- no network: an empty network namespace (its own loopback; no host port, no Ray);
- the file system read-only, with the worktree as the only writable directory (its `.git` entry
  excepted: the worker runs git there outside the sandbox, so no hook can be planted), plus a private,
  empty /tmp (HOME and TMPDIR point into it) and /dev/shm, both gone when it ends;
- covered by empty read-only directories: the run's own directory (journal, logs, the other
  workers' worktrees), Ray's temp dir, /run and /var/tmp (daemons' sockets) and the home directory
  of the user running the worker (keys, CLI tokens); of these only what the task needs is bound
  back read-only: the Python installation and its sys.path, the PATH, PYTHONPATH and
  LD_LIBRARY_PATH entries, this project's packages, and the data dir (AUTORESEARCH_HOME);
- of /dev only the basics and the GPU device nodes (/dev/nvidia*, /dev/dri).
Command agents get a lighter one (`command_policy`): their own environment and the network, but
the same read-only file system, the worktree (plus paths they name) writable, a private /tmp.

Not covered: resource limits (CPU, memory, disk), which GPU a task uses (every GPU device node is
there; CUDA_VISIBLE_DEVICES picks one), world-readable files outside the covered directories
(/etc, other users' homes), timing channels, kernel exploits, a host /tmp path written inside
the sandbox (it lands in the private /tmp). Without a working bwrap, `auto` runs tasks with only
`task_env` (one warning line) and `bwrap` refuses to start.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import site
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from swarm.errors import ConfigError
from swarm.proc import run_process, scrub_env

MODES = ("auto", "bwrap", "off")
BWRAP = "bwrap"
HOME_INSIDE = "/tmp/home"  # HOME of a sandboxed task (in its private /tmp)

# Passed to a task by exact name (a fixed, reviewed list: TOKENIZERS_PARALLELISM stays although it
# says TOKEN), or by prefix when the name does not look like a credential (AUTORESEARCH_API_KEY).
ALLOWED_NAMES = frozenset({
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR", "USER", "LOGNAME", "SHELL",
    "PYTHONUNBUFFERED", "PYTHONHASHSEED", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONFAULTHANDLER",
    "VIRTUAL_ENV", "CONDA_PREFIX", "LD_LIBRARY_PATH", "CC", "CXX",
    "TOKENIZERS_PARALLELISM", "HF_HOME", "HF_DATASETS_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
})
ALLOWED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "NCCL_", "TORCH_", "TORCHINDUCTOR_", "TRITON_", "PYTORCH_",
                    "OMP_", "MKL_", "OPENBLAS_", "KMP_", "AUTORESEARCH_")


def looks_secret(name: str) -> bool:
    """Whether a variable name looks like a credential (the pattern of `swarm.proc.scrub_env`)."""
    return not scrub_env({name: ""})


def allowed(name: str) -> bool:
    return name in ALLOWED_NAMES or (name.startswith(ALLOWED_PREFIXES) and not looks_secret(name))


def task_env(base_env: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The allowed variables of `base_env`, then `extra` (the task's own env, the swarm's
    AUTORESEARCH_* variables) on top, as given."""
    env = {k: v for k, v in base_env.items() if allowed(k)}
    env.update(extra)
    return env


@dataclass(frozen=True)
class SandboxPolicy:
    """What one sandboxed command may see and write; every path absolute (see `bwrap_argv`)."""

    writable: tuple[str, ...]  # bound read-write at the same path; the first is the working directory
    hidden: tuple[str, ...] = ()  # covered by an empty read-only directory (the run dir)
    masked: tuple[str, ...] = ()  # covered like `hidden`, but `keep` paths inside come back read-only
    keep: tuple[str, ...] = ()  # bound back read-only where a masked directory or /tmp covers them
    devices: tuple[str, ...] = ()  # device nodes bound into the fresh /dev
    network: bool = False  # True: the host's network (command agents); False: none
    # bound read-only over the writable ones: the checkout's .git entry (the worker runs git on the
    # checkout outside the sandbox: a planted hook or a swapped gitdir would run there)
    readonly: tuple[str, ...] = ()


def bwrap_argv(policy: SandboxPolicy, bwrap: str = BWRAP) -> list[str]:
    """The bwrap argument prefix for `policy` (the command follows it). Order matters: bwrap
    mounts in argument order, so covers come before what is bound back into them."""
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid"]
    if not policy.network:
        args.append("--unshare-net")
    args += ["--ro-bind", "/", "/", "--dev", "/dev"]
    for dev in policy.devices:
        args += ["--dev-bind", dev, dev]
    args += ["--proc", "/proc", "--tmpfs", "/tmp", "--dir", HOME_INSIDE]
    writable = policy.writable
    masked = [p for p in _outermost(policy.masked) if not _inside_any(p, writable)]
    covers = ["/tmp", *masked]
    for path in masked:
        args += ["--tmpfs", path]
    # only paths a cover hides need binding back; one holding a cover would undo it
    keep = [p for p in policy.keep if _inside_any(p, covers) and not any(_inside(c, p) for c in covers)]
    for path in _outermost(keep):
        args += ["--ro-bind", path, path]
    hidden = [p for p in _outermost(policy.hidden) if not _inside_any(p, writable)]
    for path in hidden:
        args += ["--tmpfs", path]
    for path in writable:
        args += ["--bind", path, path]
    for path in policy.readonly:
        args += ["--ro-bind", path, path]
    for path in (*masked, *hidden):  # after the binds: their mount points are made first
        args += ["--remount-ro", path]
    return [*args, "--chdir", writable[0], "--"]


def wrap(argv: list[str], env: Mapping[str, str], policy: SandboxPolicy,
         private_home: bool = True) -> tuple[list[str], dict]:
    """(argv, env) to run `argv` in the sandbox: TMPDIR and (`private_home`) HOME in its private
    /tmp, AUTORESEARCH_HOME fixed first. The env goes to bwrap itself (not --setenv), so bwrap's
    own /proc/<pid>/environ, seen inside as PID 1's, holds nothing more than the task's."""
    inside = dict(env, TMPDIR="/tmp")
    if private_home:
        from prepare.profiles import autoresearch_home

        inside["AUTORESEARCH_HOME"] = str(autoresearch_home(env))  # the data dir does not move with HOME
        inside["HOME"] = HOME_INSIDE
        if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
            inside["PYTHONUSERBASE"] = site.getuserbase()  # packages installed with --user stay importable
    return [*bwrap_argv(policy, shutil.which(BWRAP) or BWRAP), *argv], inside


def task_policy(worktree: str | os.PathLike, hidden: Iterable[str | os.PathLike] = (),
                env: Mapping[str, str] | None = None) -> SandboxPolicy:
    """The policy of a task run in `worktree` with environment `env`; `hidden`: the run's own
    directories (journal, logs, other workers' checkouts). See the module docstring."""
    import prepare
    from prepare.profiles import autoresearch_home

    env = dict(os.environ if env is None else env)
    home = env.get("HOME") or str(Path.home())
    homes = {home, os.path.realpath(home)}  # a symlinked home: its target is what holds the keys
    masked = [p for p in (*sorted(homes), "/run", "/var/run", "/var/tmp") if os.path.isdir(p) and not os.path.islink(p)]
    packages = [os.path.dirname(prepare.__file__), os.path.dirname(__file__)]  # an editable install's code
    keep = [str(autoresearch_home(env)), *packages, sys.prefix, sys.base_prefix, sys.exec_prefix,
            os.path.dirname(os.path.realpath(sys.executable)), site.getusersitepackages(), *sys.path]
    for name in ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH"):
        keep += env.get(name, "").split(os.pathsep)
    return SandboxPolicy(
        writable=(_real(worktree),),
        readonly=_existing([os.path.join(worktree, ".git")]),
        hidden=_existing([*hidden, *_ray_temp_dir()]),
        masked=_existing(masked),
        keep=_existing(keep),
        devices=gpu_devices(),
    )


def command_policy(worktree: str | os.PathLike, writable: Iterable[str | os.PathLike] = ()) -> SandboxPolicy:
    """A command agent's policy: the network and its own environment (its keys) stay, writes go
    only to the worktree, the existing `writable` paths (e.g. a CLI's state in ~) and a private /tmp."""
    extra = _existing(os.path.expanduser(str(p)) for p in writable)
    return SandboxPolicy(writable=(_real(worktree), *extra), readonly=_existing([os.path.join(worktree, ".git")]),
                         devices=gpu_devices(), network=True)


def gpu_devices() -> tuple[str, ...]:
    return tuple(sorted(glob.glob("/dev/nvidia*"))) + (("/dev/dri",) if os.path.exists("/dev/dri") else ())


@functools.lru_cache(maxsize=None)
def _probe(network: bool, bwrap: str = BWRAP) -> str:
    """"" when bwrap can build a sandbox here (with a network namespace unless `network`) with the
    kinds of mounts `bwrap_argv` uses, else why not (its last line of output)."""
    args = [shutil.which(bwrap) or bwrap, "--die-with-parent", "--new-session", "--unshare-pid",
            *([] if network else ["--unshare-net"]), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp", "--dir", HOME_INSIDE, "--remount-ro", "/tmp", "--chdir", "/", "--", "true"]
    result = run_process(args, cwd="/", env={}, timeout=30)
    if result.ok:
        return ""
    lines = [ln.strip() for ln in result.output_tail.splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


def probe(kind: str = "task") -> bool:
    """Whether bwrap works here for a "task" or a "command" agent (no network namespace); cached."""
    return not _probe(kind == "command")


def resolve(mode: str, kind: str = "task") -> tuple[str, str]:
    """("bwrap" | "off", warning) for a mode of `MODES`: `auto` is bwrap when it works here, else
    off with a one-line warning; `bwrap` that does not work is a ConfigError. `kind`: "task"
    (the --sandbox flag) or "command" (a command agent's `sandbox` option)."""
    if mode not in MODES:
        raise ConfigError(f"sandbox must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off":
        return "off", ""
    reason = _probe(kind == "command")
    if not reason:
        return "bwrap", ""
    if mode == "bwrap":
        off = "--sandbox off" if kind == "task" else 'the agent option sandbox = "off"'
        raise ConfigError(f"sandbox bwrap: bubblewrap does not work here ({reason}); install it "
                          f"(apt-get install bubblewrap) or use {off}")
    return "off", (f"bubblewrap does not work here ({reason}): agent-written code runs unsandboxed (its "
                   "environment allow-listed only); install it (apt-get install bubblewrap)")


def _real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.fspath(path))


def _existing(paths: Iterable[str | os.PathLike]) -> tuple[str, ...]:
    """The absolute ones that exist, resolved, without repeats, in order."""
    out: dict[str, None] = {}
    for p in paths:
        if p and os.path.isabs(os.fspath(p)) and os.path.exists(p):
            out[_real(p)] = None
    return tuple(out)


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _inside_any(path: str, parents: Iterable[str]) -> bool:
    return any(_inside(path, p) for p in parents)


def _outermost(paths: Iterable[str]) -> list[str]:
    """`paths` without those inside another of them (bound or covered once, at the top), never "/"."""
    ordered = sorted(set(paths) - {"/"}, key=lambda p: (p.count("/"), p))
    out: list[str] = []
    for p in ordered:
        if not _inside_any(p, out):
            out.append(p)
    return out


def _ray_temp_dir() -> list[str]:
    """Ray's temp dir (its sockets reach the raylet) when this process is a Ray worker; best effort."""
    ray = sys.modules.get("ray")
    try:
        node = ray._private.worker._global_node if ray is not None else None
        return [node.get_temp_dir_path()] if node is not None else []
    except Exception:  # noqa: BLE001 - a private API: without it /tmp/ray is covered by /tmp anyway
        return []


__all__ = ["MODES", "SandboxPolicy", "task_env", "allowed", "looks_secret", "bwrap_argv", "wrap", "task_policy",
           "command_policy", "gpu_devices", "probe", "resolve"]
