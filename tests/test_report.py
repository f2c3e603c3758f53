"""`swarm.report`: the per-agent / worker / lane comparison, from hand-written journal events."""

from __future__ import annotations

import csv
import io
import json

import pytest

from swarm.decisions import Assignment
from swarm.records import ExperimentRecord, Kind, Status, Usage
from swarm.report import build_report, format_table, to_csv, to_json

T0 = 1_000_000.0


class Run:
    """Builds the events of a run the way the coordinator journals them."""

    def __init__(self, direction="min", compare=False, lanes=("main",)):
        self.events = [{"event": "run_started", "t": T0, "tag": "rep", "base_commit": "base",
                        "config": {"task": {"metric": "val_bpb", "direction": direction}, "workers": 2,
                                   "compare": compare, "lanes": list(lanes)}}]
        self.n = 0

    def exp(self, agent, status, metric=None, *, at, worker="w0", lane="main", kind=Kind.PROPOSAL, task_s=60.0,
            usage=Usage()):
        self.n += 1
        a = Assignment(self.n, worker, agent, kind, "base", 2.0, lane=lane, started_at=T0 + at - task_s)
        verdict = Status.KEEP if status in (Status.KEEP, Status.DISCARD) else status
        r = ExperimentRecord(exp_id=self.n, worker=worker, agent=agent, kind=kind, parent="base",
                             commit=f"c{self.n}", description="d", status=verdict, metric=metric,
                             started_at=T0 + at - task_s, finished_at=T0 + at, task_seconds=task_s, usage=usage,
                             lane=lane)
        self.events += [
            {"event": "experiment_started", "t": T0 + at - task_s, "assignment": a.to_dict()},
            {"event": "experiment_finished", "t": T0 + at, "record": r.to_dict()},
            {"event": "decision", "t": T0 + at, "exp_id": self.n, "status": status.value, "reason": ""},
        ]
        return self

    def baseline(self, metric=2.0, at=10.0):
        self.exp("a", Status.KEEP, metric, at=at, kind=Kind.BASELINE, worker="w0")
        self.exp("b", Status.KEEP, metric, at=at, kind=Kind.BASELINE, worker="w1")
        self.events.append({"event": "baseline_measured", "t": T0 + at, "commit": "base", "metric": metric,
                            "noise": 0.0, "exp_ids": [1, 2]})
        return self


def shared_run() -> Run:
    paid = Usage(calls=1, tokens_in=1000, tokens_out=200, cost_usd=0.5)
    run = Run().baseline()
    run.exp("a", Status.KEEP, 1.8, at=100, usage=paid)
    run.exp("a", Status.DISCARD, 1.9, at=150, usage=paid)
    run.exp("a", Status.CRASH, at=160, task_s=30, usage=paid)
    run.exp("b", Status.KEEP, 1.7, at=200, worker="w1")
    run.exp("b", Status.INVALID, at=210, worker="w1", task_s=0)
    run.exp("b", Status.INTERRUPTED, at=220, worker="w1")  # a stop: not the agent's work
    run.exp("a", Status.TIMEOUT, at=400, task_s=240)
    return run


def test_by_agent_counts_rates_best_gain_and_money():
    report = build_report(shared_run().events, by="agent", target=1.85)
    assert report.baseline == 2.0 and report.by == "agent" and not report.compare
    b, a = report.rows  # best group first
    assert (a.group, b.group) == ("a", "b")
    assert a.experiments == 4 and a.kept == 1 and a.crashed == 2 and a.invalid == 0
    assert a.keep_rate == 0.25 and a.crash_rate == 0.5 and a.invalid_rate == 0
    assert a.best == 1.8 and a.gain == pytest.approx(0.2)
    assert a.gpu_hours == pytest.approx((60 + 60 + 30 + 240) / 3600)
    assert a.gain_per_gpu_hour == pytest.approx(0.2 / a.gpu_hours)
    assert a.tokens_in == 3000 and a.tokens_out == 600 and a.cost_usd == pytest.approx(1.5)
    assert a.gain_per_dollar == pytest.approx(0.2 / 1.5)
    assert a.time_to_target_s == 100 and b.time_to_target_s == 200
    assert b.experiments == 2 and b.keep_rate == 0.5 and b.invalid_rate == 0.5 and b.best == 1.7
    assert b.cost_usd == 0 and b.gain_per_dollar is None  # free: no per-dollar figure
    assert a.curve == ((0.0, 2.0), (100.0, 1.8)) and b.curve == ((0.0, 2.0), (200.0, 1.7))
    assert build_report(shared_run().events, target=1.5).rows[0].time_to_target_s is None


def test_by_worker_and_by_lane():
    run = Run(compare=True, lanes=("fast", "slow")).baseline()
    run.exp("x", Status.KEEP, 1.9, at=50, worker="w0", lane="fast")
    run.exp("x", Status.KEEP, 1.6, at=90, worker="w2", lane="fast")
    run.exp("y", Status.DISCARD, 2.1, at=60, worker="w1", lane="slow")
    lanes = {r.group: r for r in build_report(run.events, by="lane").rows}
    assert set(lanes) == {"fast", "slow"} and lanes["fast"].best == 1.6 and lanes["fast"].experiments == 2
    assert lanes["slow"].best == 2.0 and lanes["slow"].gain == 0 and lanes["slow"].curve == ((0.0, 2.0),)
    workers = {r.group: r for r in build_report(run.events, by="worker").rows}
    assert workers["w0"].best == 1.9 and workers["w2"].best == 1.6 and workers["w1"].kept == 0
    assert build_report(run.events, by="lane").compare
    with pytest.raises(ValueError):
        build_report(run.events, by="colour")


def test_maximised_metric():
    run = Run(direction="max").baseline(metric=0.5)
    run.exp("a", Status.KEEP, 0.7, at=30)
    run.exp("a", Status.KEEP, 0.6, at=40)  # kept against an older best, not a new best of the group
    (row,) = build_report(run.events, target=0.65).rows
    assert row.best == 0.7 and row.gain == pytest.approx(0.2) and row.time_to_target_s == 30
    assert row.curve == ((0.0, 0.5), (30.0, 0.7))


def test_renderings_table_csv_json():
    report = build_report(shared_run().events, by="agent", target=1.85)
    text = format_table(report)
    lines = text.splitlines()
    assert lines[0].startswith("run rep: shared run") and "baseline val_bpb 2.000000" in lines[0]
    header, rule, *rows = lines[1:4]
    assert header.split()[:3] == ["agent", "exps", "keep"] and "t->1.85" in header
    assert len(header) == len(rule) == len(rows[0])  # aligned columns
    assert rows[0].split()[:3] == ["b", "2", "50%"] and "+0.300000" in rows[0] and rows[0].split()[-3] == "-"
    parsed = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert [p["group"] for p in parsed] == ["b", "a"] and parsed[0]["gain_per_dollar"] == ""
    assert float(parsed[1]["cost_usd"]) == pytest.approx(1.5)
    data = json.loads(to_json(report))
    assert data["rows"][1]["experiments"] == 4 and data["target"] == 1.85


def test_failed_agent_attempts_count_their_cost():
    run = shared_run()
    run.events.append({"event": "agent_error", "t": T0 + 500, "worker": "w1", "agent": "b", "lane": "main",
                       "exp_id": 99, "error": "rate limited", "usage": {"calls": 3, "tokens_in": 30, "tokens_out": 0,
                                                                         "cost_usd": 0.25}})
    run.events.append({"event": "agent_error", "t": T0 + 510, "worker": "w2", "agent": "c", "lane": "main",
                       "exp_id": None, "error": "down", "usage": {}})
    rows = {r.group: r for r in build_report(run.events).rows}
    assert rows["b"].agent_errors == 1 and rows["b"].cost_usd == pytest.approx(0.25) and rows["b"].tokens_in == 30
    assert rows["b"].gain_per_dollar == pytest.approx(0.3 / 0.25) and rows["b"].experiments == 2
    assert rows["c"].experiments == 0 and rows["c"].keep_rate is None and rows["c"].gain == 0
    assert rows["a"].agent_errors == 0
    assert "agent err" in format_table(build_report(run.events))
    assert "agent err" not in format_table(build_report(shared_run().events))


def test_empty_run_and_plot(tmp_path):
    from swarm.commands.report import plot_report

    empty = build_report(Run().events)
    assert empty.rows == () and "(no experiments yet)" in format_table(empty)
    path = plot_report(build_report(shared_run().events, target=1.85), tmp_path / "figs" / "agents.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_report(empty, tmp_path / "empty.png")  # nothing to draw is still a figure
    assert (tmp_path / "empty.png").stat().st_size > 0
