"""Tokenizer training time on the stdlib corpus at the cpu profile's vocabulary size.

Trains into a temporary directory (nothing prepared is touched) on the prepared stdlib train
split, with the same character cap as `prepare` uses for the cpu profile, and prints the time,
characters, and the compression (bytes per token) on the val split; also tiktoken encode speed.

    python benchmarks/bench_tokenizer.py [--vocab 2048]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    from prepare.core import ensure_prepared, iter_texts
    from prepare.profiles import PROFILES
    from prepare.tokenizer import Tokenizer, train_max_chars, train_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=PROFILES["cpu"].vocab_size)
    args = ap.parse_args()
    paths = ensure_prepared("stdlib", "cpu", progress=True)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        info = train_tokenizer(iter_texts(paths.train_files), args.vocab, Path(d), max_chars=train_max_chars("cpu"))
        dt = time.perf_counter() - t0
        tok = Tokenizer.from_directory(Path(d))
        val = list(iter_texts([paths.val_file]))
        t1 = time.perf_counter()
        ids = tok.encode(val, num_threads=1)
        enc_dt = time.perf_counter() - t1
        n_tok = sum(map(len, ids))
        n_bytes = sum(len(t.encode()) for t in val)
    print(f"trained vocab {args.vocab} on {info['train_chars']:,} chars ({info['train_docs']:,} docs) "
          f"in {dt:.2f}s ({os.cpu_count()} CPU cores)")
    print(f"val: {n_bytes:,} bytes -> {n_tok:,} tokens = {n_bytes / n_tok:.2f} bytes/token; "
          f"encode {n_tok / enc_dt / 1e6:.2f}M tokens/s on one thread")


if __name__ == "__main__":
    main()
