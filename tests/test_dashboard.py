"""The swarm page without a browser: its JSON, its HTTP server, its read-only promise, its command.

The run is a hand-written journal over a real git repository (so that diffs are real); the browser
test with a real run is tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from swarm.dashboard import snapshot
from swarm.dashboard.server import DashboardServer, plotly_js
from swarm.dashboard.source import RunSource
from swarm.records import Status
from tests.standin import git, make_standin_repo
from tests.test_report import Run, shared_run

EVIL = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> & <b>bold</b>'
HIDDEN = "http://internal-host.invalid:4242"  # an agent option: never on the page


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run of the stand-in repo: #3 is a real commit (X = 1.0) with an HTML description and a log."""
    repo = make_standin_repo(tmp_path / "task")
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "w0")
    text = (repo / "train.py").read_text().replace("X = 0.0", "X = 1.0")
    (repo / "train.py").write_text(text)
    git(repo, "commit", "-q", "-am", "X = 1.0")
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    run = shared_run()
    run.events[0]["config"].update(max_cost=5.0, agents=[{"kind": "llm", "name": "a", "options": {"api_base": HIDDEN}}])
    for e in run.events:
        if e["event"] == "experiment_finished":
            e["record"]["parent"] = base
            if e["record"]["exp_id"] == 3:
                e["record"].update(commit=sha, description=EVIL)
    run.events.append({"event": "best_advanced", "t": run.events[-1]["t"], "commit": sha, "metric": 1.8, "exp_id": 3,
                       "previous_commit": base, "previous_metric": 2.0, "lane": "main"})
    path = repo / ".swarm" / "dash"
    (path / "logs").mkdir(parents=True)
    (path / "journal.jsonl").write_text("".join(json.dumps(e) + "\n" for e in run.events))
    (path / "logs" / "3.log").write_text("".join(f"step {i} <b>loss</b>\n" for i in range(300)) + "val_bpb: 1.8\n")
    return path


def _get(url: str, method: str = "GET", host: str | None = None):
    request = urllib.request.Request(url, method=method, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_snapshot_numbers_escaping_and_no_settings_beyond_the_list(run_dir):
    doc = snapshot.build(RunSource(run_dir))
    assert doc["tag"] == "dash" and doc["state"] == "not running" and doc["experiments_total"] == 9
    assert doc["counts"]["keep"] == 4 and doc["best"]["exp_id"] == 3 and doc["cost"]["max_cost"] == 5.0
    rows = {r["exp_id"]: r for r in doc["rows"]}
    assert rows[3]["description"] == EVIL and rows[3]["metric"] == 1.8  # raw: the page sets it as text
    assert [r["exp_id"] for r in doc["rows"]] == sorted(rows, reverse=True)  # newest first
    assert doc["lineage"][0]["exp_id"] == 3 and doc["lineage"][0]["improvement"] == pytest.approx(-0.2)
    assert doc["agents"]["header"][:3] == ["agent", "exps", "keep"] and {r[0] for r in doc["agents"]["rows"]} == {"a", "b"}
    assert {w["worker"] for w in doc["gpus"]["workers"]} == {"w0", "w1"}
    figures = json.dumps(doc["figures"])
    assert "<img" not in figures and "<script" not in figures and "&lt;img src=x" in figures
    progress = doc["figures"]["progress"]["data"]
    points = sum(len(t["y"]) for t in progress if t.get("meta") == "experiments")
    assert points == sum(1 for r in doc["rows"] if r["metric"] is not None)
    bars = sum(len(t["x"]) for t in doc["figures"]["timeline"]["data"])
    assert bars == len(doc["rows"])
    everything = json.dumps(doc, default=str)
    assert HIDDEN not in everything and "api_base" not in everything
    assert set(doc["settings"]) <= set(snapshot.SETTINGS)


def test_experiment_detail_is_the_diff_against_its_parent_and_the_log_tail(run_dir):
    source = RunSource(run_dir)
    d = source.detail(3)
    assert "-X = 0.0" in d["diff"] and "+X = 1.0" in d["diff"] and d["description"] == EVIL
    lines = d["log"].splitlines()
    assert lines[-1] == "val_bpb: 1.8" and len(lines) == 200
    assert "(no log)" == source.detail(4)["log"] and source.detail(99) is None
    assert source.detail(5)["diff"].startswith("(diff not available: c5 or its parent")  # not in the repository


def test_a_copy_of_the_run_directory_shows_everything_but_diffs(run_dir, tmp_path):
    from swarm.commands.dashboard import run_dir_for

    copy = tmp_path / "laptop" / "dash"
    shutil.copytree(run_dir, copy)
    source = RunSource(copy)
    assert snapshot.build(source)["experiments_total"] == 9
    d = source.detail(3)
    assert d["diff"].startswith("(diff not available") and d["log"].endswith("val_bpb: 1.8")
    # --dir with --repo: a clone of the task repository gives the diffs back
    repo = run_dir.parent.parent
    assert run_dir_for(None, None, str(copy)) == (copy, None)
    assert run_dir_for(str(repo), None, str(copy)) == (copy, repo.resolve())
    assert "+X = 1.0" in RunSource(copy, repo=repo).detail(3)["diff"]


def test_before_the_run_starts_the_page_waits(tmp_path):
    doc = snapshot.build(RunSource(tmp_path / ".swarm" / "later"))
    assert doc["empty"] and doc["state"] == "waiting" and doc["last_event_t"] is None


def test_a_just_started_run_and_a_torn_last_line(tmp_path):
    from plotly.io.json import to_json_plotly

    path = tmp_path / ".swarm" / "new"
    path.mkdir(parents=True)
    journal = path / "journal.jsonl"
    journal.write_text(json.dumps(Run().events[0]) + "\n" + '{"event": "experiment_sta')  # a write under way
    doc = snapshot.build(RunSource(path))
    assert not doc["empty"] and doc["experiments_total"] == 0 and doc["rows"] == [] and doc["lineage"] == []
    assert doc["gpus"]["workers"] == [] and doc["gpus"]["duty_cycle"] == 0
    sent = json.loads(to_json_plotly(doc))  # what the server sends
    assert sent["state"] == "not running" and sum(len(t["y"]) for t in sent["figures"]["progress"]["data"]) == 0


def test_gpu_figures_count_idle_workers_and_records_without_a_start(run_dir):
    events = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    for e in events:
        if e["event"] == "experiment_finished" and e["record"]["exp_id"] == 4:
            e["record"]["started_at"] = 0.0  # an old journal's record: no start recorded
        if e["event"] == "run_started":
            e["config"]["workers"] = 4  # two of them never ran anything
    (run_dir / "journal.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    gpus = snapshot.build(RunSource(run_dir))["gpus"]
    busy = {w["worker"]: w["busy_seconds"] for w in gpus["workers"]}
    assert busy == {"w0": 390.0, "w1": 180.0}  # #4 adds nothing rather than 'since 1970'
    task = sum(w["task_seconds"] for w in gpus["workers"])
    assert gpus["duty_cycle"] == pytest.approx(task / (gpus["span_seconds"] * 4))
    assert gpus["experiments_per_gpu_hour"] == pytest.approx(gpus["experiments_per_hour"] / 4)


def _fingerprint(run_dir: Path) -> dict:
    files = {str(p.relative_to(run_dir)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
             for p in sorted(run_dir.rglob("*")) if p.is_file()}
    repo = run_dir.parent.parent
    return {"files": files, "refs": git(repo, "show-ref"), "index": (repo / ".git" / "index").stat().st_mtime_ns}


def test_server_routes_headers_and_it_never_writes(run_dir):
    before = _fingerprint(run_dir)
    with DashboardServer(run_dir, port=0) as server:
        base = server.url.rstrip("/")
        assert base.startswith("http://127.0.0.1:")
        status, headers, page = _get(base + "/")
        assert status == 200 and b"/static/plotly.min.js" in page and b"cdn" not in page.lower()
        assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
        status, _, js = _get(base + "/static/plotly.min.js")
        assert status == 200 and js == plotly_js().read_bytes()  # the installed package's plotly.js
        assert _get(base + "/static/app.js")[0] == 200 and _get(base + "/static/index.html")[0] == 404
        status, headers, body = _get(base + "/api/snapshot")
        doc = json.loads(body)
        assert status == 200 and headers["Cache-Control"] == "no-store" and doc["experiments_total"] == 9
        status, _, body = _get(base + "/api/experiments/3")
        assert status == 200 and "+X = 1.0" in json.loads(body)["diff"]
        assert _get(base + "/api/experiments/42")[0] == 404
        for method in ("POST", "PUT", "DELETE"):
            assert _get(base + "/api/snapshot", method=method)[0] == 405
        # bound to loopback: a request naming another host (DNS rebinding) is refused
        assert _get(base + "/api/snapshot", host="evil.example")[0] == 421
        assert _get(base + "/", host=f"localhost:{server.port}")[0] == 200
    assert _fingerprint(run_dir) == before


def test_a_corrupt_journal_is_one_line_on_the_page(run_dir):
    journal = run_dir / "journal.jsonl"
    journal.write_text("not json\n" + journal.read_text())
    with DashboardServer(run_dir, port=0) as server:
        for route in ("api/snapshot", "api/experiments/3"):
            status, _, body = _get(server.url + route)
            assert status == 500 and b"line 1 is not valid JSON" in body and len(body.splitlines()) == 1


def test_the_page_updates_when_the_journal_grows(run_dir):
    source = RunSource(run_dir)
    first = snapshot.build(source)
    run = Run()
    run.n = 9
    run.exp("b", Status.DISCARD, 1.95, at=900, worker="w1")
    with open(run_dir / "journal.jsonl", "a") as f:
        f.write("".join(json.dumps(e) + "\n" for e in run.events[1:]))
    second = snapshot.build(source)
    assert second["experiments_total"] == first["experiments_total"] + 1 and second["rows"][0]["exp_id"] == 10


def test_dashboard_command_errors_are_one_line(run_dir, tmp_path, capsys):
    from swarm.cli import main

    assert main(["dashboard", "--dir", str(tmp_path / "nothing")]) == 2
    assert "has no journal.jsonl" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", "--dir", str(run_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot serve the dashboard on 127.0.0.1:" in err and len(err.splitlines()) == 1
    assert main(["dashboard", "--repo", str(run_dir.parent.parent), "--tag", "nope"]) == 2
    assert "no run tagged 'nope'" in capsys.readouterr().err
