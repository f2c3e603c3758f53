"""The `prepare` subcommand of `autoresearch`, and `python -m prepare`.

Light to import (the `autoresearch` CLI imports it on every start): everything heavy is
imported inside `run`. Not covered: what preparing means (prepare/core.py).
"""

from __future__ import annotations

import argparse
import sys
import time

HELP = "download or build the data and train the tokenizer (idempotent)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="climbmix, stdlib or local:PATH (default: env AUTORESEARCH_SOURCE, "
                                    "else climbmix on the gpu profile and stdlib on cpu)")
    p.add_argument("--profile", choices=("gpu", "cpu"),
                   help="constants profile (default: env AUTORESEARCH_PROFILE, else gpu if CUDA is present)")
    p.add_argument("--num-shards", type=int, default=None, help="climbmix: training shards to download (default 10)")
    p.add_argument("--base-url", default=None, help="climbmix: mirror base URL (default: env "
                                                    "AUTORESEARCH_CLIMBMIX_URL, else Hugging Face)")
    p.add_argument("--workers", type=int, default=8, help="climbmix: parallel download threads (default 8)")
    p.add_argument("--home", default=None, help="artifact directory (default: env AUTORESEARCH_HOME, "
                                                "else ~/.cache/autoresearch)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def register(subparsers) -> None:
    p = subparsers.add_parser("prepare", help=HELP, description=HELP)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prepare.core import ensure_prepared, resolve
    from prepare.tokenizer import Tokenizer

    progress = not args.quiet
    t0 = time.time()
    paths = ensure_prepared(args.source, args.profile, progress=progress, home=args.home,
                            num_shards=args.num_shards, base_url=args.base_url, workers=args.workers)
    _, prof, _ = resolve(paths.source, paths.profile, paths.home)
    tok = Tokenizer.from_directory(paths.tokenizer_dir, paths.source, prof, home=paths.home)
    state = "prepared" if paths.stats else "already prepared"
    print(f"{state}: source {paths.source}, profile {paths.profile} (vocab {tok.get_vocab_size()}, "
          f"seq len {prof.max_seq_len}) in {time.time() - t0:.1f}s")
    print(f"  data:      {paths.data_dir} ({len(paths.train_files)} train shard(s) + val)")
    print(f"  tokenizer: {paths.tokenizer_dir}")
    s = paths.stats
    if "docs" in s:
        print(f"  documents: {s['docs']:,} ({s['val_docs']:,} val), {s['chars']:,} chars")
    if "bytes_per_token" in s:
        print(f"  tokenizer: trained in {s['tokenizer_seconds']:.1f}s on {s['tokenizer_chars']:,} chars, "
              f"{s['bytes_per_token']:.2f} bytes/token on val samples")
    return 0


def main(argv: list[str] | None = None) -> int:
    from swarm.errors import SwarmError

    parser = argparse.ArgumentParser(prog="python -m prepare", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except SwarmError as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prepare: interrupted", file=sys.stderr)
        return 130
