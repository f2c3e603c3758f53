"""`autoresearch run`: start (or resume) a swarm run and print one line per finished experiment.

Builds the frozen `SwarmConfig` from the flags (and, on --resume, from the run's journal), checks
it against the repository before anything expensive (swarm.preflight), runs the `Coordinator`
until --max-experiments, --hours or Ctrl-C, and prints a final summary. Ctrl-C (or SIGTERM) stops
the run cleanly; pressing it again while that stop is under way changes nothing (no traceback).
With --dashboard the swarm page (swarm.dashboard) is served beside the run, and its URL printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


FORCE_AFTER_S = 2.0  # a coordinator still running this long after Ctrl-C is blocked: a second one breaks in


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the research swarm: one agent per GPU sharing one best branch",
        description="Start a local Ray cluster (or join one with --address) and run the research loop: every "
        "worker first measures the unmodified baseline, then repeatedly asks its agent for an edit of the "
        "mutable file, trains, and the coordinator keeps real improvements on swarm/<tag>/best. Stops at "
        "--max-experiments, --hours or Ctrl-C (running experiments are recorded as interrupted). The run "
        "lives in .swarm/<tag>/ of the repository: journal.jsonl, results.tsv, results.parquet, logs/.",
    )
    p.add_argument("--repo", help="task repository (default: the git checkout containing the current directory)")
    p.add_argument("--tag", help="run name; branches are swarm/<tag>/... (default: today's date, e.g. nov21; "
                   "with --resume: the most recent run)")
    p.add_argument("--resume", action="store_true", help="continue a stopped or crashed run (same best, same results)")
    p.add_argument("--workers", type=int, metavar="N", help="number of workers (default: one per GPU; on a CPU-only cluster "
                   "min(cores, 4))")
    p.add_argument("--agents", metavar="SPECS", help="comma-separated agent specs cycled over workers: builtin, a litellm model "
                   "such as openai/gpt-5, cmd:<coding CLI>, py:module:Class (default: builtin)")
    p.add_argument("--task", metavar="FILE", help="task TOML file ([task] table); default: the GPT trainer")
    p.add_argument("--profile", choices=["gpu", "cpu"], help="GPT task profile (default: gpu with CUDA, else cpu)")
    p.add_argument("--source", help="GPT task data source: climbmix, stdlib or local:PATH (default per profile)")
    p.add_argument("--max-experiments", type=int, metavar="N", help="stop after this many experiments in total, "
                   "across resumes (baselines, confirmations and failures count; experiments a stop interrupted do not)")
    p.add_argument("--hours", type=float, metavar="H", help="stop starting experiments after this many hours")
    p.add_argument("--min-delta", type=float, metavar="D", help="an extra floor: a promotion must also beat the best's "
                   "mean by more than D (default 0)")
    p.add_argument("--confidence", type=float, metavar="C", help="noise gate: promote a candidate only when it beats the "
                   "best with this confidence; candidates in the grey zone are measured again first (default 0.99; "
                   "higher spends more GPU time on confirmations)")
    p.add_argument("--gate", action=argparse.BooleanOptionalAction, default=None,
                   help="the noise gate (default: on); --no-gate keeps any single measured improvement at once, "
                   "like the classic loop, and runs no confirmations")
    p.add_argument("--max-runs", type=int, metavar="K", help="measurements of one candidate before the gate must decide "
                   "(default 4); a new best is re-measured until it has K + 2 runs; 1: decide everything on one run")
    p.add_argument("--baseline-runs", type=int, metavar="K", help="first-wave baseline runs, at least one per worker "
                   "(default 3: with one worker the baseline is still measured 3 times)")
    p.add_argument("--address", help="Ray cluster to join: auto (the one `ray start` or `ray up` started here) or HOST:6379; "
                   "default: start a local cluster of its own, with Ray's dashboard on 127.0.0.1:8265")
    p.add_argument("--seed", type=int, metavar="S", help="seed for the agents (default 0)")
    p.add_argument("--transport", choices=["auto", "worktree", "bundle"], help="how code reaches workers: git "
                   "worktrees on the coordinator's node, git bundles elsewhere (auto), or bundles always")
    p.add_argument("--sandbox", choices=["auto", "bwrap", "off"],
                   help="where agent-written code runs. bwrap: every task under bubblewrap, in its own PID and "
                   "network namespaces (no network, no view or signal of other processes), with an allow-listed "
                   "environment (no API keys), the file system read-only except its worktree and a private /tmp, "
                   "and the run's directory and your home directory hidden; without a working bwrap the run (or "
                   "a worker on such a node) does not start. auto (default): bwrap where it works, else off with "
                   "a warning. off: tasks run as you, with the allow-listed environment only. (cmd: agents have "
                   "their own option, sandbox: they keep their environment and network but, where bwrap works, "
                   "write only to their worktree and a private /tmp)")
    p.add_argument("--quiet", action="store_true", help="no per-experiment lines, only the final summary")
    p.add_argument("--max-cost", type=float, metavar="USD", help="stop handing out proposals once the agents' summed "
                   "cost (every experiment's model calls plus failed attempts) reaches this; running experiments finish")
    p.add_argument("--prefetch", action=argparse.BooleanOptionalAction, default=None,
                   help="LLM agents prepare each worker's next proposal while its experiment runs, rebased onto the "
                   "new best if that moved (default: on; never for cmd: agents, which edit the worktree)")
    p.add_argument("--compare", action=argparse.BooleanOptionalAction, default=None,
                   help="compare the --agents side by side: one lane per distinct agent, each with its own best "
                   "branch swarm/<tag>/<lane>/best, from the same measured baseline, on an equal share of the "
                   "workers (default: off, every worker shares one best)")
    p.add_argument("--config", metavar="FILE", help="TOML file with run defaults ([run]: any flag here, e.g. agents, "
                   "workers, compare) and per-agent options ([agents.\"openai/gpt-5\"]); flags override it")
    from swarm.dashboard import DEFAULT_HOST, DEFAULT_PORT

    p.add_argument("--dashboard", action="store_true", help="also serve the live swarm page of this run (as "
                   "`autoresearch dashboard` does) while it runs, and print its URL")
    p.add_argument("--dashboard-host", default=DEFAULT_HOST, metavar="HOST",
                   help=f"interface the page binds with --dashboard (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--dashboard-port", type=int, default=DEFAULT_PORT, metavar="PORT",
                   help=f"port of the page with --dashboard (default {DEFAULT_PORT}; 0: a free one)")
    from swarm.config_file import option_types

    p.set_defaults(func=run, run_options=option_types(p))


def build_config(args: argparse.Namespace):
    """The frozen SwarmConfig for these flags.

    Precedence: flags, then the config file (--config), then on --resume the run's settings from
    its journal: the latest resume's on top of the first start's (swarm.state.run_settings), so a
    limit raised in one resume stays raised in the next. --hours, --address and --quiet are the
    invocation's own; agent options that are secrets never reach the journal and come from the
    config file again.
    """
    from swarm import config as C
    from swarm.errors import ConfigError
    from swarm.journal import read_events
    from swarm.project import find_repo_root
    from swarm.state import run_settings
    from swarm.task import gpt_task, load_task

    run_file = None
    if getattr(args, "config", None):
        from swarm.config_file import fill_args, load_run_file

        run_file = load_run_file(args.config, getattr(args, "run_options", None) or {})
        args = argparse.Namespace(**vars(args))
        fill_args(args, run_file)
    repo = find_repo_root(args.repo)
    stored: dict = {}
    if args.resume:
        tag, path = C.existing_journal(repo, args.tag)
        events = read_events(path)
        if not any(e["event"] == "run_started" for e in events):
            raise ConfigError(f"run {tag!r} in {repo} never started (its journal has no run_started event)")
        stored = run_settings(events)  # the first start's settings with each resume's on top
    else:
        tag = args.tag if args.tag is not None else C.default_tag(repo)  # "" is refused, never the default

    def pick(name: str, default=None):
        value = getattr(args, name, None)
        return value if value is not None else stored.get(name, default)

    profile = pick("profile")
    if args.task:
        task, prepare_data = load_task(args.task), False
    elif stored.get("task"):
        task, prepare_data = C.task_from_dict(stored["task"]), bool(stored.get("prepare_data"))
    else:
        if not (repo / "trainer" / "train.py").is_file():
            raise ConfigError(f"{repo} has no trainer/train.py: run from an autoresearch-swarm checkout or pass --task")
        task, prepare_data = gpt_task(profile), True
        explicit = profile or os.environ.get("AUTORESEARCH_PROFILE")
        # joining a cluster (--address): the workers' nodes decide (the coordinator asks one of them,
        # and the task is rebuilt for that profile); on a cluster of its own this machine is that node
        profile = explicit or (None if args.address else task.env.get("AUTORESEARCH_PROFILE"))
    if args.agents:
        agents = _parse_agents(args.agents, run_file)
    elif stored.get("agents"):
        agents = tuple(C.agent_from_dict(a) for a in stored["agents"])
        if run_file is not None:  # e.g. secrets the journal left out
            agents = tuple(C.AgentSpec(a.kind, a.name, {**dict(a.options), **run_file.options_for(a.name)})
                           for a in agents)
    else:
        agents = C.parse_agents("builtin")
    return C.SwarmConfig(
        repo=Path(repo),
        tag=tag,
        task=task,
        agents=agents,
        workers=args.workers if args.workers is not None else stored.get("workers"),
        max_experiments=pick("max_experiments"),
        hours=args.hours,
        min_delta=float(pick("min_delta", 0.0)),
        confidence=float(pick("confidence", 0.95)),
        gate=bool(pick("gate", True)),
        max_runs=int(pick("max_runs", 4)),
        baseline_runs=int(pick("baseline_runs", 3)),
        address=args.address,
        profile=profile,
        source=pick("source"),
        resume=bool(args.resume),
        seed=int(pick("seed", 0)),
        transport=pick("transport", "auto"),
        prepare_data=prepare_data,
        progress=not args.quiet,
        compare=bool(pick("compare", False)),
        max_cost=pick("max_cost"),
        prefetch=bool(pick("prefetch", True)),
        sandbox=pick("sandbox", "auto"),
        agent_backoff=float(stored.get("agent_backoff", 5.0)),
        agent_backoff_max=float(stored.get("agent_backoff_max", 300.0)),
    )


def _parse_agents(value, run_file) -> tuple:
    """Agent specs from a comma-separated string or a list (config file), with the file's options."""
    from swarm.agents import parse_agent_spec

    texts = [value] if isinstance(value, str) else list(value)
    parts = [part for text in texts for part in (text.split(",") if isinstance(value, str) else [text]) if part.strip()]
    return tuple(parse_agent_spec(part, run_file.options_for(part) if run_file else None) for part in parts)


def run(args: argparse.Namespace) -> int:
    from swarm.preflight import preflight

    config = build_config(args)
    preflight(config)  # bad input is one line now, not after Ray and data preparation have started
    from swarm.sandbox import resolve

    _, warning = resolve(config.sandbox)  # --sandbox bwrap without a working bwrap here: one line, now
    if warning:
        print(f"autoresearch: warning: {warning}", file=sys.stderr, flush=True)
    dashboard = None
    if getattr(args, "dashboard", False):  # bound now: a port in use is one line before anything starts
        from swarm.dashboard.server import DashboardServer, is_loopback

        dashboard = DashboardServer(config.run_dir, host=args.dashboard_host, port=args.dashboard_port,
                                    repo=config.repo)
        print(f"autoresearch: dashboard at {dashboard.start()}", flush=True)
        if not is_loopback(args.dashboard_host):
            print(f"autoresearch: warning: the dashboard serves on {args.dashboard_host}: anyone who can reach "
                  "this port sees the run", file=sys.stderr, flush=True)
    try:
        return _run(config, args)
    finally:
        if dashboard is not None:
            dashboard.stop()


def _run(config, args: argparse.Namespace) -> int:
    """The run itself: Ctrl-C handling, data preparation, the coordinator, the summary."""
    import threading

    from swarm.coordinator import Coordinator

    stop = threading.Event()
    phase = {"coordinator": None, "done": False, "forced": False, "first": 0.0}

    def _stop(_signum, _frame):
        # First Ctrl-C / SIGTERM: stop between two results (never inside a journal write or a ref
        # update); running experiments are recorded as interrupted. A later one never tears that
        # stop (or Ray's shutdown after it) apart, which would print tracebacks and could leave
        # the journal without its stop: once the coordinator is stopping, or the run is over, it
        # is ignored (the process ends in a moment). Only a coordinator that has not acted on the
        # first one within FORCE_AFTER_S (blocked: Ray starting, workers setting up) is broken out
        # of, once; a quick double press is one stop.
        if phase["done"]:
            return
        if not stop.is_set():
            stop.set()
            phase["first"] = time.monotonic()
            print("autoresearch: stopping; running experiments are recorded as interrupted", file=sys.stderr,
                  flush=True)
            return
        coordinator = phase["coordinator"]
        if phase["forced"] or (coordinator is not None and coordinator.stopping):
            return
        if time.monotonic() - phase["first"] < FORCE_AFTER_S:
            return
        phase["forced"] = True
        raise KeyboardInterrupt

    def _install_handlers() -> None:
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)

    _install_handlers()
    verb = "resuming" if config.resume else "starting"
    print(f"autoresearch: {verb} run {config.tag!r} in {config.run_dir} (task {config.task.name}, "
          f"agents {', '.join(a.name for a in config.agents)})", flush=True)
    if config.prepare_data and config.profile is not None:
        # Prepare here first, with progress on the terminal; each worker still checks its own node
        # (idempotent and file-locked: a cheap check where this already ran). With the profile still
        # to be resolved on the cluster, only the workers' nodes prepare.
        import prepare

        prepare.ensure_prepared(source=config.source, profile=config.profile, progress=True)
    if stop.is_set():  # Ctrl-C while the data was prepared: nothing started yet
        print(f"autoresearch: run {config.tag!r} not started (interrupted)", file=sys.stderr)
        return 130
    coordinator = Coordinator(config, out=lambda line: print(line, flush=True), stop=stop, on_connected=_install_handlers)
    phase["coordinator"] = coordinator
    try:
        summary = coordinator.run()
    finally:
        phase["done"] = True  # what is left (the summary, Ray's shutdown at exit) is not interrupted
    print(format_summary(summary, config.task.metric))
    if summary.reason == "no_workers":
        return 1  # every worker retired: the run could not go on (the summary says why)
    return 130 if summary.reason == "interrupted" else 0


def format_summary(s, metric: str = "val_bpb") -> str:
    minutes, seconds = divmod(int(s.seconds), 60)
    lines = [f"run {s.tag} stopped ({s.reason}) after {s.experiments} experiments in {minutes}m{seconds:02d}s"]
    if getattr(s, "message", ""):
        lines.append(s.message)
    if s.best is not None:
        base = f"baseline {s.baseline:.6f}; " if s.baseline is not None else ""
        gain = f", {s.best.metric - s.baseline:+.6f} vs baseline" if s.baseline is not None else ""
        src = f"#{s.best.exp_id}" if s.best.exp_id is not None else "baseline"
        runs = f" over {s.best_runs} runs" if getattr(s, "best_runs", 0) else ""
        lines.append(f"{base}best {metric} {s.best.metric:.6f}{runs} at {s.best.commit[:7]} ({src}{gain})")
    sigma = getattr(s, "sigma", None)
    if sigma is not None:
        pending = f"; {s.pending} candidate(s) still pending a confirmation" if getattr(s, "pending", 0) else ""
        lines.append(f"noise sigma {sigma.describe()}; confirmations took {100 * s.confirm_share:.0f}% of GPU time{pending}")
    for lane, best in sorted(getattr(s, "lane_bests", {}).items()):  # compare runs: one best per lane
        src = f"#{best.exp_id}" if best.exp_id is not None else "baseline"
        gain = f" ({best.metric - s.baseline:+.6f})" if s.baseline is not None else ""
        lines.append(f"  lane {lane}: best {best.metric:.6f}{gain} at {best.commit[:7]} ({src}), "
                     f"branch swarm/{s.tag}/{lane}/best")
    lines.append("counts: " + (", ".join(f"{k} {v}" for k, v in sorted(s.counts.items())) or "none"))
    usage = getattr(s, "usage", None)
    if usage is not None and (usage.calls or getattr(s, "agent_errors", 0)):
        failed = f"; {s.agent_errors} failed attempt(s) (agent unavailable)" if s.agent_errors else ""
        lines.append(f"agents: ${usage.cost_usd:.4f}, {usage.calls} calls, {usage.tokens_in + usage.tokens_out} "
                     f"tokens{failed}")
    if s.overhead_s:
        ordered = sorted(s.overhead_s)
        lines.append(f"coordinator overhead per experiment: median {ordered[len(ordered) // 2] * 1000:.1f} ms")
    branch = f"swarm/{s.tag}/<lane>/best" if getattr(s, "lane_bests", None) else f"swarm/{s.tag}/best"
    lines.append(f"results: {s.run_dir / 'results.tsv'}; best branch: {branch}")
    return "\n".join(lines)
