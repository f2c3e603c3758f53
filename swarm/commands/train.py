"""`autoresearch train`: one training run of trainer/train.py, output streamed to the terminal."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="run trainer/train.py once (the classic single-GPU experiment)",
        description="Train the GPT in trainer/train.py for the profile's fixed time budget and print "
        "its summary block (val_bpb, MFU, ...). Data must be prepared first: `autoresearch prepare`.",
    )
    p.add_argument("--profile", choices=["gpu", "cpu"], help="default: gpu when CUDA is present, else cpu")
    p.add_argument("--source", help="data source: climbmix, stdlib or local:PATH (default per profile)")
    p.add_argument("--repo", help="checkout holding trainer/train.py (default: this one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from swarm.proc import run_process
    from swarm.project import find_trainer_root

    root = find_trainer_root(args.repo)
    env = dict(os.environ)
    if args.profile:
        env["AUTORESEARCH_PROFILE"] = args.profile
    if args.source:
        env["AUTORESEARCH_SOURCE"] = args.source
    env.setdefault("PYTHONUNBUFFERED", "1")
    result = run_process([sys.executable, "-m", "trainer.train"], cwd=root, env=env, timeout=24 * 3600, stream=True)
    return 0 if result.ok else (result.returncode or 1)
