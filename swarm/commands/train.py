"""`autoresearch train`: one refereed training run of trainer/train.py, output streamed to the terminal.

It runs the referee (`python -m prepare.referee`), which runs trainer/train.py, keeps the clock,
evaluates the handed-over model itself and prints the summary block; the exit status is the
referee's (0 measured, 3 refused with a last line `rejected: <reason>`, 1 crashed).
"""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="run trainer/train.py once through the referee (the classic single-GPU experiment)",
        description="Train the GPT in trainer/train.py for the profile's fixed time budget under the referee "
        "(python -m prepare.referee), which evaluates the model itself and prints its summary block (val_bpb, "
        "MFU, ...). Exit status 3: the referee refused the run (the last line says why). "
        "Data must be prepared first: `autoresearch prepare`.",
    )
    p.add_argument("--profile", choices=["gpu", "cpu"], help="default: gpu when CUDA is present, else cpu")
    p.add_argument("--source", help="data source: climbmix, stdlib or local:PATH (default per profile)")
    p.add_argument("--repo", help="checkout holding trainer/train.py (default: this one)")
    p.add_argument("--seed", type=int, default=None, help="seed the referee gives the trainer (default: env "
                                                          "AUTORESEARCH_SEED, else 0)")
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
    if args.seed is not None:
        env["AUTORESEARCH_SEED"] = str(args.seed)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.pop("AUTORESEARCH_TASK_COMMAND", None)  # the referee's default: python -m trainer.train
    result = run_process([sys.executable, "-m", "prepare.referee"], cwd=root, env=env, timeout=24 * 3600, stream=True)
    return 0 if result.ok else (result.returncode or 1)
