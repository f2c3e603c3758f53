"""The guard in the trainer's process: an audit hook that refuses reading the val split and
writing into the harness, and tells the referee.

`Rules` (built by the referee, plain data) name what is protected: the validation shard(s), which
the trainer's process may never open (neither while it trains nor while it answers evaluation
batches: the referee reads them itself), the directories that hold them, and the directories
nothing may be written into (prepare/ and swarm/ of the checkout, AUTORESEARCH_HOME's data and
tokenizer, the interpreter's own library directories). `Guard.check` is the pure decision for one
audit event; `install` adds it as a `sys.addaudithook` hook before any trainer code runs (audit
hooks cannot be removed), makes the event fail with PermissionError and reports the reason.

Seen: Python's `open` (open, io, pathlib, numpy, pandas, torch.load, os.open, ...), prepare's own
shard reads (audit event `prepare.read_shard`), pyarrow's path readers (wrapped here to raise
`open`: pyarrow.parquet, pyarrow.dataset, pyarrow.memory_map / input_stream), and os / shutil
calls that change files (remove, rename/replace, truncate, mkdir, rmdir, chmod, chown, utime,
link, symlink, rmtree, copy, move). Not seen: file access from native code that bypasses these
(e.g. a C extension or ctypes calling open(2)), other processes the trainer starts, and code
that takes the guard apart on purpose; the referee's fingerprints still catch changed files after
the run, and the sandbox is the wall for the rest. This is a tripwire for reward hacking through
train.py, not a defence against malware.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

READ_SHARD = "prepare.read_shard"  # prepare.dataloader.READ_EVENT (not imported: keep this module light)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_CHANGES = {  # audit event -> (verb, indexes of its path arguments)
    "os.remove": ("removed", (0,)),
    "os.rmdir": ("removed", (0,)),
    "os.rename": ("renamed", (0, 1)),  # also os.replace
    "os.truncate": ("truncated", (0,)),
    "os.mkdir": ("created", (0,)),
    "os.chmod": ("changed the mode of", (0,)),
    "os.chown": ("changed the owner of", (0,)),
    "os.utime": ("changed the times of", (0,)),
    "os.link": ("linked", (0, 1)),
    "os.symlink": ("linked", (1,)),
    "os.setxattr": ("changed the attributes of", (0,)),
    "os.removexattr": ("changed the attributes of", (0,)),
    "shutil.rmtree": ("removed", (0,)),
    "shutil.move": ("moved", (0, 1)),
    "shutil.copyfile": ("copied into", (1,)),
    "shutil.copytree": ("copied into", (1,)),
}
WATCHED = frozenset({"open", READ_SHARD, *_CHANGES})


@dataclass(frozen=True)
class Rules:
    """What the trainer's process must not touch (absolute paths; plain data for the wire)."""

    no_read: tuple[str, ...] = ()  # files never opened (the validation shards)
    no_open_dirs: tuple[str, ...] = ()  # directories holding them (pyarrow reads a directory whole)
    no_write: tuple[str, ...] = ()  # directories nothing is written, removed or renamed under
    referee_pid: int = 0  # /proc/<pid>/ of the referee is off limits too

    def to_dict(self) -> dict:
        return {"no_read": list(self.no_read), "no_open_dirs": list(self.no_open_dirs),
                "no_write": list(self.no_write), "referee_pid": self.referee_pid}

    @classmethod
    def from_dict(cls, d: dict) -> "Rules":
        return cls(tuple(d.get("no_read", ())), tuple(d.get("no_open_dirs", ())), tuple(d.get("no_write", ())),
                   int(d.get("referee_pid", 0)))

    @classmethod
    def for_run(cls, paths, code_dirs=(), referee_pid: int = 0) -> "Rules":
        """The rules of one run: `paths` is prepare.core.PreparedPaths, `code_dirs` the harness's packages."""
        import site
        import sysconfig

        val = [Path(paths.val_file)] if paths.val_file else []
        data_root = Path(paths.home) / "data"
        dirs = {str(v.parent) for v in val} | {str(data_root)}
        libs = {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
        try:
            libs.add(site.getusersitepackages())
        except Exception:  # noqa: BLE001 - no user site (embedded interpreters)
            pass
        protected = {str(data_root), str(Path(paths.home) / "tokenizer"), *map(str, code_dirs), *filter(None, libs)}
        return cls(tuple(str(v) for v in val), tuple(sorted(dirs)), tuple(sorted(protected)), referee_pid)


def _as_path(arg) -> str | None:
    """An audit argument as an absolute path (an fd through /proc/self/fd), or None."""
    if isinstance(arg, int):
        try:
            return os.readlink(f"/proc/self/fd/{arg}")
        except OSError:
            return None
    if isinstance(arg, bytes):
        arg = os.fsdecode(arg)
    elif isinstance(arg, os.PathLike):
        arg = os.fspath(arg)
        if isinstance(arg, bytes):
            arg = os.fsdecode(arg)
    if not isinstance(arg, str):
        return None
    return os.path.abspath(arg)


def _writes(mode, flags) -> bool:
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


@dataclass
class Guard:
    """`Rules` made ready for quick checks (real paths, file identities)."""

    rules: Rules
    _read_ids: dict = field(init=False, default_factory=dict)  # (dev, ino) -> what it is
    _write_dirs: tuple = field(init=False, default=())
    _proc: str = field(init=False, default="")

    def __post_init__(self) -> None:
        for p in self.rules.no_read:
            fid = _file_id(p)
            if fid:
                self._read_ids[fid] = "the validation data"
        for p in self.rules.no_open_dirs:
            fid = _file_id(p)
            if fid:
                self._read_ids.setdefault(fid, "the validation data's directory")
        self._write_dirs = tuple(sorted({os.path.realpath(d) for d in self.rules.no_write}))
        self._proc = f"/proc/{self.rules.referee_pid}/" if self.rules.referee_pid else ""

    def _reads_protected(self, path: str) -> str | None:
        if self._proc and path.startswith(self._proc):
            return "the referee's process"
        fid = _file_id(path)
        return self._read_ids.get(fid) if fid else None

    def _protected_dir(self, path: str) -> str | None:
        real = os.path.realpath(path)
        for d in self._write_dirs:
            if real == d or real.startswith(d.rstrip(os.sep) + os.sep):
                return d
        return None

    def check(self, event: str, args: tuple) -> str | None:
        """The reason to refuse this audit event, or None to let it pass."""
        if event == "open" or event == READ_SHARD:
            path = _as_path(args[0]) if args else None
            if path is None:
                return None
            if event == "open" and _writes(args[1] if len(args) > 1 else None, args[2] if len(args) > 2 else None):
                where = self._protected_dir(path)
                if where:
                    return f"opened {path} for writing (under {where}, which the trainer may not change)"
            what = self._reads_protected(path)
            return f"read {what} ({path})" if what else None
        spec = _CHANGES.get(event)
        if spec is None:
            return None
        verb, indexes = spec
        for i in indexes:
            path = _as_path(args[i]) if i < len(args) else None
            if path is None:
                continue
            where = self._protected_dir(path)
            if where:
                return f"{verb} {path} (under {where}, which the trainer may not change)"
            if event in ("os.link", "shutil.move", "os.rename") and i == 0 and self._reads_protected(path):
                return f"{verb} the validation data ({path})"
        return None


def install(rules: Rules, report: Callable[[str], None]) -> Guard:
    """Add the audit hook (for the rest of this process's life) and wrap pyarrow's path readers."""
    guard = Guard(rules)
    check = guard.check  # bound now: patching the class later changes nothing here
    local = threading.local()

    def hook(event: str, args: tuple) -> None:
        if event not in WATCHED or getattr(local, "busy", False):
            return
        local.busy = True
        try:
            reason = check(event, args)
        except Exception:  # noqa: BLE001 - a bug here must not break the trainer
            reason = None
        finally:
            local.busy = False
        if reason:
            local.busy = True
            try:
                report(reason)
            except Exception:  # noqa: BLE001 - the referee may be gone; refusing is what matters
                pass
            finally:
                local.busy = False
            raise PermissionError(f"refused by the referee: the trainer {reason}")

    sys.addaudithook(hook)
    _wrap_pyarrow()
    return guard


def _audited(fn):
    def wrapper(source, *args, **kwargs):
        items = source if isinstance(source, (list, tuple)) else [source]
        for item in items:
            if isinstance(item, (str, bytes, os.PathLike)):
                sys.audit("open", item, "r", 0)
        return fn(source, *args, **kwargs)

    wrapper.__wrapped__ = fn
    wrapper.__name__ = getattr(fn, "__name__", "wrapper")
    return wrapper


def _wrap_pyarrow() -> None:
    """Make pyarrow's path-taking readers raise the `open` audit event (they open files in C++)."""
    try:
        import pyarrow
        import pyarrow.dataset
        import pyarrow.fs
        import pyarrow.parquet.core
    except ImportError:
        return
    targets = [
        (pyarrow.fs, "_resolve_filesystem_and_path"),
        (pyarrow.parquet.core, "_resolve_filesystem_and_path"),
        (pyarrow.dataset, "_ensure_multiple_sources"),
        (pyarrow, "memory_map"),
        (pyarrow, "input_stream"),
    ]
    for module, name in targets:
        fn = getattr(module, name, None)
        if fn is not None and not hasattr(fn, "__wrapped__"):
            setattr(module, name, _audited(fn))
