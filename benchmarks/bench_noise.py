"""Noise: does the swarm promote real gains and only those, on a landscape whose truth is known?

The task is a simulated landscape (benchmarks/landscape.py): four knobs with real gains (2.5-6
sigma each, 2-3 sigma a step of the built-in agent, reached in one or two steps), eight knobs whose
every change costs 0.2-0.5 sigma, and Gaussian noise of sigma per run. Each configuration (N
workers x gate on/off) runs the real swarm (Coordinator, Ray with fake GPUs, the built-in agent)
for the same number of experiments, `--seeds` times; from each run's journal and git it computes:

  false promotions   best_advanced events (not the first-wave baseline) whose commit is not truly
                     better than the best it replaced
  gain reached       (true(base) - true(final best)) / (true(base) - optimum)
  best - truth       the final best's reported metric (the mean of all its measurements) minus its
                     true metric, in sigmas (negative: the swarm believes its best is better than it is)
  duplicates         proposals whose (parent, resulting train.py) repeats an earlier experiment's,
                     run again or caught (status duplicate), as a share of all experiments
  confirm share      task seconds spent on confirmation runs / all task seconds

    python benchmarks/bench_noise.py [--workers 1,8] [--experiments 160] [--sigma 0.001]
                                     [--seeds 4] [--sleep 0.1] [--gate both] [--confidence C]
                                     [--max-runs K] [--json FILE] [--workdir DIR]

Targets (gate on, N = 8): at most 5% false promotions, at least 90% of the true gain, the reported
best within 0.5 sigma of its truth (the mean over runs: the winner's curse is a bias; one run's
mean of k measurements is off by sigma / sqrt(k) by chance alone), fewer than 2% duplicates.
The defaults take about 7 minutes on 2 cores (a 160-experiment run: ~40 s at N = 1, ~12 s at
N = 8, where about 7.7 experiments are in flight on average). `--workdir DIR` keeps every run's
repository and journal for a closer look (`autoresearch status`, the journal).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.landscape import landscape_task, make_landscape_repo, optimum, true_metric  # noqa: E402
from swarm.agents import parse_agent_spec  # noqa: E402
from swarm.config import SwarmConfig  # noqa: E402
from swarm.coordinator import Coordinator  # noqa: E402
from swarm.journal import read_events  # noqa: E402
from swarm.state import replay  # noqa: E402

MAIN = "main"
TARGETS = {"false_pct": 5.0, "gain_share": 0.90, "best_minus_true_sigma": 0.5, "duplicate_pct": 2.0}


class Truth:
    """True metric of a commit's train.py, cached (one `git show` per commit)."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.texts: dict[str, str] = {}

    def text(self, commit: str) -> str:
        if commit not in self.texts:
            self.texts[commit] = subprocess.run(
                ["git", "show", f"{commit}:train.py"], cwd=self.repo, check=True, capture_output=True, text=True
            ).stdout
        return self.texts[commit]

    def __call__(self, commit: str) -> float:
        return true_metric(self.text(commit))


def analyse(repo: Path, tag: str, sigma: float) -> dict:
    """The benchmark's numbers for one finished run, from its journal and git."""
    events = read_events(repo / ".swarm" / tag / "journal.jsonl")
    state = replay(events)
    truth = Truth(repo)

    # promotions of the shared best branch, and which of them were not truly better
    bests = [e for e in events if e["event"] == "best_advanced" and e.get("lane", MAIN) == MAIN]
    promotions, false, prev = 0, 0, None
    false_ids = []
    for e in bests:
        if e.get("exp_id") is not None:
            promotions += 1
            before = e.get("previous_commit") or prev
            if before and truth(e["commit"]) >= truth(before) - 1e-12:
                false += 1
                false_ids.append(e["exp_id"])
        prev = e["commit"]

    # the final best: reported vs true
    best = state.lane_best(MAIN) if hasattr(state, "lane_best") else state.best
    base_true = truth(state.base_commit)
    gain_total = base_true - optimum()
    promoted_metric, best_runs = float("nan"), 0
    if best is not None:
        final_true = truth(best.commit)
        # what the swarm reports for its best: the mean of all the commit's measurements (the gate
        # measures a fresh best again); without per-commit samples, the metric it was promoted with
        promoted_metric = reported = float(best.metric)
        sample = state.sample(best.commit) if hasattr(state, "sample") else None
        if sample is not None:
            reported, best_runs = float(sample.mean), int(sample.n)
    else:  # no best at all (the run failed before its first wave was measured)
        final_true, reported = base_true, float("nan")

    # duplicates: a proposal caught as one (status duplicate), or one that ran although an
    # earlier-started experiment that ran too had the same (parent, train.py)
    started = [e["assignment"] for e in events if e["event"] == "experiment_started"]
    seen: set[tuple[str, str]] = set()
    dup_run, dup_caught = 0, 0
    for a in started:
        exp_id = int(a["exp_id"])
        r = state.records.get(exp_id) or state.verdicts.get(exp_id)
        if r is None:
            continue
        key = (a["parent"], truth.text(r.commit)) if r.commit else None
        if a["kind"] == "proposal":
            if r.status.value == "duplicate":
                dup_caught += 1
            elif key is not None and key in seen:
                dup_run += 1
        if key is not None and r.status.value != "duplicate":  # a caught one never ran: it repeats nothing
            seen.add(key)

    # how many experiments were in flight on average (started -> finished, over the run's span)
    t_start = {int(e["assignment"]["exp_id"]): e["t"] for e in events if e["event"] == "experiment_started"}
    t_end = {int(e["record"]["exp_id"]): e["t"] for e in events if e["event"] == "experiment_finished"}
    spans = [(t_start[i], t_end[i]) for i in t_end if i in t_start]
    width = (sum(b - a for a, b in spans) / (max(b for _, b in spans) - min(a for a, _ in spans))) if spans else 0.0

    records = list(state.records.values())
    measured = list(state.verdicts.values())  # every finished experiment (a pending one too)
    task_s = sum(r.task_seconds for r in measured)
    confirm_s = sum(r.task_seconds for r in measured if r.kind.value == "confirm")
    return {
        "experiments": len(records),
        "promotions": promotions,
        "false_promotions": false,
        "false_exp_ids": false_ids,
        "gain_share": (base_true - final_true) / gain_total,
        "true_gain_sigma": (base_true - final_true) / sigma,
        "best_minus_true_sigma": (reported - final_true) / sigma,
        "best_reported": reported,
        "best_promoted_metric": promoted_metric,
        "best_runs": best_runs,
        "best_minus_true_at_promotion_sigma": (promoted_metric - final_true) / sigma,
        "best_true": final_true,
        "duplicates_run": dup_run,
        "duplicates_caught": dup_caught,
        "confirm_runs": sum(1 for r in measured if r.kind.value == "confirm"),
        "confirm_seconds": confirm_s,
        "task_seconds": task_s,
        "in_flight": width,
        "statuses": dict(state.counts()),
    }


def run_one(workers: int, gate: bool, rep: int, args, workdir: Path) -> dict:
    name = f"n{workers}-{'gate' if gate else 'nogate'}-s{rep}"
    repo = make_landscape_repo(workdir / name)
    task = landscape_task(sigma=args.sigma, sleep=args.sleep, salt=name, timeout=args.sleep * 4 + 60)
    cfg = SwarmConfig(
        repo=repo, tag=name, task=task, agents=(parse_agent_spec("builtin"),), workers=workers,
        max_experiments=args.experiments, seed=rep, progress=False,
        gate=gate, confidence=args.confidence, max_runs=args.max_runs,
    )
    t0 = time.monotonic()
    try:
        summary = Coordinator(cfg).run()
        reason = summary.reason
    except Exception as exc:  # report and go on: one broken run should not hide the others
        traceback.print_exc()
        reason = f"error: {exc}"
    wall = time.monotonic() - t0
    out = {"workers": workers, "gate": gate, "seed": rep, "reason": reason, "wall_s": wall}
    if reason.startswith("error"):
        out["error"] = reason
    try:
        out.update(analyse(repo, name, args.sigma))
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        out.setdefault("error", f"analysis failed: {exc}")
    return out


def aggregate(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"runs": len(runs), "ok": 0}
    promotions = sum(r["promotions"] for r in ok)
    false = sum(r["false_promotions"] for r in ok)
    experiments = sum(r["experiments"] for r in ok)
    dups = sum(r["duplicates_run"] + r["duplicates_caught"] for r in ok)
    task_s = sum(r["task_seconds"] for r in ok)
    bias = [r["best_minus_true_sigma"] for r in ok]
    return {
        "runs": len(runs),
        "ok": len(ok),
        "promotions": promotions,
        "false_promotions": false,
        "false_pct": 100.0 * false / promotions if promotions else 0.0,
        "gain_share": statistics.mean(r["gain_share"] for r in ok),
        "gain_share_min": min(r["gain_share"] for r in ok),
        "best_minus_true_sigma": statistics.mean(bias),
        "best_minus_true_abs_max": max(abs(b) for b in bias),
        "duplicates_run": sum(r["duplicates_run"] for r in ok),
        "duplicates_caught": sum(r["duplicates_caught"] for r in ok),
        "duplicate_pct": 100.0 * dups / experiments if experiments else 0.0,
        "confirm_share": sum(r["confirm_seconds"] for r in ok) / task_s if task_s else 0.0,
        "experiments": experiments / len(ok),
        "wall_s": statistics.mean(r["wall_s"] for r in ok),
        "in_flight": statistics.mean(r["in_flight"] for r in ok),
    }


def targets_met(row: dict) -> dict[str, bool]:
    return {
        "false promotions <= 5%": row["false_pct"] <= TARGETS["false_pct"],
        "gain reached >= 90%": row["gain_share"] >= TARGETS["gain_share"],
        # the winner's curse is a systematic bias: the mean over runs (one run's mean of k
        # measurements is off by sigma / sqrt(k) by chance alone)
        "|best - truth| <= 0.5 sigma": abs(row["best_minus_true_sigma"]) <= TARGETS["best_minus_true_sigma"],
        "duplicates < 2%": row["duplicate_pct"] < TARGETS["duplicate_pct"],
    }


def print_table(rows: list[dict], args) -> None:
    print(f"\nlandscape: sigma {args.sigma}, {args.experiments} experiments per run, task sleep {args.sleep} s, "
          f"{args.seeds} run(s) per configuration (pooled / averaged)")
    head = (f"{'N':>2} {'gate':>4} {'runs':>4} {'exp':>5} {'promo':>5} {'false (%)':>11} {'gain reached':>17} "
            f"{'best-truth sigma':>17} {'dups run+caught (%)':>20} {'confirm':>7} {'wall s':>7} {'width':>5}")
    print(head)
    print("-" * len(head))
    for r in rows:
        a = r["agg"]
        if not a.get("ok"):
            print(f"{r['workers']:>2} {'on' if r['gate'] else 'off':>4} {a['runs']:>4}  (every run failed)")
            continue
        pct = f"{a['false_pct']:.0f}%" if a["promotions"] else "-"
        false = f"{a['false_promotions']}/{a['promotions']} ({pct})"
        gain = f"{100 * a['gain_share']:.0f}% (min {100 * a['gain_share_min']:.0f}%)"
        bias = f"{a['best_minus_true_sigma']:+.2f} (max|.| {a['best_minus_true_abs_max']:.2f})"
        dups = f"{a['duplicates_run']}+{a['duplicates_caught']} ({a['duplicate_pct']:.1f}%)"
        print(f"{r['workers']:>2} {'on' if r['gate'] else 'off':>4} {a['ok']:>4} {a['experiments']:>5.0f} "
              f"{a['promotions'] / a['ok']:>5.1f} {false:>11} {gain:>17} {bias:>17} {dups:>20} "
              f"{100 * a['confirm_share']:>6.1f}% {a['wall_s']:>7.1f} {a['in_flight']:>5.1f}")
    print("false: promotions not truly better than the best they replaced; gain reached: share of the true "
          "achievable gain\n(mean, and the worst run); best-truth: reported minus true metric of the final best "
          "in sigmas (mean, and the worst |.|);\ndups: proposals repeating an earlier (parent, train.py), run "
          "again + caught, % of all experiments; confirm: share of task time on confirmation runs;\nwidth: experiments "
          "in flight on average")
    target = next((r for r in rows if r["gate"] and r["workers"] == 8 and r["agg"].get("ok")), None)
    if target:
        met = targets_met(target["agg"])
        print("targets, gate on, N = 8: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in met.items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,8", help="comma-separated worker counts")
    ap.add_argument("--experiments", type=int, default=160, help="experiments per run (every configuration)")
    ap.add_argument("--sigma", type=float, default=0.001, help="noise sigma of one run")
    ap.add_argument("--seeds", type=int, default=4, help="runs per configuration")
    ap.add_argument("--sleep", type=float, default=0.1, help="seconds one simulated training run takes")
    ap.add_argument("--gate", choices=("both", "on", "off"), default="both")
    ap.add_argument("--confidence", type=float, default=SwarmConfig.confidence,
                    help="the gate's --confidence (default: the swarm's default)")
    ap.add_argument("--max-runs", type=int, default=SwarmConfig.max_runs,
                    help="the gate's --max-runs (default: the swarm's default)")
    ap.add_argument("--json", help="also write the numbers (per run and per configuration) here")
    ap.add_argument("--workdir", help="keep the task repositories (and their runs' journals) here instead of a "
                                      "temporary directory")
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    gates = {"both": (False, True), "on": (True,), "off": (False,)}[args.gate]

    import ray

    ray.init(address="local", num_cpus=2 * max(counts), num_gpus=max(counts), include_dashboard=False, log_to_driver=False)
    rows = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-noise-") as tmp:
        if args.workdir:
            tmp = args.workdir
            Path(tmp).mkdir(parents=True, exist_ok=True)
        for n in counts:
            for gate in gates:
                runs = []
                for rep in range(args.seeds):
                    run = run_one(n, gate, rep, args, Path(tmp))
                    runs.append(run)
                    if "error" in run:
                        print(f"N={n} gate={'on' if gate else 'off'} seed {rep}: {run['error']}", flush=True)
                    else:
                        print(f"N={n} gate={'on' if gate else 'off'} seed {rep}: {run['experiments']} experiments, "
                              f"{run['promotions']} promotions ({run['false_promotions']} false), gain "
                              f"{100 * run['gain_share']:.0f}%, best-truth {run['best_minus_true_sigma']:+.2f} sigma, "
                              f"{run['wall_s']:.0f} s ({run['reason']})", flush=True)
                rows.append({"workers": n, "gate": gate, "runs": runs, "agg": aggregate(runs)})
    ray.shutdown()
    print_table(rows, args)
    print(f"total {time.monotonic() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
