"""`python -m prepare.referee`: run the trainer, keep the clock, measure its model, print the summary.

The parent process of every GPT training run (the swarm's and `autoresearch train`'s). It never
imports the trainer, and no trainer code ever runs in it. In order:

1. resolves profile, source and tokenizer like `prepare` does, reads the evaluation rows of the
   val split, and fingerprints what the trainer must not change (every file under prepare/, the
   tokenizer files, the data manifest and the validation shard; the guard also keeps the trainer
   from writing into swarm/, whose errors and summary modules the referee imports);
2. starts the trainer's process (prepare/handover.py; the command from AUTORESEARCH_TASK_COMMAND,
   a JSON argv, default `python -m trainer.train`) in its own process group, with the seed of
   AUTORESEARCH_SEED (default 0), the guard's rules (prepare/guard.py) and a socket; its output
   reaches the same stdout through a relay that stops when the trainer is killed;
3. starts its clock with it, and waits for the hand-over: a trainer that has not handed its
   model over within TIME_BUDGET + startup_allowance is refused (and killed once a margin past
   it), as is one whose guard reported a violation (it read the val split, wrote into prepare/...);
4. evaluates the model itself: it sends only token ids x, receives logits, and computes the
   losses against the targets, which never leave this process; the same rows and arithmetic as
   `evaluate_bpb` (prepare/evaluate.py). Among the real batches go a few causality probes
   (prepare/probes.py); all batches must be answered within eval_allowance;
5. kills the trainer's process group, checks the probes and the fingerprints, and prints its own
   summary block last: the keys of the trainer output contract (val_bpb and total_seconds its
   own; training_seconds, peak_vram_mb, ... the trainer's claims), plus attention,
   handover_seconds and eval_seconds.

Exit status: 0 measured; REJECT_EXIT (3) refused, the last line `rejected: <reason>`; 1 the
trainer crashed or broke the protocol (a line `referee: ...` says how); 2 nothing to run (no data,
a bad setting). Not covered: the trainer's side (prepare/handover.py), the guard (prepare/guard.py),
the probes (prepare/probes.py), the bits-per-byte arithmetic (prepare/evaluate.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from swarm.summary import REJECT_EXIT  # 3: the referee refused the run (swarm.summary.referee_rejection)

COMMAND_ENV = "AUTORESEARCH_TASK_COMMAND"  # the trainer command, a JSON argv (TaskSpec.run_env sets it)
SEED_ENV = "AUTORESEARCH_SEED"
DEFAULT_COMMAND = ("{python}", "-m", "trainer.train")
REFEREE_ONLY_ENV = (COMMAND_ENV, "AUTORESEARCH_STARTUP_ALLOWANCE", "AUTORESEARCH_EVAL_ALLOWANCE")
MAX_EXTRA_VOCAB = 128  # logits may be this much wider than the vocabulary (a padded lm head)
MAX_BATCH_BYTES = {"cpu": 2 << 30, "cuda": 9 << 30}  # logits of one evaluation batch, at most
SCORE_CHUNK_BYTES = 512 << 20  # logits scored at once (CUDA: copied out of the shared buffer)


class Rejected(Exception):
    """The run broke a rule: the one-line reason."""


class Crashed(Exception):
    """The trainer failed (or broke the protocol): the one-line reason."""


class _Stopped(BaseException):
    """SIGTERM / SIGINT: end the trainer and leave."""


@dataclass(frozen=True)
class Limits:
    budget: float  # TIME_BUDGET
    startup_allowance: float
    eval_allowance: float

    @classmethod
    def of(cls, profile) -> "Limits":
        return cls(profile.time_budget, profile.startup_allowance, profile.eval_allowance)

    @property
    def handover(self) -> float:
        """Seconds from starting the trainer until it must have handed its model over."""
        return self.budget + self.startup_allowance

    @property
    def kill_after(self) -> float:
        """Seconds after which a trainer that has not handed over is killed."""
        return self.handover + max(10.0, 0.1 * self.handover)

    @property
    def worst_case(self) -> float:
        """Longest a refereed run can take past its set-up (swarm hard timeouts must exceed it)."""
        return self.kill_after + self.eval_allowance


def python_target(argv) -> dict:
    """The trainer command as what the trainer's process runs: {module | path, args}.

    Only Python trainers run under the referee: `python [-u|-B] -m module ...` or `python file.py ...`.
    """
    from swarm.errors import ConfigError

    argv = [sys.executable if a == "{python}" else str(a) for a in argv]
    if not argv or not Path(argv[0]).name.startswith("python"):
        raise ConfigError(f"the referee runs Python trainers only (`python -m module` or `python file.py`), not {argv}")
    rest = [a for a in argv[1:]]
    while rest and rest[0] in ("-u", "-B"):
        rest.pop(0)
    if len(rest) >= 2 and rest[0] == "-m":
        return {"module": rest[1], "path": None, "args": rest[2:]}
    if rest and rest[0].endswith(".py"):
        return {"module": None, "path": rest[0], "args": rest[1:]}
    raise ConfigError(f"the referee runs `python -m module` or `python file.py`, not {argv}")


def task_command(env) -> list[str]:
    from swarm.errors import ConfigError

    raw = env.get(COMMAND_ENV)
    if not raw:
        return list(DEFAULT_COMMAND)
    try:
        argv = json.loads(raw)
    except ValueError:
        argv = None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ConfigError(f"{COMMAND_ENV} must be a JSON list of strings, got {raw[:200]!r}")
    return argv


def watched_files(paths, code_dirs) -> list[Path]:
    """What must be byte-identical after the run (PreparedPaths `paths`, package dirs `code_dirs`)."""
    files: list[Path] = []
    for d in code_dirs:
        files += sorted(p for p in Path(d).rglob("*") if p.is_file())
    tok = Path(paths.tokenizer_dir)
    files += sorted(p for p in tok.iterdir() if p.is_file()) if tok.is_dir() else []
    files += [Path(paths.data_dir) / "manifest.json", Path(paths.val_file)]
    return files


def fingerprint(files) -> dict[str, str]:
    """sha256 of each file ("missing" when it is not there)."""
    out = {}
    for f in files:
        h = hashlib.sha256()
        try:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            out[str(f)] = h.hexdigest()
        except OSError:
            out[str(f)] = "missing"
    return out


def changed_files(before: dict, after: dict) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    line = "".join(c if c.isprintable() else "?" for c in line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


class Session:
    """The trainer's process and the socket to it, seen from the referee."""

    def __init__(self, root: Path, env: dict, setup: dict):
        parent_end, child_end = socket.socketpair()
        child_env = {k: v for k, v in env.items() if k not in REFEREE_ONLY_ENV}
        from prepare.handover import BOOTSTRAP, FD_ENV

        child_env[FD_ENV] = str(child_end.fileno())
        self.started = time.monotonic()
        # the trainer's output reaches the log only through this relay, which stops once the trainer is
        # killed: a process it left behind (its own session, say) can no longer write after the summary
        self.proc = subprocess.Popen([sys.executable, "-B", "-c", BOOTSTRAP], cwd=str(root), env=child_env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     pass_fds=(child_end.fileno(),), start_new_session=True)
        child_end.close()
        self.relay = OutputRelay(self.proc.stdout)
        from prepare.transport import Channel

        self.channel = Channel(parent_end)
        self.handed_over = False
        self.channel.send(setup)

    def send(self, message: dict, payload=b"") -> None:
        try:
            self.channel.send(message, payload)
        except OSError:
            raise Crashed(self._ended()) from None

    def next_message(self, deadline: float, into: bytearray | None = None, max_payload: int = 1 << 16):
        """The trainer's next message; a violation report becomes `Rejected`, a closed socket `Crashed`."""
        from prepare.transport import Closed, ProtocolError

        try:
            message, payload = self.channel.recv(deadline, into=into, max_payload=max_payload)
        except Closed:
            raise Crashed(self._ended()) from None
        except ProtocolError as exc:
            raise Crashed(f"the trainer broke the protocol: {exc}") from None
        if message["type"] == "violation":
            raise Rejected(f"the trainer {one_line(message.get('reason', 'broke a rule'), 240)}")
        if message["type"] == "error":
            raise Crashed(f"the model failed during evaluation: {one_line(message.get('message', ''), 240)}")
        return message, payload

    def check_pending(self) -> None:
        """After the last answer: a violation report still waiting in the socket refuses the run."""
        from prepare.transport import Deadline

        try:
            while True:
                self.next_message(time.monotonic() + 0.1)
        except (Deadline, Crashed):
            return

    def _ended(self) -> str:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        return f"the trainer's process ended (exit status {code}) without " + (
            "answering every evaluation batch" if self.handed_over else "handing its model over")

    def kill(self) -> None:
        """SIGKILL the trainer's whole process group, reap it, and stop relaying its output."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.relay.stop()
        self.channel.close()


class OutputRelay:
    """Copies the trainer's output (a pipe) to the referee's stdout until `stop`: after that,
    nothing the trainer's process tree writes reaches the log."""

    def __init__(self, pipe):
        import threading

        self.fd = pipe.fileno()
        self.pipe = pipe
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="trainer-output", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import select

        after_stop = 0  # bytes copied since `stop`: what the trainer wrote before it died, bounded
        while after_stop < 1 << 22:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                if not ready:
                    if self.stopping.is_set():
                        return
                    continue
                data = os.read(self.fd, 1 << 16)
            except (OSError, ValueError):  # closed under us
                return
            if not data:
                return
            if self.stopping.is_set():
                after_stop += len(data)
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    def stop(self) -> None:
        """Copy what the (dead) trainer already wrote, then stop and close the pipe."""
        self.stopping.set()
        self.thread.join(timeout=5)
        self.pipe.close()


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def wait_for_handover(session: Session, limits: Limits) -> dict:
    """The trainer's `trained` message (stats, batch_size, device), or Rejected / Crashed."""
    from prepare.transport import Deadline

    deadline = session.started + limits.kill_after
    try:
        message, _ = session.next_message(deadline)
    except Deadline:
        raise Rejected(f"no model handed over within {limits.kill_after:.0f} s: the budget ({limits.budget:g} s) "
                       f"plus the start-up allowance ({limits.startup_allowance:g} s) plus a margin") from None
    if message["type"] != "trained":
        raise Crashed(f"the trainer sent {one_line(message['type'], 40)!r} before handing its model over")
    session.handed_over = True
    return message


def evaluate(session: Session, rows, token_bytes, vocab: int, batch_size: int, device: str, limits: Limits,
             rng: random.Random):
    """(val_bpb, comparison): every evaluation row scored once, probes among them."""
    import torch

    from prepare import probes as pr
    from prepare.evaluate import BpbSum, token_nats
    from prepare.transport import Deadline, LogitsTransport, ProtocolError

    n_rows, T = rows.size(0), rows.size(1) - 1
    B = batch_size
    plan = pr.plan(n_rows, T, B, pr.PROBE_BATCHES, rng)
    comparison = pr.Comparison(rows, plan, pr.TOLERANCES["cuda" if device == "cuda" else "cpu"])
    starts = list(range(0, n_rows, B))
    order = [("real", s) for s in starts]
    for i in range(len(plan)):
        order.insert(rng.randrange(len(order) + 1), ("probe", i))
    transport = LogitsTransport.for_device(device)
    score_device = torch.device("cuda" if device == "cuda" else "cpu")
    total = BpbSum(token_bytes.to(score_device))
    max_width = vocab + MAX_EXTRA_VOCAB
    buffer = bytearray(B * T * max_width * 4) if device != "cuda" else None
    deadline = time.monotonic() + limits.eval_allowance
    for kind, ref in order:
        if kind == "real":
            real = rows[ref : ref + B]
            n_real = real.size(0)
            if n_real < B:  # pad with copies: every batch has the shape the model was compiled for
                real = torch.cat([real, rows[: B - n_real]])
            x = real[:, :T].contiguous()
        else:
            x, n_real = pr.probe_tokens(rows, plan[ref], vocab, rng), 0
        session.send({"type": "forward", "shape": [B, T]}, x.numpy())
        try:
            message, payload = session.next_message(deadline, into=buffer)
            if message["type"] != "logits":
                raise Crashed(f"the trainer answered a forward request with {one_line(message['type'], 40)!r}")
            shape = message.get("shape")
            if not (isinstance(shape, list) and len(shape) == 3 and all(_count(s) for s in shape)
                    and shape[:2] == [B, T] and vocab <= shape[2] <= max_width):
                raise Crashed(f"the model returned logits of shape {one_line(str(shape), 60)}; expected [{B}, {T}, {vocab}]")
            logits = transport.receive(session, message, payload, tuple(shape), deadline)
        except ProtocolError as exc:
            raise Crashed(f"the trainer broke the protocol: {exc}") from None
        except Deadline:
            raise Rejected(f"evaluation took longer than the allowance ({limits.eval_allowance:g} s): the model "
                           "answers too slowly, or the trainer kept working after its hand-over") from None
        chunk = max(1, SCORE_CHUNK_BYTES // (T * shape[2] * 4))
        for lo in range(0, B, chunk):
            part = logits[lo : lo + chunk]
            if device == "cuda":
                part = part.clone()  # our own copy: later writes into the shared buffer change nothing
            try:
                if kind == "probe":
                    comparison.on_probe(ref, part, first=lo)
                    continue
                n = max(0, min(part.size(0), n_real - lo))
                if n:
                    y = real[lo : lo + n, 1:].to(score_device)
                    nats = token_nats(part[:n], y)
                    if not bool(torch.isfinite(nats).all()):  # a NaN or +inf logit poisons its whole row
                        raise ValueError("non-finite logits")
                    total.add(nats, y)
                    comparison.on_real(ref + lo, part[:n])
            except ValueError:
                raise Crashed("the model returned non-finite logits (NaN or +inf)") from None
    return total.bpb(), comparison


def summary_lines(val_bpb: float, stats: dict, total_seconds: float, handover_seconds: float,
                  eval_seconds: float) -> list[str]:
    from prepare.handover import format_stats

    return ["---", f"val_bpb:          {val_bpb:.6f}", *format_stats(stats, total_seconds),
            f"handover_seconds: {handover_seconds:.1f}", f"eval_seconds:     {eval_seconds:.1f}"]


def _eval_batch_size(requested, n_rows: int, T: int, vocab: int, device: str) -> int:
    cap = max(1, MAX_BATCH_BYTES["cuda" if device == "cuda" else "cpu"] // (T * (vocab + MAX_EXTRA_VOCAB) * 4))
    wanted = _count(requested) or 32
    return max(1, min(wanted, n_rows, cap))


def run(root: Path, env: dict, out=print) -> int:
    """One refereed run of the trainer in checkout `root` (see the module docstring)."""
    import prepare
    import swarm
    from prepare.core import data_files
    from prepare.evaluate import eval_rows
    from prepare.guard import Rules
    from prepare.profiles import active_profile, active_source
    from prepare.tokenizer import Tokenizer

    t_start = time.monotonic()
    profile = active_profile(env)
    source = active_source(env, profile)
    limits = Limits.of(profile)
    target = python_target(task_command(env))
    paths = data_files(source, profile)
    tokenizer = Tokenizer.load(source, profile)
    vocab = tokenizer.get_vocab_size()
    rows = eval_rows(tokenizer)
    token_bytes = tokenizer.get_token_bytes("cpu")
    harness = Path(prepare.__file__).resolve().parent
    rules = Rules.for_run(paths, [harness, Path(swarm.__file__).resolve().parent], referee_pid=os.getpid())
    watched = watched_files(paths, [harness])
    _preload()
    sys.dont_write_bytecode = True  # from here on nothing of ours writes into prepare/ or swarm/
    before = fingerprint(watched)
    seed = int(env.get(SEED_ENV) or 0)
    setup = {"type": "setup", "seed": seed, "rules": rules.to_dict(), "target": target}
    shown = f"-m {target['module']}" if target["module"] else target["path"]
    out(f"referee: profile {profile.name}, budget {limits.budget:g} s + start-up allowance "
        f"{limits.startup_allowance:g} s; evaluating {rows.numel() - rows.size(0):,} tokens; running python {shown} "
        f"(seed {seed})")
    session = Session(root, env, setup)
    try:
        trained = wait_for_handover(session, limits)
        handover_seconds = time.monotonic() - session.started
        if handover_seconds > limits.handover:
            raise Rejected(f"the model was handed over after {handover_seconds:.1f} s: over the budget "
                           f"({limits.budget:g} s) plus the start-up allowance ({limits.startup_allowance:g} s)")
        device = "cuda" if trained.get("device") == "cuda" else "cpu"
        B = _eval_batch_size(trained.get("batch_size"), rows.size(0), rows.size(1) - 1, vocab, device)
        out(f"referee: model handed over after {handover_seconds:.1f} s; evaluating in batches of {B}")
        t_eval = time.monotonic()
        rng = random.Random(secrets.randbits(128))
        val_bpb, comparison = evaluate(session, rows, token_bytes, vocab, B, device, limits, rng)
        eval_seconds = time.monotonic() - t_eval
        session.check_pending()
    finally:
        session.kill()
    reason = comparison.verdict()
    out(f"referee: causality probes: {comparison.compared} rows compared, max |delta logit| {comparison.worst:.3g}, "
        f"max mean gain {comparison.gain:.3g} nats")
    if reason:
        raise Rejected(reason)
    changed = changed_files(before, fingerprint(watched))
    if changed:
        raise Rejected(f"the trainer changed files it must not change: {', '.join(changed[:3])}"
                       + (f" and {len(changed) - 3} more" if len(changed) > 3 else ""))
    stats = trained.get("stats") if isinstance(trained.get("stats"), dict) else {}
    for line in summary_lines(val_bpb, stats, time.monotonic() - t_start, handover_seconds, eval_seconds):
        out(line)
    return 0


def _preload() -> None:
    """Import now what evaluation needs: nothing is imported from the checkout once the trainer runs."""
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import torch.multiprocessing.reductions  # noqa: F401

    from prepare import evaluate, handover, probes, transport  # noqa: F401
    from swarm import errors  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    from swarm.errors import SwarmError

    def stop(signum, frame):
        raise _Stopped(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        return run(Path.cwd(), dict(os.environ), out)
    except Rejected as exc:
        out("---")
        out(f"rejected: {one_line(exc)}")
        return REJECT_EXIT
    except Crashed as exc:
        out(f"referee: {one_line(exc)}")
        return 1
    except SwarmError as exc:
        out(f"referee: error: {one_line(exc)}")
        return 2
    except _Stopped as exc:
        out("referee: stopped")
        return 128 + int(exc.args[0])


if __name__ == "__main__":
    sys.exit(main())
