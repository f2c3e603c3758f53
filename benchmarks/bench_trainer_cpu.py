"""Benchmark: refereed training runs of trainer/train.py on the cpu profile (stdlib source).

Prepares the data if missing (no network for stdlib), runs `python -m prepare.referee` as the swarm
does (the referee runs train.py, evaluates the handed-over model itself and prints the summary),
and prints the figures of its summary block plus throughput and the referee's own figures:
start-up (hand-over time minus the trainer's training time: interpreter, imports, data loader,
untimed steps) and evaluation time. `--parallel 2` runs two at once, as two swarm workers on a
2-core machine do (what the cpu profile's start-up allowance has to cover). `--overhead` also
measures the referee's own cost: the evaluation of a model that computes nothing (a lookup
table), i.e. moving 16 + 3 batches of 16 x 256 x 2048 float32 logits and scoring them. Timings on
a shared machine are noisy: run it on an otherwise idle one for figures worth quoting.

    python benchmarks/bench_trainer_cpu.py [--runs N] [--parallel P] [--threads T] [--overhead]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LOOKUP_TRAINER = '''import torch
from prepare import Tokenizer, hand_over
V = Tokenizer.load().get_vocab_size()
model = torch.nn.Embedding(V, V)  # logits = a table lookup: no compute to speak of
hand_over(model, {"num_steps": 0, "depth": 0, "attention": "none"}, batch_size=16)
'''


def _env(threads: int | None, command: list[str] | None = None) -> dict:
    env = dict(os.environ, AUTORESEARCH_PROFILE="cpu", AUTORESEARCH_SOURCE="stdlib", PYTHONUNBUFFERED="1")
    env.pop("AUTORESEARCH_TASK_COMMAND", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if command:
        env["AUTORESEARCH_TASK_COMMAND"] = json.dumps(command)
    return env


def _parse(stdout: str, wall: float) -> dict:
    from swarm.summary import parse_summary

    s = parse_summary(stdout)
    s["wall_seconds"] = wall
    s["startup_seconds"] = s.get("handover_seconds", float("nan")) - s.get("training_seconds", 0.0)
    # throughput: median over the progress lines of the timed steps (the summary rounds tokens)
    rates = [float(m.group(2).replace(",", "")) for m in re.finditer(r"^step (\d+) .*?\| ([\d,]+) tok/s", stdout, re.M)
             if int(m.group(1)) > 2]
    s["tokens_per_second"] = statistics.median(rates) if rates else float("nan")
    return s


def batch(n: int, threads: int | None, command: list[str] | None = None) -> list[dict]:
    """`n` refereed runs started together."""
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, "-m", "prepare.referee"], cwd=REPO, env=_env(threads, command),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"refereed run failed (exit {proc.returncode}):\n{stdout[-2000:]}\n{stderr[-2000:]}")
        out.append(_parse(stdout, time.time() - t0))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1, help="rounds of runs (default 1)")
    ap.add_argument("--parallel", type=int, default=1, help="runs at once in each round (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the trainer (default: unset)")
    ap.add_argument("--overhead", action="store_true", help="also time the referee's evaluation of a no-compute model")
    args = ap.parse_args()

    from prepare import ensure_prepared
    from prepare.profiles import PROFILES

    ensure_prepared(source="stdlib", profile=PROFILES["cpu"], progress=False)
    prof = PROFILES["cpu"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, threads {args.threads or 'default'}, {args.parallel} at once; "
          f"cpu profile: budget {prof.time_budget:g} s, start-up allowance {prof.startup_allowance:g} s, "
          f"eval allowance {prof.eval_allowance:g} s")
    runs = []
    for i in range(args.runs):
        for j, s in enumerate(batch(args.parallel, args.threads)):
            runs.append(s)
            print(f"run {i + 1}.{j + 1}: val_bpb {s['val_bpb']:.4f} | steps {s['num_steps']:.0f} | "
                  f"{s['tokens_per_second']:,.0f} tok/s | training {s['training_seconds']:.1f}s | "
                  f"start-up {s['startup_seconds']:.1f}s | hand-over {s['handover_seconds']:.1f}s | "
                  f"eval {s['eval_seconds']:.1f}s | total {s['total_seconds']:.1f}s | wall {s['wall_seconds']:.1f}s | "
                  f"params {s['num_params_M']}M | peak rss {s['peak_vram_mb']:.0f} MB", flush=True)
    if len(runs) > 1:
        keys = ("val_bpb", "num_steps", "tokens_per_second", "startup_seconds", "eval_seconds", "total_seconds")
        med = {k: statistics.median(r[k] for r in runs) for k in keys}
        print(f"median: val_bpb {med['val_bpb']:.4f} | steps {med['num_steps']:.0f} | "
              f"{med['tokens_per_second']:,.0f} tok/s | start-up {med['startup_seconds']:.1f}s (max "
              f"{max(r['startup_seconds'] for r in runs):.1f}s) | eval {med['eval_seconds']:.1f}s (max "
              f"{max(r['eval_seconds'] for r in runs):.1f}s) | total {med['total_seconds']:.1f}s")
    if args.overhead:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Path(tmp) / "lookup.py"
            trainer.write_text(LOOKUP_TRAINER)
            s = batch(1, args.threads, ["{python}", str(trainer)])[0]
        n = prof.eval_tokens * prof.vocab_size * 4 / 2**20
        print(f"referee overhead (a model that computes nothing): evaluation {s['eval_seconds']:.1f}s for "
              f"{n:,.0f} MB of logits (+ 3 probe batches), hand-over {s['handover_seconds']:.1f}s, "
              f"referee total {s['total_seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
