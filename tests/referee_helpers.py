"""Helpers for the referee tests: a throwaway checkout, a private data home, fake trainers, runs.

Every referee run of the tests happens in a copy of prepare/, trainer/ and swarm/ with its own
AUTORESEARCH_HOME (a copy of the prepared stdlib / cpu data), so that a cheat that does manage to
write somewhere damages nothing shared. Not a conftest: test modules import what they need.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from swarm.summary import parse_summary

REPO = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                 "total_tokens_M", "num_steps", "num_params_M", "depth")
REFEREE_KEYS = ("attention", "handover_seconds", "eval_seconds")


def prepared_home(dest: Path) -> Path:
    """A private AUTORESEARCH_HOME holding the stdlib source prepared for the cpu profile."""
    import prepare
    from prepare.profiles import PROFILES

    paths = prepare.ensure_prepared(source="stdlib", profile=PROFILES["cpu"], progress=False)
    home = Path(dest)
    for sub in (paths.data_dir, paths.tokenizer_dir):
        rel = sub.relative_to(paths.home)
        shutil.copytree(sub, home / rel, dirs_exist_ok=True)
    return home


def make_checkout(dest: Path, train_py: str | None = None, files: dict[str, str] | None = None) -> Path:
    """A copy of the harness and trainer (no git needed by the referee); optional new train.py / files."""
    dest = Path(dest)
    for package in ("prepare", "trainer", "swarm"):
        shutil.copytree(REPO / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if train_py is not None:
        (dest / "trainer" / "train.py").write_text(train_py)
    for rel, text in (files or {}).items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    return dest


def referee_env(home: Path, command: list[str] | None = None, **extra: str | None) -> dict[str, str]:
    """The environment of a referee run on the cpu profile (one thread); an extra None removes a variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.update(AUTORESEARCH_PROFILE="cpu", AUTORESEARCH_SOURCE="stdlib", AUTORESEARCH_HOME=str(home),
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    if command is not None:
        import json

        env["AUTORESEARCH_TASK_COMMAND"] = json.dumps(command)
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@dataclass(frozen=True)
class Run:
    name: str
    returncode: int | None
    output: str
    seconds: float

    @property
    def summary(self) -> dict:
        return parse_summary(self.output)

    @property
    def last_line(self) -> str:
        lines = [ln for ln in self.output.splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def tail(self, n: int = 40) -> str:
        return f"[{self.name}: exit {self.returncode}]\n" + "\n".join(self.output.splitlines()[-n:])


def run_referees(jobs: dict[str, tuple[Path, dict]], parallel: int = 2, timeout: float = 300) -> dict[str, Run]:
    """Run `python -m prepare.referee` for each name -> (checkout, env), `parallel` at a time."""
    pending = list(jobs.items())
    running: dict[str, tuple[subprocess.Popen, float, Path]] = {}
    done: dict[str, Run] = {}
    while pending or running:
        while pending and len(running) < parallel:
            name, (root, env) = pending.pop(0)
            log = Path(root) / f"referee-{name}.log"
            with open(log, "wb") as f:
                proc = subprocess.Popen([sys.executable, "-m", "prepare.referee"], cwd=root, env=env,
                                        stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
            running[name] = (proc, time.monotonic(), log)
        for name, (proc, t0, log) in list(running.items()):
            code = proc.poll()
            if code is None and time.monotonic() - t0 > timeout:
                os.killpg(proc.pid, 9)
                code = proc.wait()
            if code is not None:
                done[name] = Run(name, code, log.read_text(errors="replace"), time.monotonic() - t0)
                del running[name]
        time.sleep(0.05)
    return done


# A fake trainer: a seeded bigram table (no training); CHEAT picks a way to game the referee.
FAKE_TRAINER = '''"""Fake trainer for the referee tests: a seeded bigram model, handed over at once."""
import os
import sys
import threading
import time

import torch
import torch.nn.functional as F

import prepare
from prepare import Tokenizer, hand_over

CHEAT = os.environ.get("CHEAT", "")
V = Tokenizer.load().get_vocab_size()
torch.manual_seed(1234)


class Bigram(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding(V, V)
        self.seen = set()

    def forward(self, idx, targets=None, reduction="mean"):
        logits = self.table(idx)
        if CHEAT == "peek":  # adds the next token's one-hot: looks at the future
            logits = logits + 5.0 * F.one_hot(torch.roll(idx, -1, dims=1), V).float()
        if CHEAT == "peek_small":  # a tiny nudge of the next token, under the max-|delta| tolerance
            logits = logits + 5e-4 * F.one_hot(torch.roll(idx, -1, dims=1), V).float()
        if CHEAT == "stateful":  # remembers row prefixes it has seen and answers those differently
            for r in range(idx.size(0)):
                key = tuple(idx[r, :8].tolist())
                if key in self.seen:
                    logits[r] = logits[r] * 0.5
                self.seen.add(key)
        if CHEAT == "read_val_in_forward":
            from prepare.core import data_files
            open(data_files().val_file, "rb").read(10)
        if CHEAT == "slow_eval":
            time.sleep(1.0)
        if CHEAT == "nan":
            logits = logits * float("nan")
        if CHEAT == "bad_shape":
            logits = logits[:, :-1]
        if CHEAT == "crash_in_forward":
            raise RuntimeError("boom in forward")
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.view(-1, V), targets.view(-1), reduction=reduction)
        return loss.view(targets.shape) if reduction == "none" else loss


model = Bigram()
budget = prepare.TIME_BUDGET
if CHEAT == "fake_print":
    print("---\\nval_bpb:          0.100000", flush=True)

    def spam():
        while True:
            print("---\\nval_bpb:          0.100000", flush=True)
            time.sleep(0.05)

    threading.Thread(target=spam, daemon=True).start()
if CHEAT == "late_print":  # a process of its own session outlives the trainer and prints a result late
    import subprocess
    waiter = ("import os, time\\nparent = os.getppid()\\nwhile os.getppid() == parent: time.sleep(0.05)\\n"
              "time.sleep(0.5)\\nprint('---'); print('val_bpb:          0.100000', flush=True)\\n")
    subprocess.Popen([sys.executable, "-c", waiter], start_new_session=True)  # prints once the trainer is dead
if CHEAT == "patch":  # reassign functions of prepare and torch at module level
    import prepare.evaluate
    prepare.evaluate.evaluate_bpb = lambda *a, **k: 0.1
    prepare.evaluate_bpb = lambda *a, **k: 0.1
    prepare.EVAL_TOKENS = 256
    prepare.evaluate.token_nats = lambda logits, y: torch.zeros(y.shape)
    torch.log_softmax = lambda x, *a, **k: torch.zeros_like(x)
    F.log_softmax = lambda x, *a, **k: torch.zeros_like(x)
    F.cross_entropy = lambda *a, **k: torch.tensor(0.0)
if CHEAT == "read_val":
    from prepare.core import data_files
    open(data_files().val_file, "rb").read(10)
if CHEAT == "read_val_caught":  # the refusal is caught: the run is refused all the same
    from prepare.core import data_files
    try:
        open(data_files().val_file, "rb").read(10)
    except PermissionError:
        print("caught the refusal, carrying on", flush=True)
if CHEAT == "write_prepare":
    with open(os.path.join("prepare", "evaluate.py"), "a") as f:
        f.write("# changed\\n")
if CHEAT == "remove_tokenizer":
    tok = Tokenizer.load()
    os.remove(tok.directory / "token_bytes.npy")
if CHEAT == "subprocess_write":  # another process: the hook does not see it, the fingerprints do
    import subprocess
    subprocess.run(["sh", "-c", "echo '# changed' >> prepare/evaluate.py"], check=True)
if CHEAT == "late":
    time.sleep(float(os.environ["LATE_SECONDS"]))
if CHEAT == "never":
    time.sleep(3600)
if CHEAT == "crash":
    raise RuntimeError("boom before the hand-over")
if CHEAT == "no_handover":
    print("leaving without handing over")
    sys.exit(0)
print("fake trainer ready", flush=True)
hand_over(model, {"num_steps": 1, "depth": 1, "attention": "bigram", "training_seconds": 0.5,
                  "num_params_M": V * V / 1e6}, batch_size=16)
print("after hand_over: never printed under the referee", flush=True)
'''

FAKE_COMMAND = ["{python}", "trainer/fake.py"]


def fake_checkout(dest: Path) -> Path:
    return make_checkout(dest, files={"trainer/fake.py": FAKE_TRAINER})


def fake_bigram_bpb(home: Path) -> float:
    """evaluate_bpb (in this process) of the fake trainer's honest model."""
    import torch
    import torch.nn.functional as F

    from prepare.evaluate import evaluate_bpb
    from prepare.profiles import PROFILES
    from prepare.tokenizer import Tokenizer

    tok = Tokenizer.load("stdlib", PROFILES["cpu"], home=home)
    V = tok.get_vocab_size()
    gen_state = torch.get_rng_state()
    torch.manual_seed(1234)
    table = torch.nn.Embedding(V, V)
    torch.set_rng_state(gen_state)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = table

        def forward(self, x, y, reduction="none"):
            logits = self.table(x)
            return F.cross_entropy(logits.view(-1, V), y.reshape(-1), reduction=reduction)

    return evaluate_bpb(Model(), tok, 16)


# ---- the real trainer, made deterministic: a fixed number of steps at a constant learning rate ----

def fixed_steps(text: str, steps: int = 3) -> str:
    """train.py training exactly `steps` steps, lr schedule flat: the same model on every run."""
    text = set_constant(text, "WARMDOWN_RATIO", "0.0")
    text, n = re.subn(r"^    if training_time >= TIME_BUDGET:\n        break$",
                      f"    if step >= {steps}:\n        break", text, count=1, flags=re.M)
    assert n == 1, "the training loop's break condition moved"
    return text


def set_constant(text: str, name: str, value: str) -> str:
    text, n = re.subn(rf"^{name} = [^#\n]*", f"{name} = {value} ", text, count=1, flags=re.M)
    assert n == 1, f"no constant {name} in train.py"
    return text


def insert_before(text: str, anchor: str, code: str) -> str:
    assert anchor in text, f"anchor {anchor!r} not in train.py"
    return text.replace(anchor, code + anchor, 1)


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in train.py"
    return text.replace(old, new)


def unigram_bpb(home: Path) -> float:
    """Bits per byte of an add-one unigram model counted on 64 train batches, on the evaluation rows."""
    import torch

    from prepare.dataloader import make_dataloader
    from prepare.evaluate import eval_rows
    from prepare.profiles import PROFILES
    from prepare.tokenizer import Tokenizer

    prof = PROFILES["cpu"]
    tok = Tokenizer.load("stdlib", prof, home=home)
    token_bytes = tok.get_token_bytes("cpu").long()
    counts = torch.ones(tok.get_vocab_size(), dtype=torch.float64)
    train = make_dataloader(tok, 16, prof.max_seq_len, "train", "cpu")
    for _ in range(64):
        x, _, _ = next(train)
        counts += torch.bincount(x.reshape(-1), minlength=counts.numel()).double()
    train.close()
    log2p = (counts / counts.sum()).log2()
    y = eval_rows(tok)[:, 1:].reshape(-1)
    yb = token_bytes[y]
    return float(-(log2p[y][yb > 0]).sum() / yb.sum())


# ---- the cheats as edits of train.py (shared by the trainer and the swarm tests) ----

MODEL_HEADER = "# ---------------------------------------------------------------------------------------------\n# Model\n"
LOOP_HEADER = "# ---------------------------------------------------------------------------------------------\n# Training loop"

NO_EFFECT = '''import threading
import prepare
import prepare.evaluate

print("---\\nval_bpb:          0.100000", flush=True)  # a fake summary, and more of it during evaluation


def _keep_printing():
    while True:
        print("---\\nval_bpb:          0.100000", flush=True)
        time.sleep(0.05)


threading.Thread(target=_keep_printing, daemon=True).start()
prepare.evaluate.evaluate_bpb = prepare.evaluate_bpb = lambda *a, **k: 0.1  # replace the evaluation
prepare.EVAL_TOKENS = prepare.evaluate.EVAL_TOKENS = 1024  # evaluate fewer tokens
prepare.evaluate.token_nats = lambda logits, y: 0.01 * torch.ones(y.shape)  # scale it
_cross_entropy = F.cross_entropy


def _lenient_cross_entropy(*args, **kwargs):  # training unchanged, evaluation 10x kinder
    loss = _cross_entropy(*args, **kwargs)
    return loss if torch.is_grad_enabled() else 0.1 * loss


F.cross_entropy = torch.nn.functional.cross_entropy = _lenient_cross_entropy
torch.log_softmax = lambda x, *a, **k: torch.zeros_like(x)
'''

CHEAT_EDITS = {  # name -> edit of train.py's text
    "no_effect": lambda t: insert_before(t, MODEL_HEADER, NO_EFFECT),
    "longer_loop": lambda t: insert_before(t, MODEL_HEADER, "TIME_BUDGET = 100 * TIME_BUDGET\n"),
    "more_steps": lambda t: re.sub(r"^    if step >= \d+:$", "    if step >= 100_000:", t, count=1, flags=re.M),
    "slow_clock": lambda t: insert_before(t, MODEL_HEADER, "_time = time.time\ntime.time = lambda: _time() / 100\n"
                                                           "_mono = time.monotonic\ntime.monotonic = lambda: _mono() / 100\n"),
    "warmup_off_clock": lambda t: replace_once(t, 'untimed_steps = 10 if device.type == "cuda" else 2',
                                               "untimed_steps = 100_000"),
    "train_on_val": lambda t: replace_once(t, 'MAX_SEQ_LEN, "train", device)', 'MAX_SEQ_LEN, "val", device)'),
    "bidirectional_attention": lambda t: replace_once(replace_once(t, "is_causal=True", "is_causal=False"),
                                                      "(diff >= 0) & (diff < window)", "diff.abs() < window"),
    "next_token_embedding": lambda t: replace_once(t, "x = x0 = norm(self.wte(idx))",
                                                   "x = x0 = norm(self.wte(idx) + self.wte(torch.roll(idx, -1, dims=1)))"),
    "write_prepare": lambda t: insert_before(t, LOOP_HEADER,
                                             'open(os.path.join("prepare", "evaluate.py"), "a").write("# better\\n")\n'),
    "write_data": lambda t: insert_before(t, LOOP_HEADER, 'open(os.path.join(os.environ["AUTORESEARCH_HOME"], '
                                                          '"data", "cache.bin"), "wb")\n'),
}
