"""Swarm scaling: experiments/hour with N = 1, 2, 4, 8 workers on fake GPUs.

Each experiment is the stand-in task (tests/standin.py) sleeping a fixed D seconds, so the
numbers measure the swarm itself, not training: throughput, scaling efficiency
rate(N) / (N x rate(1)), coordinator overhead per experiment (journal + decision + merge +
exports + broadcast + next assignment, timed inside the coordinator; median and p95) and each
worker's duty cycle (share of the measured span spent inside the task command).

    python benchmarks/bench_swarm_scaling.py [--duration 3] [--rounds 4] [--workers 1,2,4,8]

Targets: efficiency >= 0.95 at N=8, overhead < 100 ms median. A sleeping stand-in makes N=8
meaningful on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swarm.agents import parse_agent_spec  # noqa: E402
from swarm.config import SwarmConfig  # noqa: E402
from swarm.coordinator import Coordinator  # noqa: E402
from swarm.journal import read_events  # noqa: E402
from swarm.state import replay  # noqa: E402
from tests.standin import make_standin_repo, standin_task  # noqa: E402


def measure(n: int, duration: float, rounds: int, workdir: Path) -> dict:
    repo = make_standin_repo(workdir / f"n{n}", sleep=duration)
    cfg = SwarmConfig(
        repo=repo, tag=f"bench{n}", task=standin_task(timeout=duration * 4 + 30),
        agents=(parse_agent_spec("py:tests.standin_agents:HillClimber"),),
        workers=n, max_experiments=n * (rounds + 1), progress=False,
    )
    summary = Coordinator(cfg).run()
    events = read_events(cfg.journal_path)
    state = replay(events)
    first = min(e["t"] for e in events if e["event"] == "experiment_started")
    last = max(e["t"] for e in events if e["event"] == "experiment_finished")
    span = last - first
    records = state.finished_records()
    per_worker = {}
    for r in records:
        per_worker[r.worker] = per_worker.get(r.worker, 0.0) + r.task_seconds
    overhead = sorted(summary.overhead_s)
    return {
        "workers": n,
        "experiments": len(records),
        "span_s": round(span, 2),
        "per_hour": len(records) / span * 3600,
        "overhead_ms_median": statistics.median(overhead) * 1000,
        "overhead_ms_p95": overhead[min(len(overhead) - 1, int(0.95 * len(overhead)))] * 1000,
        "duty_cycle": {w: round(t / span, 3) for w, t in sorted(per_worker.items())},
        "statuses": dict(summary.counts),
    }


def machine_ceiling(n: int, duration: float, rounds: int, workdir: Path) -> float:
    """Experiments/hour of n threads running the stand-in back to back with no swarm at all.

    This is what the machine itself allows (process start-up under CPU contention): on a
    loaded 2-core box it, not the swarm, is what bends the curve at N=8.
    """
    import os
    import threading
    import time

    from swarm.proc import run_process

    repo = make_standin_repo(workdir / f"ceiling{n}", sleep=duration)
    task = standin_task()

    def loop():
        for _ in range(rounds + 1):
            run_process(task.argv(), cwd=repo, env=dict(os.environ), timeout=60)

    threads = [threading.Thread(target=loop) for _ in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n * (rounds + 1) / (time.monotonic() - t0) * 3600


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds each stand-in experiment sleeps")
    ap.add_argument("--rounds", type=int, default=4, help="experiments per worker after the baseline")
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]

    import ray

    ray.init(address="local", num_cpus=max(counts) * 2, num_gpus=max(counts), include_dashboard=False, log_to_driver=False)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-swarm-") as tmp:
        measure(1, 0.1, 1, Path(tmp) / "warmup")  # one-time costs (imports, first Ray round trips)
        for n in counts:
            results.append(measure(n, args.duration, args.rounds, Path(tmp)))
            results[-1]["ceiling_per_hour"] = machine_ceiling(n, args.duration, args.rounds, Path(tmp))
            print(f"N={n}: {results[-1]['experiments']} experiments in {results[-1]['span_s']} s", flush=True)
    ray.shutdown()
    base = next((r["per_hour"] for r in results if r["workers"] == 1), None)
    print(f"\nstand-in task of {args.duration:.1f} s, {args.rounds} rounds after the baseline wave")
    ceil1 = next((r["ceiling_per_hour"] for r in results if r["workers"] == 1), None)
    print(f"{'N':>3} {'exp/hour':>9} {'efficiency':>10} {'no-swarm ceiling':>16} {'overhead ms (median / p95)':>27}"
          "  duty cycle per worker")
    for r in results:
        r["efficiency"] = r["per_hour"] / (r["workers"] * base) if base else None
        r["ceiling_efficiency"] = r["ceiling_per_hour"] / (r["workers"] * ceil1) if ceil1 else None
        eff = f"{r['efficiency']:.3f}" if base else "-"
        ceil = f"{r['ceiling_efficiency']:.3f}" if ceil1 else "-"
        duty = " ".join(f"{v:.2f}" for v in r["duty_cycle"].values())
        print(f"{r['workers']:>3} {r['per_hour']:>9.0f} {eff:>10} {ceil:>16} {r['overhead_ms_median']:>14.1f} / "
              f"{r['overhead_ms_p95']:<10.1f}  {duty}")
    print("efficiency = rate(N) / (N x rate(1)); no-swarm ceiling = the same ratio for N bare loops of the task")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
