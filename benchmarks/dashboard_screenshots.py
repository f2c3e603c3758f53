"""Screenshots of every view of the swarm page, for the README: one PNG per view in OUT_DIR.

Without --run-dir it first makes a run to show: the stand-in task of tests/standin.py on a local Ray
cluster with fake GPUs, four workers with three agents (the built-in offline agent, a random hill
climber and an agent that always improves; the latter two are scripted stand-ins from
tests/standin_agents.py with a small made-up cost, so that the Cost view has a curve). With
--run-dir it shows that run (`.swarm/<tag>/`, or a copy of it) instead. Then it serves the page
(swarm.dashboard) and drives headless Chromium (tests/headless_chromium.py) over each view:
progress.png, gpus.png, experiments.png (with the first kept proposal's diff and log open),
best.png, agents.png, cost.png.

    python benchmarks/dashboard_screenshots.py OUT_DIR [--run-dir DIR] [--experiments 40] [--sleep 0.5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.headless_chromium import Chromium, find_chromium  # noqa: E402
from swarm.dashboard.server import DashboardServer  # noqa: E402

VIEWS = ("progress", "gpus", "experiments", "best", "agents", "cost")
AGENTS = ("builtin", "py:tests.standin_agents:HillClimber", "py:tests.standin_agents:GoodAgent")


def make_run(root: Path, experiments: int, sleep: float, workers: int) -> Path:
    """A finished stand-in run under `root`; its run directory."""
    import ray

    from swarm.agents import parse_agent_spec
    from swarm.config import SwarmConfig
    from swarm.coordinator import Coordinator
    from tests.standin import make_standin_repo, standin_task

    ray.init(address="local", num_cpus=workers, num_gpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        repo = make_standin_repo(root / "task", sleep=sleep)
        cfg = SwarmConfig(repo=repo, tag="demo", task=standin_task(timeout=30),
                          agents=tuple(parse_agent_spec(a) for a in AGENTS), workers=workers,
                          max_experiments=experiments, max_cost=0.1, baseline_runs=workers, progress=False)
        summary = Coordinator(cfg).run()
        print(f"run: {summary.experiments} experiments in {summary.seconds:.0f} s ({summary.reason})")
        return cfg.run_dir
    finally:
        ray.shutdown()


def screenshots(run_dir: Path, out: Path, width: int = 1400, height: int = 900) -> list[Path]:
    shots = []
    with DashboardServer(run_dir, port=0) as server, Chromium(width=width, height=height) as browser:
        browser.open(server.url + "?poll=1000#progress")
        browser.wait_for("Number(document.body.dataset.updates) >= 1")
        for view in VIEWS:
            browser.evaluate(f"location.hash = '#{view}'")
            if view == "experiments":
                browser.evaluate("(() => { const rows = [...document.querySelectorAll('#exp-table tbody tr')];"
                                 " const kept = rows.find(r => r.querySelector('.status.keep') &&"
                                 " r.cells[2].textContent === 'proposal') || rows[0]; if (kept) kept.click(); })()")
                browser.wait_for("document.getElementById('detail').hidden ||"
                                 " !document.getElementById('detail-diff').textContent.startsWith('loading')")
            else:
                figure = {"progress": "progress", "gpus": "timeline", "best": "lineage", "agents": "agents",
                          "cost": "cost"}[view]
                browser.wait_for(f"document.querySelector('#fig-{figure} .main-svg') !== null")
            time.sleep(0.8)  # plotly's transitions
            shots.append(browser.screenshot(out / f"{view}.png"))
        if browser.exceptions:
            print("page errors: " + "; ".join(browser.exceptions), file=sys.stderr)
    return shots


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="directory for the PNGs")
    ap.add_argument("--run-dir", type=Path, help="show this run directory instead of making a stand-in run")
    ap.add_argument("--experiments", type=int, default=40)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--sleep", type=float, default=0.5, help="seconds one stand-in 'training' takes")
    args = ap.parse_args()
    if find_chromium() is None:
        print("no chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or make_run(Path(tmp), args.experiments, args.sleep, args.workers)
        for path in screenshots(run_dir, args.out):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
