"""`autoresearch dashboard`: serve the swarm page of a run, live from its journal, until Ctrl-C.

The run is `.swarm/<tag>/` of the task repository (the most recent run by default), or any run
directory given with --dir (a copy of `.swarm/<tag>/` on a laptop: everything but the diffs, which
need the task repository: name a clone of it with --repo). The page is read-only and binds
127.0.0.1 unless --host says otherwise.
Not covered: the page itself (swarm.dashboard).
"""

from __future__ import annotations

import argparse
import sys
import threading

from swarm.dashboard import DEFAULT_HOST, DEFAULT_PORT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboard",
        help="serve a live, read-only page of a run: progress, GPUs, experiments, best branch, agents, cost",
        description="Serve the swarm page of a run from its journal: the progress chart, a timeline of every "
        "worker, the experiments (each with its diff and log), the best branch's lineage, the agents' report and "
        "the cost. It works during a run, after it, and on a copy of .swarm/<tag>/ (--dir). It only reads. "
        "Binds 127.0.0.1 by default: on a cluster, forward the port (ssh -L 8050:127.0.0.1:8050 head).",
    )
    p.add_argument("--repo", help="task repository (default: the git checkout containing the current directory; "
                   "with --dir: a clone of it for the diffs, default the directory two levels above RUN_DIR)")
    p.add_argument("--tag", help="run to show (default: the most recent)")
    p.add_argument("--dir", metavar="RUN_DIR", help="a run directory (.swarm/<tag>/ or a copy of it) instead of "
                   "the repository's --tag")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST}: this machine "
                   "only; 0.0.0.0 serves every interface, without authentication)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: a free one)")
    p.set_defaults(func=run)


def run_dir_for(repo_arg: str | None, tag: str | None, directory: str | None):
    """(the run directory to serve, the repository of its diffs): --dir as given (with --repo's
    repository, else None: the one around the run directory), else .swarm/<tag>/ of the repository."""
    from pathlib import Path

    from swarm import config as C
    from swarm.errors import ConfigError
    from swarm.project import find_repo_root

    if directory:
        path = Path(directory)
        if not (path / "journal.jsonl").is_file():
            raise ConfigError(f"{path} has no journal.jsonl (pass a run directory: .swarm/<tag>/ or a copy of it)")
        return path, (find_repo_root(repo_arg) if repo_arg else None)
    repo = find_repo_root(repo_arg)
    _, journal = C.existing_journal(repo, tag)
    return journal.parent, repo


def run(args: argparse.Namespace) -> int:
    from swarm.dashboard.server import DashboardServer, is_loopback

    run_dir, repo = run_dir_for(args.repo, args.tag, args.dir)
    server = DashboardServer(run_dir, host=args.host, port=args.port, repo=repo)
    url = server.start()
    print(f"autoresearch dashboard: run {server.source.tag} at {url} (Ctrl-C stops)", flush=True)
    if not is_loopback(args.host):
        print(f"autoresearch: warning: serving on {args.host}: anyone who can reach this port sees the run",
              file=sys.stderr, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:  # the way to stop it: not an error
        pass
    finally:
        server.stop()
    return 0
