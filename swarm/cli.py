"""The `autoresearch` console script: one parser, one subcommand per module.

Errors of the project (`SwarmError`) become one line on stderr and exit status 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from swarm.errors import SwarmError

# (module, ...) in the order `--help` lists them; each module defines register(subparsers).
COMMAND_MODULES = (
    "prepare.cli",
    "swarm.commands.train",
    "swarm.commands.run",
    "swarm.commands.status",
    "swarm.commands.report",
    "swarm.commands.dashboard",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoresearch",
        description="A swarm of AI research agents, one per GPU, each editing and training a small "
        "GPT and sharing one best branch.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SwarmError as exc:
        print(f"autoresearch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"autoresearch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
