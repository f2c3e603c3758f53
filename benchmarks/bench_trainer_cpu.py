"""Benchmark: one training run of trainer/train.py on the cpu profile (stdlib source).

Prepares the data if missing (no network for stdlib), runs `python -m trainer.train` as the swarm
does, and prints the figures of its summary block plus throughput. Timings on a shared machine
are noisy: run it on an otherwise idle one for figures worth quoting.

    python benchmarks/bench_trainer_cpu.py [--runs N] [--threads T]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def one_run(threads: int | None) -> dict:
    from swarm.summary import parse_summary

    env = dict(os.environ, AUTORESEARCH_PROFILE="cpu", AUTORESEARCH_SOURCE="stdlib", PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "trainer.train"], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"training run failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    s = parse_summary(proc.stdout)
    s["wall_seconds"] = wall
    # throughput: median over the progress lines of the timed steps (the summary rounds tokens)
    rates = [float(m.group(2).replace(",", "")) for m in re.finditer(r"^step (\d+) .*?\| ([\d,]+) tok/s", proc.stdout, re.M)
             if int(m.group(1)) > 2]
    s["tokens_per_second"] = statistics.median(rates) if rates else float("nan")
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1, help="training runs (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the trainer (default: unset)")
    args = ap.parse_args()

    from prepare import ensure_prepared
    from prepare.profiles import PROFILES

    ensure_prepared(source="stdlib", profile=PROFILES["cpu"], progress=False)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, threads {args.threads or 'default'}")
    runs = []
    for i in range(args.runs):
        s = one_run(args.threads)
        runs.append(s)
        print(f"run {i + 1}: val_bpb {s['val_bpb']:.4f} | steps {s['num_steps']:.0f} | "
              f"{s['tokens_per_second']:,.0f} tok/s | training {s['training_seconds']:.1f}s | "
              f"total {s['total_seconds']:.1f}s | wall {s['wall_seconds']:.1f}s | "
              f"params {s['num_params_M']}M | peak rss {s['peak_vram_mb']:.0f} MB", flush=True)
    if len(runs) > 1:
        med = {k: statistics.median(r[k] for r in runs) for k in ("val_bpb", "num_steps", "tokens_per_second", "total_seconds")}
        print(f"median: val_bpb {med['val_bpb']:.4f} | steps {med['num_steps']:.0f} | "
              f"{med['tokens_per_second']:,.0f} tok/s | total {med['total_seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
