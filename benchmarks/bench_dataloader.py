"""Dataloader throughput: tokens/s of make_dataloader with the real tokenizer on the stdlib data.

Prepares `stdlib` for the cpu profile if needed, then times the train loader at the cpu
profile's shape (B=32, T=256) and at the gpu profile's context (B=128, T=2048), and compares
with the ~1.7M tokens/s an H100 consumes in the reference (953 steps x 2^19 tokens in 300 s).
Tokenization happens in the loader, so the figure depends on the CPU cores free.

    python benchmarks/bench_dataloader.py [--seconds 10] [--threads 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

H100_TOKENS_PER_S = 953 * 2**19 / 300  # ~1.67M


def measure(tok, B: int, T: int, seconds: float, threads: int) -> tuple[float, float]:
    from prepare.dataloader import make_dataloader

    loader = make_dataloader(tok, B, T, "train", threads=threads)
    t0 = time.perf_counter()
    next(loader)
    first = time.perf_counter() - t0
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x, y, _ = next(loader)
        n += x.numel()
    rate = n / (time.perf_counter() - t0)
    loader.close()
    return rate, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=4, help="tokenizer threads in the loader")
    args = ap.parse_args()
    from prepare.core import ensure_prepared
    from prepare.tokenizer import Tokenizer

    ensure_prepared("stdlib", "cpu", progress=True)
    tok = Tokenizer.load("stdlib", "cpu")
    print(f"tokenizer {tok}, {os.cpu_count()} CPU cores, {args.threads} tokenizer threads")
    for B, T, label in ((32, 256, "cpu profile"), (128, 2048, "gpu profile T")):
        rate, first = measure(tok, B, T, args.seconds, args.threads)
        print(f"B={B:4d} T={T:5d} ({label}): {rate / 1e6:6.2f}M tokens/s, first batch {first * 1000:.0f} ms, "
              f"{rate / H100_TOKENS_PER_S:5.2f}x the {H100_TOKENS_PER_S / 1e6:.2f}M tokens/s an H100 consumes")


if __name__ == "__main__":
    main()
