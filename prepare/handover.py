"""The trainer's side of the referee: the bootstrap that runs train.py, and `hand_over`.

The referee (prepare/referee.py) starts `python -B -c "import prepare.handover as h; h.main()"`
with one end of a socket (fd in AUTORESEARCH_REFEREE_FD). `main` reads the referee's setup
message, arranges to die with the referee, seeds random / numpy / torch with the referee's seed,
installs the guard (prepare/guard.py) and only then runs the trainer command in this process as
`__main__`. The trainer ends with `hand_over(model, stats, ...)`: it reports its own stats, then
answers the referee's forward requests (token ids in, logits out; never the targets) until the
referee is done, and the process ends there: under the referee `hand_over` never returns.

Run without a referee (`python -m trainer.train`), `hand_over` evaluates in this process and
prints a summary marked as not refereed: a quick look for a person, never a result (the swarm and
`autoresearch train` always go through the referee).
Not covered: the clock, the metric and the checks (prepare/referee.py).
"""

from __future__ import annotations

import os
import sys
import time

FD_ENV = "AUTORESEARCH_REFEREE_FD"
BOOTSTRAP = "import prepare.handover as h; h.main()"
STAT_KEYS = ("training_seconds", "peak_vram_mb", "mfu_percent", "total_tokens_M", "num_steps", "num_params_M",
             "depth", "attention")

_channel = None  # the referee connection, set by main()
_started = time.monotonic()


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when the referee dies (so a killed referee leaves no trainer)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the referee kills the process group itself
        return
    if os.getppid() != parent:  # the referee died before the prctl
        os._exit(1)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every device, CUDA included


def main() -> None:
    """Entry point of the trainer's process (started by the referee only)."""
    import runpy
    import socket

    from prepare import guard
    from prepare.transport import Channel

    global _channel
    parent = os.getppid()
    try:
        fd = int(os.environ.pop(FD_ENV))
    except (KeyError, ValueError):
        sys.exit("prepare.handover: started without a referee; run `python -m prepare.referee`")
    channel = Channel(socket.socket(fileno=fd))
    setup, _ = channel.recv()
    _die_with_parent(parent)
    sys.dont_write_bytecode = True
    seed_everything(int(setup.get("seed", 0)))

    def report(reason: str) -> None:
        channel.send({"type": "violation", "reason": reason})

    guard.install(guard.Rules.from_dict(setup["rules"]), report)
    _channel = channel
    target = setup["target"]
    if target.get("module"):
        sys.argv = [target["module"], *target.get("args", [])]
        runpy.run_module(target["module"], run_name="__main__", alter_sys=True)
    else:
        path = os.path.abspath(target["path"])
        sys.argv = [path, *target.get("args", [])]
        sys.path.insert(0, os.path.dirname(path))
        runpy.run_path(path, run_name="__main__")
    # the trainer returned without handing its model over: the referee reports it


def _plain(value):
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, str)):
        return value
    try:
        return float(value)  # numpy / torch scalars
    except (TypeError, ValueError):
        return str(value)[:64]


def hand_over(model, stats: dict, batch_size: int | None = None, autocast=None) -> None:
    """Give the trained model to the referee, which evaluates it and prints the summary.

    `model(x)` must map token ids [B, T] (int64, on the model's device) to logits [B, T, V]
    (V: the vocabulary size, or a little more for a padded one). `stats`: the trainer's own
    figures (training_seconds, peak_vram_mb, mfu_percent, total_tokens_M, num_steps,
    num_params_M, depth, attention), printed as the trainer's claims. `batch_size`: rows per
    evaluation batch (the training batch keeps compiled shapes). `autocast`: a context manager
    the forward passes run in (e.g. the trainer's torch.autocast), default none.
    """
    plain = {k: _plain(stats.get(k)) for k in STAT_KEYS if k in stats}
    if _channel is None:
        _standalone(model, plain, batch_size, autocast)
        return
    import gc
    import traceback
    from contextlib import nullcontext

    import torch

    from prepare.transport import Closed, LogitsTransport

    from prepare.evaluate import model_device

    device = model_device(model)
    if hasattr(model, "eval"):
        model.eval()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # room for the referee's buffer
    sys.stdout.flush()
    _channel.send({"type": "trained", "stats": plain, "batch_size": batch_size, "device": device.type})
    transport = LogitsTransport.for_device(device.type)
    context = autocast if autocast is not None else nullcontext()
    code = 0
    try:
        while True:
            message, payload = _channel.recv(max_payload=1 << 30)
            if message["type"] != "forward":
                break
            B, T = message["shape"]
            x = torch.frombuffer(bytearray(payload), dtype=torch.int64).view(B, T).to(device)
            with torch.no_grad(), context:
                logits = model(x)
            if not isinstance(logits, torch.Tensor):
                raise TypeError(f"the model returned {type(logits).__name__}, not a tensor of logits")
            transport.send(_channel, logits)
    except Closed:
        pass
    except BaseException as exc:  # noqa: BLE001 - reported, then this process ends
        traceback.print_exc()
        code = 1
        try:
            _channel.send({"type": "error", "message": f"{type(exc).__name__}: {exc}"[:300]})
        except OSError:
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # nothing of the trainer runs after its hand-over


def _standalone(model, stats: dict, batch_size: int | None, autocast) -> None:
    """No referee: evaluate here, print a summary marked unrefereed."""
    from contextlib import nullcontext

    import torch

    from prepare.evaluate import BpbSum, eval_rows, model_device, token_nats
    from prepare.tokenizer import Tokenizer

    device = model_device(model)
    tokenizer = Tokenizer.load()
    rows = eval_rows(tokenizer)
    total = BpbSum(tokenizer.get_token_bytes(device))
    context = autocast if autocast is not None else nullcontext()
    step = batch_size or 16
    if hasattr(model, "eval"):
        model.eval()
    with torch.no_grad():
        for start in range(0, rows.size(0), step):
            batch = rows[start : start + step].to(device)
            x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
            with context:
                logits = model(x)
            total.add(token_nats(logits, y), y)
    val_bpb = total.bpb()
    print("not refereed: this process evaluated its own model; run `autoresearch train` (python -m prepare.referee) "
          "for a result")
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    for line in format_stats(stats, total_seconds=time.monotonic() - _started):
        print(line)


def format_stats(stats: dict, total_seconds: float) -> list[str]:
    """The summary lines after val_bpb, in the contract's order (missing figures print as 0)."""

    def num(key):
        value = stats.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            and value == value and abs(value) != float("inf") else 0.0

    attention = stats.get("attention")
    attention = attention if isinstance(attention, str) and attention.replace("_", "").replace("-", "").isalnum() \
        and len(attention) <= 32 else "unknown"
    return [
        f"training_seconds: {num('training_seconds'):.1f}",
        f"total_seconds:    {total_seconds:.1f}",
        f"peak_vram_mb:     {num('peak_vram_mb'):.1f}",
        f"mfu_percent:      {num('mfu_percent'):.2f}",
        f"total_tokens_M:   {num('total_tokens_M'):.1f}",
        f"num_steps:        {int(num('num_steps'))}",
        f"num_params_M:     {num('num_params_M'):.1f}",
        f"depth:            {int(num('depth'))}",
        f"attention:        {attention}",
    ]
