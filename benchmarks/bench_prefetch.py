"""Prefetch: how busy the workers' GPUs stay when the agent needs seconds per proposal.

Each worker's agent is a stand-in for an LLM (`tests.standin_agents:SlowAgent`: a hill climber
that "thinks" `--think` seconds per proposal) and each experiment is the stand-in task sleeping
`--duration` seconds (tests/standin.py). Without prefetch a worker thinks, then trains, then
thinks again; with prefetch its next proposal is prepared while the task runs (and rebased onto
the new best when that moved; asked again when it no longer applies). Printed per setting:
experiments/hour, the workers' duty cycle (share of wall time inside the task command, mean and
per worker), and how the proposals came about (prefetched as is / rebased / asked again).

    python benchmarks/bench_prefetch.py [--think 3] [--duration 4] [--rounds 5] [--workers 2]

Ideal duty cycle without prefetch: duration / (duration + think); with: ~1 once think < duration.
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
from swarm.records import Kind  # noqa: E402
from swarm.state import replay  # noqa: E402
from tests.standin import make_standin_repo, standin_task  # noqa: E402


def measure(n: int, think: float, duration: float, rounds: int, prefetch: bool, workdir: Path) -> dict:
    tag = f"{'pre' if prefetch else 'seq'}{n}"
    repo = make_standin_repo(workdir / tag, sleep=duration)
    cfg = SwarmConfig(
        repo=repo, tag=tag, task=standin_task(timeout=duration * 4 + 30),
        agents=(parse_agent_spec("py:tests.standin_agents:SlowAgent", {"delay": think}),),
        workers=n, max_experiments=n * (rounds + 1), progress=False, prefetch=prefetch,
    )
    Coordinator(cfg).run()
    events = read_events(cfg.journal_path)
    state = replay(events)
    first = min(e["t"] for e in events if e["event"] == "experiment_started")
    last = max(e["t"] for e in events if e["event"] == "experiment_finished")
    span = last - first
    records = state.finished_records()
    busy: dict[str, float] = {}
    for r in records:
        busy[r.worker] = busy.get(r.worker, 0.0) + r.task_seconds
    proposals = [r for r in records if r.kind == Kind.PROPOSAL]
    duty = {w: t / span for w, t in sorted(busy.items())}
    return {
        "workers": n,
        "prefetch": prefetch,
        "experiments": len(records),
        "span_s": round(span, 2),
        "per_hour": len(records) / span * 3600,
        "duty_mean": statistics.mean(duty.values()),
        "duty": {w: round(d, 3) for w, d in duty.items()},
        "as_is": sum(1 for r in proposals if r.prefetched and not r.proposed_on),
        "rebased": sum(1 for r in proposals if r.prefetched and r.proposed_on),
        "asked_again": sum(1 for r in proposals if r.usage.calls > 1),
        "proposals": len(proposals),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--think", type=float, default=3.0, help="seconds the stand-in agent takes per proposal")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds each stand-in experiment sleeps")
    ap.add_argument("--rounds", type=int, default=5, help="experiments per worker after the baseline")
    ap.add_argument("--workers", default="2", help="comma-separated worker counts")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]

    import ray

    ray.init(address="local", num_cpus=max(counts) * 2, num_gpus=max(counts), include_dashboard=False, log_to_driver=False)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-prefetch-") as tmp:
        measure(1, 0.0, 0.1, 1, False, Path(tmp) / "warmup")  # one-time costs (imports, first Ray round trips)
        for n in counts:
            for prefetch in (False, True):
                results.append(measure(n, args.think, args.duration, args.rounds, prefetch, Path(tmp)))
                r = results[-1]
                print(f"N={n} prefetch={'on' if prefetch else 'off'}: {r['experiments']} experiments in "
                      f"{r['span_s']} s", flush=True)
    ray.shutdown()
    print(f"\nagent {args.think:.1f} s per proposal, task {args.duration:.1f} s, {args.rounds} rounds after the baseline "
          f"wave; ideal duty cycle without prefetch {args.duration / (args.duration + args.think):.2f}")
    print(f"{'N':>3} {'prefetch':>8} {'exp/hour':>9} {'duty (mean)':>11}  {'as is / rebased / asked again':>29}"
          "  duty per worker")
    for r in results:
        how = f"{r['as_is']} / {r['rebased']} / {r['asked_again']} of {r['proposals']}"
        duty = " ".join(f"{v:.2f}" for v in r["duty"].values())
        print(f"{r['workers']:>3} {'on' if r['prefetch'] else 'off':>8} {r['per_hour']:>9.0f} {r['duty_mean']:>11.2f}  "
              f"{how:>29}  {duty}")
    for n in counts:
        off = next(r for r in results if r["workers"] == n and not r["prefetch"])
        on = next(r for r in results if r["workers"] == n and r["prefetch"])
        print(f"N={n}: prefetch gives x{on['per_hour'] / off['per_hour']:.2f} experiments/hour")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
