"""`autoresearch status`: what a swarm run has found and what each worker is doing, from its journal.

Reads `.swarm/<tag>/journal.jsonl` (the most recent run by default) and prints the best metric
and commit, the baseline and noise, counts by status, experiments per hour and the experiments
started but not finished (the workers' current work, or interrupted ones if the run died); in a
compare run also each lane's best and gain over the shared baseline. The counts, the rate and the
recent results come from the run's table of experiments (swarm.table), as `report` and the dashboard
read it.
"""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="show a swarm run: best result, counts, what each worker is doing",
        description="Summarise a swarm run from its journal: best val_bpb and commit, counts by status, "
        "experiments per hour, and what each worker is running now.",
    )
    p.add_argument("--repo", help="task repository (default: the git checkout containing the current directory)")
    p.add_argument("--tag", help="run to show (default: the most recent)")
    p.add_argument("--recent", type=int, default=5, help="also list this many recent results (default 5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(status_text(args.repo, args.tag, args.recent))
    return 0


def status_text(repo_arg: str | None = None, tag: str | None = None, recent: int = 5, now: float | None = None) -> str:
    from swarm import config as C
    from swarm.journal import read_events
    from swarm.lanes import best_branch
    from swarm.project import find_repo_root
    from swarm.table import RunTable

    repo = find_repo_root(repo_arg)
    tag, path = C.existing_journal(repo, tag)
    table = RunTable.from_events(read_events(path))
    s = table.state
    now = now or time.time()
    metric = s.config.get("task", {}).get("metric", "val_bpb")
    state = f"stopped ({s.stop_reason})" if s.stopped else _liveness(path.parent, s.last_event_t, now)
    lines = [f"run {tag}: {state}; started {time.strftime('%Y-%m-%d %H:%M', time.localtime(s.started_at))}"]
    if s.best is not None:
        src = f"#{s.best.exp_id}" if s.best.exp_id is not None else "baseline"
        branch = best_branch(tag, s.best.lane)
        sample = s.sample(s.best.commit)
        runs = f", mean of {sample.n} runs" if sample is not None else ""
        lines.append(f"best {metric} {s.best.metric:.6f} at {s.best.commit[:7]} ({src}{runs}), branch {branch}")
        if s.baseline_metric is not None:
            lines.append(f"baseline {s.baseline_metric:.6f}, improvement {s.best.metric - s.baseline_metric:+.6f}")
    else:
        lines.append("best: not yet (first wave of baselines running)")
    noise = s.noise_model()
    lines.append(f"noise sigma {noise.describe()}; confirmations took {100 * s.confirm_share():.0f}% of GPU time")
    for commit in [c for lane in s.lanes for c in s.pending_commits(lane)]:
        ids = s.pending[commit]
        sample = s.sample(commit)
        lines.append(f"  pending {commit[:7]} (#{ids[0]} {s.records[ids[0]].description[:50]}): mean {sample.mean:.6f} "
                     f"over {sample.n} run(s), waiting for a confirmation")
    if s.compare:
        lines.extend(_lane_lines(s, tag))
    counts, done = table.counts(), len(table.experiments)
    lines.append(f"experiments {done}: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    end = now if not s.stopped else s.last_event_t
    hours = max(end - s.started_at, 1e-9) / 3600
    if done:
        lines.append(f"rate {done / hours:.1f} experiments/hour over {hours * 60:.1f} min")
    running = s.running()
    if running:
        label = "running" if not s.stopped else "unfinished"
        for a in running:
            lines.append(f"  {a.worker}: {label} #{a.exp_id} {a.kind.value} ({a.agent}) for {now - a.started_at:.0f} s")
    if s.queue:
        lines.append(f"queued combinations: {len(s.queue)}")
    for r in table.recent(recent).itertuples(index=False):
        m = f"{r.metric:.6f}" if r.metric == r.metric else "-"  # NaN: not measured
        lines.append(f"  #{r.exp_id:<4} {r.worker:<4} {r.status:<11} {m:>9}  {r.description[:70]}")
    return "\n".join(lines)


def _liveness(run_dir, last_event_t: float, now: float) -> str:
    """"running" only while the coordinator's heartbeat is fresh (swarm.runlock)."""
    from swarm.runlock import liveness

    alive, holder = liveness(run_dir, now)
    if alive == "running":
        return f"running (coordinator {holder.describe(now)})"
    seen = holder.heartbeat if holder is not None else last_event_t
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seen))
    return f"coordinator died (last seen {when}): --resume continues it"


def _lane_lines(s, tag: str) -> list[str]:
    """A compare run: each lane's best, gain over the shared baseline and experiment counts."""
    from swarm.lanes import best_branch

    lines = [f"lanes ({len(s.lanes)}, compared side by side from the same baseline):"]
    for lane in s.lanes:
        best = s.lane_best(lane)
        done = [r for r in s.records.values() if r.lane == lane and r.kind.value != "baseline"]
        keeps = sum(1 for r in done if r.status.value == "keep")
        agents = sorted({r.agent for r in done}) or ["-"]
        if best is None:
            lines.append(f"  {lane:<20} best -  ({', '.join(agents)})")
            continue
        gain = f"{best.metric - s.baseline_metric:+.6f}" if s.baseline_metric is not None else ""
        src = f"#{best.exp_id}" if best.exp_id is not None else "baseline"
        lines.append(f"  {lane:<20} best {best.metric:.6f} {gain} ({src}) {len(done)} experiments, {keeps} kept, "
                     f"agent {', '.join(agents)}, branch {best_branch(tag, lane)}")
    return lines
