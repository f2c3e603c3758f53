"""The swarm page in a real headless Chromium, beside a real small run, as a person would use it.

`autoresearch run --dashboard` (the console command, in a subprocess) runs the stand-in task on this
module's Ray cluster with two workers: a scripted agent whose first description is HTML with
script, and the built-in offline agent. The page is opened while the run starts and is never
reloaded while the run goes on: it must fill in and grow as experiments finish. The server of
`run --dashboard` ends with the run; `autoresearch dashboard` then serves the finished run, whose
page must match results.tsv (table, progress chart, timeline) and show the HTML description as
text without running it.
Skipped, with the reason, where no chromium is installed (`apt-get install chromium`).
"""

from __future__ import annotations

import csv
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.headless_chromium import Chromium, find_chromium
from tests.standin import check_invariants, make_standin_repo

ray = pytest.importorskip("ray")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="no chromium on PATH (apt-get install chromium)"),
]

ROOT = Path(__file__).resolve().parents[1]
EVIL = '<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2</script> & <b>bold</b>'
SCRIPTED = "py:tests.standin_agents:ScriptedAgent"


@pytest.fixture(scope="module")
def cluster():
    # address="local": a cluster of its own, even where `ray start` left one for ray.init() to join
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _files(tmp_path: Path) -> tuple[Path, Path]:
    task = tmp_path / "standin.toml"
    task.write_text('[task]\nname = "standin"\nmutable_files = ["train.py"]\ncommand = ["{python}", "train.py"]\n'
                    'time_budget = 1.0\ntimeout = 20.0\n')
    config = tmp_path / "swarm.toml"
    config.write_text(
        f'[run]\nagents = ["{SCRIPTED}", "builtin"]\n\n[agents."{SCRIPTED}"]\n'
        f"steps = [{{X = 1.0, __desc__ = '{EVIL}'}}, {{X = 2.0}}, {{Y = -0.5}}, {{X = 3.0}}, {{CRASH = 1}}, "
        "{Y = -1.0}, {X = 2.5}]\n")
    return task, config


def _lines(proc: subprocess.Popen) -> queue.Queue:
    out: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in iter(proc.stdout.readline, ""):
            out.put(line)
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return out


def _url(lines: queue.Queue, seen: list[str]) -> str:
    """The URL of the first line that prints one ("... at http://127.0.0.1:PORT/ ...")."""
    end = time.monotonic() + 120
    while time.monotonic() < end:
        line = lines.get(timeout=max(0.1, end - time.monotonic()))
        if line is None:
            break
        seen.append(line)
        if line.startswith("autoresearch") and " at http://" in line:
            return line.split(" at ", 1)[1].split()[0]
    raise AssertionError("no dashboard URL printed:\n" + "".join(seen))


def _tsv(run_dir: Path) -> dict[int, dict[str, str]]:
    with open(run_dir / "results.tsv", newline="") as f:
        return {int(r["exp_id"]): r for r in csv.DictReader(f, delimiter="\t")}


ROWS_JS = """[...document.querySelectorAll('#exp-table tbody tr')].map(tr => {
  const c = {}; for (const td of tr.cells) c[td.dataset.col] = td.textContent; return c; })"""
POINTS_JS = """(() => { const gd = document.getElementById('%s');
  return (gd.data || []).filter(t => t.meta === 'experiments').flatMap(t => Array.from(t.y || t.x)); })()"""


def test_live_page_beside_a_real_run(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "repo", sleep=1.0)
    task, config = _files(tmp_path)
    argv = [sys.executable, "-m", "swarm.cli", "run", "--repo", str(repo), "--tag", "web", "--task", str(task),
            "--config", str(config), "--workers", "2", "--max-experiments", "12", "--baseline-runs", "2",
            "--max-runs", "1", "--address", cluster, "--dashboard", "--dashboard-port", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    after = None
    seen: list[str] = []
    try:
        with Chromium(width=1400, height=1000) as browser:
            url = _url(_lines(proc), seen)
            assert url.startswith("http://127.0.0.1:")
            browser.open(url + "?poll=300#experiments")
            browser.evaluate("window.__opened = 1")  # gone if the page ever reloads
            counts = []
            end = time.monotonic() + 150
            while proc.poll() is None and time.monotonic() < end:
                n = browser.evaluate("document.querySelectorAll('#exp-table tbody tr').length")
                if n and (not counts or n != counts[-1]):
                    counts.append(n)
                time.sleep(0.2)
            assert proc.wait(60) == 0, "".join(seen)
            # the page grew as experiments finished, without a reload
            assert len(counts) >= 2 and counts == sorted(counts), counts
            assert browser.evaluate("window.__opened") == 1
            run_dir = repo / ".swarm" / "web"
            check_invariants(repo, "web")
            tsv = _tsv(run_dir)

            # after the run: `autoresearch dashboard` serves the finished run
            after = subprocess.Popen([sys.executable, "-m", "swarm.cli", "dashboard", "--repo", str(repo), "--port", "0"],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            browser.open(_url(_lines(after), seen) + "#experiments")
            browser.wait_for("document.body.dataset.state === 'stopped'")
            browser.wait_for(f"document.querySelectorAll('#exp-table tbody tr').length === {len(tsv)}")

            # the table: every experiment of results.tsv, with its status and metric
            rows = {int(r["exp_id"]): r for r in browser.evaluate(ROWS_JS)}
            assert set(rows) == set(tsv)
            for exp_id, r in tsv.items():
                assert rows[exp_id]["status"] == r["status"]
                shown = rows[exp_id]["metric"]
                assert shown == (r["val_bpb"] if shown != "-" else "-") and (shown != "-" or r["val_bpb"] == "0.000000")
                assert rows[exp_id]["runs"] == r["runs"] and rows[exp_id]["mean"] == (r["mean"] or "-")  # the commit's
            assert browser.evaluate("document.getElementById('fact-experiments').textContent").startswith(str(len(tsv)))
            settings = browser.evaluate("document.getElementById('fact-settings').textContent")
            assert "workers 2" in settings and "max_experiments 12" in settings, settings

            # the progress chart: one point per measured experiment, at its metric
            browser.evaluate("location.hash = '#progress'")
            browser.wait_for("document.querySelector('#fig-progress .main-svg') !== null")
            points = sorted(round(y, 6) for y in browser.evaluate(POINTS_JS % "fig-progress"))
            assert points == sorted(float(r["val_bpb"]) for r in tsv.values() if r["val_bpb"] != "0.000000")
            labels = browser.evaluate("[...document.querySelectorAll('#fig-progress text')].map(t => t.textContent)")
            assert any(label.startswith("<img src=x") for label in labels), labels  # a kept point's description, as text

            # the timeline: one bar per experiment, on the workers' rows
            browser.evaluate("location.hash = '#gpus'")
            browser.wait_for("document.querySelector('#fig-timeline .main-svg') !== null")
            bars = browser.evaluate(POINTS_JS % "fig-timeline")
            assert len(bars) == len(tsv)
            workers = browser.evaluate("document.getElementById('fig-timeline').layout.yaxis.categoryarray")
            assert sorted(workers) == sorted({r["worker"] for r in tsv.values()})

            # the HTML description is text in the table and in the detail, and never ran
            browser.evaluate("location.hash = '#experiments'")
            evil = [i for i, r in rows.items() if r["description"] == EVIL]
            assert evil, [r["description"] for r in rows.values()]
            browser.evaluate(f"document.querySelector('#exp-table tr[data-exp-id=\"{evil[0]}\"]').click()")
            browser.wait_for("document.getElementById('detail-diff').textContent.includes('+X = 1.0')")
            assert browser.evaluate("document.getElementById('detail-description').textContent") == EVIL
            assert browser.evaluate("document.querySelectorAll('main img, main script, main b').length") == 0
            assert browser.evaluate("typeof window.__xss") == "undefined"
            assert browser.dialogs == [] and browser.exceptions == []
        after.send_signal(signal.SIGINT)  # Ctrl-C is how it stops: exit status 0
        assert after.wait(30) == 0
    finally:
        for p in (proc, after):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
