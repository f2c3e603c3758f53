"""Compare mode on the stand-in task: three scripted agents race in three lanes on six fake GPUs.

A `--compare` run (one lane per agent, two workers each, the same measured baseline) with the
stand-in task of tests/standin.py, then `autoresearch report --by agent` over it: the table on
stdout and the best-over-time figure. The agents are scripted (tests/standin_agents.py): GoodAgent
always improves, HillClimber searches at random, WeakAgent never helps; so the numbers show the
report working, not how real models compare.

    python benchmarks/bench_compare_standin.py [--experiments 36] [--sleep 0.5] [--plot compare.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swarm.agents import parse_agent_spec  # noqa: E402
from swarm.commands.report import plot_report  # noqa: E402
from swarm.config import SwarmConfig  # noqa: E402
from swarm.coordinator import Coordinator  # noqa: E402
from swarm.journal import read_events  # noqa: E402
from swarm.report import build_report, format_table  # noqa: E402
from tests.standin import make_standin_repo, standin_task  # noqa: E402

AGENTS = ("GoodAgent", "HillClimber", "WeakAgent")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=36)
    ap.add_argument("--sleep", type=float, default=0.5, help="seconds one stand-in 'training' takes")
    ap.add_argument("--target", type=float, default=1.5)
    ap.add_argument("--plot", default="compare.png")
    args = ap.parse_args()
    import ray

    ray.init(address="local", num_cpus=6, num_gpus=6, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_standin_repo(Path(tmp) / "task", sleep=args.sleep)
        cfg = SwarmConfig(repo=repo, tag="compare", task=standin_task(timeout=30),
                          agents=tuple(parse_agent_spec(f"py:tests.standin_agents:{a}") for a in AGENTS),
                          workers=6, compare=True, max_experiments=args.experiments, progress=False)
        summary = Coordinator(cfg).run()
        report = build_report(read_events(cfg.journal_path), by="agent", target=args.target)
        print(f"{summary.experiments} experiments in {summary.seconds:.0f} s")
        print(format_table(report))
        plot_report(report, Path(args.plot))
        print(f"plot: {args.plot}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
