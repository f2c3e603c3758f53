"""`autoresearch report`: compare the agents (or workers, or lanes) of a run, from its journal.

Prints the table of `swarm.report` (experiments, keep / crash / invalid rates, best metric and
gain over the baseline, gain per GPU-hour and per dollar, tokens, cost, time to a --target), and
optionally writes it as CSV (--csv FILE), prints it as JSON (--json), and plots each group's best
metric over time (--plot FILE.png, matplotlib's Agg backend, step lines). Not covered: the
numbers themselves (swarm.report).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="compare agents, workers or lanes of a run: keep rate, best, gain per GPU-hour and per dollar",
        description="Group a run's experiments by agent (default), worker or lane and compare them: experiments, "
        "keep / crash / invalid rates, best metric and gain over the baseline, gain per GPU-hour (GPU time = "
        "time inside the task command) and per dollar, tokens, cost, and with --target the time from the run's "
        "start until the group's best reached it. Baselines and interrupted experiments are not counted.",
    )
    p.add_argument("--repo", help="task repository (default: the git checkout containing the current directory)")
    p.add_argument("--tag", help="run to report (default: the most recent)")
    p.add_argument("--by", choices=["agent", "worker", "lane"], default="agent", help="how to group (default: agent)")
    p.add_argument("--target", type=float, metavar="X", help="also show when each group's best first reached X")
    p.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--plot", metavar="FILE.png", help="plot each group's best metric over time")
    p.set_defaults(func=run)


def load_report(repo_arg: str | None, tag: str | None, by: str = "agent", target: float | None = None):
    from swarm import config as C
    from swarm.journal import read_events
    from swarm.project import find_repo_root
    from swarm.report import build_report

    repo = find_repo_root(repo_arg)
    tag, path = C.existing_journal(repo, tag)
    return build_report(read_events(path), by=by, target=target)


def run(args: argparse.Namespace) -> int:
    from swarm.report import format_table, to_csv, to_json

    report = load_report(args.repo, args.tag, args.by, args.target)
    print(to_json(report) if args.json else format_table(report))
    if args.csv:
        Path(args.csv).write_text(to_csv(report))
    if args.plot:
        plot_report(report, Path(args.plot))
        if not args.json:
            print(f"plot: {args.plot}")
    return 0


def plot_report(report, path: Path) -> Path:
    """Best metric over time per group (since the run's start, in s / min / h by its length), as step lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    end = max((t for r in report.rows for t, _ in r.curve), default=0.0)
    unit, scale = ("seconds", 1.0) if end < 120 else ("minutes", 60.0) if end < 7200 else ("hours", 3600.0)
    for row in report.rows:
        if not row.curve:
            continue
        xs = [t / scale for t, _ in row.curve] + [end / scale]
        ys = [m for _, m in row.curve] + [row.curve[-1][1]]
        ax.step(xs, ys, where="post", label=f"{row.group} ({row.experiments} exps)")
    if report.baseline is not None:
        ax.axhline(report.baseline, color="grey", linestyle=":", linewidth=1, label="baseline")
    if report.target is not None:
        ax.axhline(report.target, color="black", linestyle="--", linewidth=1, label=f"target {report.target:g}")
    ax.set_xlabel(f"{unit} since the run started")
    ax.set_ylabel(f"best {report.metric} ({'lower' if report.direction == 'min' else 'higher'} is better)")
    ax.set_title(f"run {report.tag}: best {report.metric} by {report.by}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no experiments yet", transform=ax.transAxes, ha="center", va="center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
