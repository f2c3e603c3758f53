"""Compare mode: one lane per agent, each with its own best branch, on a real local Ray cluster
with fake GPUs and the stand-in task; `autoresearch report` over such a run; lane naming (pure).

One cluster for the module. Each test builds its own stand-in repo.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

from swarm.agents import parse_agent_spec
from swarm.errors import ConfigError
from swarm.lanes import MAIN, best_branch, lane_name, plan_lanes, split_workers

ray = pytest.importorskip("ray")

from swarm.config import SwarmConfig  # noqa: E402
from swarm.coordinator import Coordinator  # noqa: E402
from swarm.journal import read_events  # noqa: E402
from swarm.state import replay  # noqa: E402
from tests.standin import git, make_standin_repo, standin_task  # noqa: E402

GOOD = "py:tests.standin_agents:GoodAgent"
WEAK = "py:tests.standin_agents:WeakAgent"


# ---- pure: lanes ------------------------------------------------------------------------------

def test_lane_names_are_safe_ref_components():
    assert lane_name("openai/gpt-5") == "openai-gpt-5"
    assert lane_name("anthropic/claude-sonnet-4-5") == "anthropic-claude-sonnet-4-5"
    assert lane_name("cmd:claude") == "cmd-claude"
    assert lane_name("ollama/qwen3:30b..x.lock") == "ollama-qwen3-30b.x-lock"
    assert lane_name("w0") == "lane-w0" and lane_name("best") == "lane-best" and lane_name("main") == "lane-main"
    assert lane_name("///") == "agent"


def test_plan_lanes_one_per_distinct_spec():
    specs = [parse_agent_spec(s) for s in ("openai/gpt-5", "builtin", "openai/gpt-5")]
    assert [lane.name for lane in plan_lanes(specs, compare=False)] == [MAIN]
    lanes = plan_lanes(specs, compare=True)
    assert [lane.name for lane in lanes] == ["openai-gpt-5", "builtin"]
    twins = [parse_agent_spec("builtin", {"max_level": 1}), parse_agent_spec("builtin", {"max_level": 2})]
    assert [lane.name for lane in plan_lanes(twins, compare=True)] == ["builtin", "builtin-2"]
    assert split_workers(4, 2) == 4 and split_workers(8, 3) == 6
    with pytest.raises(ConfigError, match="at least 3 workers"):
        split_workers(2, 3)
    assert best_branch("t", MAIN) == "swarm/t/best" and best_branch("t", "builtin") == "swarm/t/builtin/best"


def test_config_assigns_workers_round_robin_to_lanes(tmp_path):
    cfg = SwarmConfig(repo=tmp_path, tag="t", task=standin_task(), compare=True,
                      agents=(parse_agent_spec(GOOD), parse_agent_spec(WEAK)))
    assert [cfg.lane_for(i).name for i in range(4)] == ["GoodAgent", "WeakAgent"] * 2
    assert [cfg.agent_for(i).name for i in range(4)] == ["GoodAgent", "WeakAgent"] * 2
    assert cfg.to_dict()["compare"] is True and cfg.to_dict()["lanes"] == ["GoodAgent", "WeakAgent"]
    shared = SwarmConfig(repo=tmp_path, tag="t", task=standin_task(), agents=cfg.agents)
    assert shared.to_dict()["lanes"] == [MAIN] and shared.agent_for(1).name == "WeakAgent"


# ---- the swarm -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=4, num_gpus=4, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def compare_config(repo: Path, tag: str, agents=(GOOD, WEAK), **kw) -> SwarmConfig:
    kw.setdefault("task", standin_task(timeout=20))
    kw.setdefault("workers", 4)
    kw.setdefault("max_runs", 1)  # decide on one run: which experiments end pending depends on timing
    return SwarmConfig(repo=repo, tag=tag, agents=tuple(parse_agent_spec(a) for a in agents), compare=True, **kw)


def check_lanes(repo: Path, tag: str):
    """Per-lane invariants from the journal and git; returns (state, events)."""
    events = read_events(repo / ".swarm" / tag / "journal.jsonl")
    s = replay(events)
    assert sorted(s.records) == sorted(s.assignments)
    assert s.lanes == ["GoodAgent", "WeakAgent"] and s.compare
    measured = [e for e in events if e["event"] == "baseline_measured"]
    assert len(measured) == 1  # one shared baseline for all lanes
    by_lane = defaultdict(list)
    for e in events:
        if e["event"] == "best_advanced":
            by_lane[e["lane"]].append(e)
    assert sorted(by_lane) == sorted(s.lanes)
    for lane, bests in by_lane.items():
        first = bests[0]  # every lane starts at the same baseline commit and metric
        assert first["exp_id"] is None and first["commit"] == s.base_commit and first["metric"] == s.baseline_metric
        metrics = [e["metric"] for e in bests]
        assert metrics == sorted(metrics, reverse=True) and len(set(metrics)) == len(metrics), (lane, metrics)
        for e in bests[1:]:
            r = s.records[e["exp_id"]]
            assert r.lane == lane and r.commit == e["commit"] and r.status.value == "keep"
        tip = git(repo, "rev-parse", f"refs/heads/{best_branch(tag, lane)}")
        assert tip == s.lane_best(lane).commit == bests[-1]["commit"]
    assert git(repo, "branch", "--list", f"swarm/{tag}/best") == ""  # no shared best in a compare run
    lane_commits = {lane: {e["commit"] for e in bests} for lane, bests in by_lane.items()}
    for r in s.records.values():
        lane_of_worker = s.lanes[int(r.worker[1:]) % 2]
        assert r.lane == lane_of_worker
        if r.kind.value == "proposal":  # started from its own lane's best, never another lane's
            assert r.parent in lane_commits[r.lane], (r.exp_id, r.lane)
            assert r.agent == {"GoodAgent": "good", "WeakAgent": "weak"}[r.lane]
    for e in events:
        if e["event"] == "combination_queued":
            assert {s.records[i].lane for i in e["sources"] if i is not None} == {e["lane"]}
    return s, events


def independent_counts(events):
    """Per agent from the raw events: experiments, keeps, best kept metric, cost (no swarm code)."""
    finished = {e["record"]["exp_id"]: e["record"] for e in events if e["event"] == "experiment_finished"}
    final = {e["exp_id"]: e["status"] for e in events if e["event"] == "decision"}
    out: dict = defaultdict(lambda: {"n": 0, "keep": 0, "best": None, "cost": 0.0, "task_s": 0.0, "tok_in": 0})
    for i, rec in finished.items():
        if rec["kind"] in ("baseline", "confirm") or final[i] == "interrupted":
            continue
        g = out[rec["agent"]]
        g["n"] += 1
        g["cost"] += rec["usage"]["cost_usd"]
        g["task_s"] += rec["task_seconds"]
        g["tok_in"] += rec["usage"]["tokens_in"]
        if final[i] == "keep":
            g["keep"] += 1
            g["best"] = rec["metric"] if g["best"] is None else min(g["best"], rec["metric"])
    return dict(out)


def test_compare_two_agents_race_in_two_lanes_and_report(cluster, tmp_path, capsys):
    repo = make_standin_repo(tmp_path / "task", sleep=0.2)
    lines: list[str] = []
    summary = Coordinator(compare_config(repo, "cmp", max_experiments=16), out=lines.append).run()
    assert summary.reason == "max_experiments" and summary.experiments == 16
    s, events = check_lanes(repo, "cmp")
    good, weak = s.lane_best("GoodAgent"), s.lane_best("WeakAgent")
    assert good.metric < weak.metric and good.metric < s.baseline_metric - 0.3
    assert weak.exp_id is None  # the weak agent never beat the baseline
    assert set(summary.lane_bests) == {"GoodAgent", "WeakAgent"} and summary.best == good
    baselines = [r for r in s.records.values() if r.kind.value == "baseline"]
    assert len(baselines) == 4 and {r.worker for r in baselines} == {"w0", "w1", "w2", "w3"}
    assert any("compare run: 2 lanes x 2 workers" in n for n in s.notes)
    # the weak lane's agents only ever saw their own lane's experiments (plus the shared baselines)
    seen = s.history(lane="WeakAgent")
    assert seen and len(seen) < len(s.history())
    assert all(s.records[h.exp_id].lane == "WeakAgent" or s.records[h.exp_id].kind.value == "baseline" for h in seen)

    from swarm.cli import main
    from swarm.commands.status import status_text

    text = status_text(str(repo), "cmp")
    assert "GoodAgent" in text and "WeakAgent" in text and "swarm/cmp/GoodAgent/best" in text

    expected = independent_counts(events)
    assert set(expected) == {"good", "weak"}
    assert main(["report", "--repo", str(repo), "--tag", "cmp", "--by", "agent", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["group"]: r for r in report["rows"]}
    assert set(rows) == {"good", "weak"} and report["baseline"] == s.baseline_metric
    for agent, exp in expected.items():
        row = rows[agent]
        assert row["experiments"] == exp["n"] and row["kept"] == exp["keep"]
        assert row["keep_rate"] == pytest.approx(exp["keep"] / exp["n"])
        assert row["cost_usd"] == pytest.approx(exp["cost"]) and row["tokens_in"] == exp["tok_in"]
        assert row["gpu_hours"] == pytest.approx(exp["task_s"] / 3600)
        best = exp["best"] if exp["best"] is not None else s.baseline_metric
        assert row["best"] == pytest.approx(best)
        assert row["gain"] == pytest.approx(s.baseline_metric - best)
    assert rows["good"]["best"] == pytest.approx(good.metric)  # one agent per lane: its best is the lane's
    assert rows["weak"]["keep_rate"] == 0 and rows["weak"]["gain"] == 0 and rows["weak"]["gain_per_dollar"] is None
    assert rows["good"]["gain_per_dollar"] == pytest.approx(rows["good"]["gain"] / expected["good"]["cost"])

    if os.environ.get("COMPARE_FIGURE_DIR"):  # keep a figure for the README
        main(["report", "--repo", str(repo), "--tag", "cmp", "--by", "agent", "--target", "1.5",
              "--plot", str(Path(os.environ["COMPARE_FIGURE_DIR"]) / "compare.png")])
    capsys.readouterr()
    png, csv_path = tmp_path / "out" / "cmp.png", tmp_path / "cmp.csv"
    assert main(["report", "--repo", str(repo), "--tag", "cmp", "--by", "lane", "--target", "1.5",
                 "--plot", str(png), "--csv", str(csv_path)]) == 0
    table = capsys.readouterr().out
    assert "GoodAgent" in table and "WeakAgent" in table and "t->1.5" in table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert csv_path.read_text().splitlines()[0].startswith("group,experiments,kept,crashed,invalid,agent_errors,keep_rate")


def test_compare_run_resumes_with_its_lanes(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.1)
    Coordinator(compare_config(repo, "cres", max_experiments=8), out=lambda _: None).run()
    before, _ = check_lanes(repo, "cres")
    with pytest.raises(ConfigError, match="races lanes"):
        Coordinator(compare_config(repo, "cres", agents=(GOOD,), workers=2, max_experiments=12, resume=True),
                    out=lambda _: None).run()
    Coordinator(compare_config(repo, "cres", max_experiments=14, resume=True), out=lambda _: None).run()
    after, _ = check_lanes(repo, "cres")
    assert len(after.records) == 14 and after.sessions == 2
    assert after.lane_best("GoodAgent").metric < before.lane_best("GoodAgent").metric
    for i, r in before.records.items():
        assert after.records[i] == r


def test_compare_needs_a_worker_per_lane(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.1)
    with pytest.raises(ConfigError, match="at least 2 workers"):
        Coordinator(compare_config(repo, "few", workers=1, max_experiments=4), out=lambda _: None).run()


def test_compare_through_the_cli_with_a_config_file(cluster, tmp_path, capsys):
    from swarm.cli import main

    repo = make_standin_repo(tmp_path / "task", sleep=0.1)
    task = tmp_path / "standin.toml"
    task.write_text('[task]\nname = "standin"\nmutable_files = ["train.py"]\ncommand = ["{python}", "train.py"]\n'
                    'time_budget = 1.0\ntimeout = 20.0\n')
    conf = tmp_path / "run.toml"
    conf.write_text(f'[run]\nagents = ["{GOOD}", "{WEAK}"]\ncompare = true\nworkers = 4\nmax_experiments = 6\n'
                    f'task = "{task}"\nquiet = true\n')
    assert main(["run", "--repo", str(repo), "--tag", "cli", "--config", str(conf), "--address", cluster]) == 0
    out = capsys.readouterr().out
    assert "lane GoodAgent: best" in out and "branch swarm/cli/WeakAgent/best" in out
    s, _ = check_lanes(repo, "cli")
    assert len(s.records) == 6 and s.config["compare"] is True
