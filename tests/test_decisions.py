"""Pure decision logic and state replay, without Ray or git."""

from __future__ import annotations

import pytest

from swarm.config import default_tag, plan_workers
from swarm.decisions import (
    Assignment, Best, SchedulerView, baseline_stats, decide, improves, next_kind, unfinished_record,
)
from swarm.errors import ConfigError
from swarm.records import ExperimentRecord, Kind, Status
from swarm.state import replay


def rec(metric=1.0, status=Status.KEEP, kind=Kind.PROPOSAL, parent="best", exp_id=5, **kw):
    return ExperimentRecord(exp_id=exp_id, worker="w0", agent="a", kind=kind, parent=parent, commit="c",
                            description="d", status=status, metric=metric, **kw)


BEST = Best("best", 1.5, 2)


def test_improves_is_strict_with_margin():
    assert improves(1.0, 1.5, "min") and not improves(1.5, 1.5, "min")
    assert not improves(1.45, 1.5, "min", min_delta=0.1) and improves(1.39, 1.5, "min", min_delta=0.1)
    assert improves(2.0, 1.5, "max") and not improves(1.0, 1.5, "max")
    with pytest.raises(ValueError):
        improves(1, 2, "sideways")


def test_decide_keep_discard_and_failures():
    d = decide(rec(1.0), BEST, "min")
    assert d.status == Status.KEEP and d.promote and not d.combine
    assert decide(rec(1.5), BEST, "min").status == Status.DISCARD
    assert decide(rec(1.6), BEST, "min").status == Status.DISCARD
    assert decide(rec(1.49), BEST, "min", min_delta=0.05).status == Status.DISCARD
    for s in (Status.CRASH, Status.TIMEOUT, Status.INVALID, Status.INTERRUPTED):
        d = decide(rec(None, status=s, error="why"), BEST, "min")
        assert d.status == s and not d.promote and d.reason == "why"
    assert decide(rec(None), BEST, "min").status == Status.CRASH


def test_decide_raced_candidate_is_promoted_and_combined():
    d = decide(rec(1.0, parent="older"), BEST, "min")
    assert d.status == Status.KEEP and d.promote and d.combine
    d = decide(rec(1.6, parent="older"), BEST, "min")
    assert d.status == Status.DISCARD and not d.combine


def test_baseline_is_kept_without_promotion():
    d = decide(rec(2.0, kind=Kind.BASELINE), None, "min")
    assert d.status == Status.KEEP and not d.promote


def test_baseline_stats():
    mean, sd = baseline_stats([2.0, 2.2, 1.9])
    assert mean == pytest.approx(6.1 / 3) and sd == pytest.approx(0.152753, rel=1e-5)  # a standard deviation
    assert baseline_stats([1.0]) == (1.0, None)
    with pytest.raises(ValueError):
        baseline_stats([])


def view(**kw):
    base = dict(started=0, baseline_done=False, baselines_to_start=2, queued_combinations=0, max_experiments=None)
    return SchedulerView(**{**base, **kw})


def test_next_kind_order():
    assert next_kind(view()) == Kind.BASELINE
    assert next_kind(view(baselines_to_start=0)) is None  # wait for the wave
    assert next_kind(view(baseline_done=True, baselines_to_start=0)) == Kind.PROPOSAL
    assert next_kind(view(baseline_done=True, queued_combinations=1)) == Kind.COMBINATION
    # confirmations come before fresh proposals, never before the first wave
    assert next_kind(view(baseline_done=True, queued_combinations=1, confirms_wanted=1)) == Kind.COMBINATION
    assert next_kind(view(baseline_done=True, confirms_wanted=1)) == Kind.CONFIRM
    assert next_kind(view(baseline_done=True, queued_combinations=1, confirms_wanted=1,
                          best_unsettled=True)) == Kind.CONFIRM  # the best first: everything is judged against it
    assert next_kind(view(baselines_to_start=0, confirms_wanted=1)) is None
    assert next_kind(view(baseline_done=True, started=8, max_experiments=8)) is None
    assert next_kind(view(baseline_done=True, stopping=True)) is None


def test_assignment_round_trip_and_unfinished_record():
    a = Assignment(3, "w1", "builtin", Kind.COMBINATION, "p", 1.2, noise=0.01, description="combine",
                   files=(("train.py", "x"),), combo_id=1, seed=7, started_at=10.0)
    b = Assignment.from_dict(a.to_dict())
    assert b == a.__class__(**{**a.__dict__, "files": ()})
    r = unfinished_record(a, Status.INTERRUPTED, "stopped", 20.0)
    assert r.status == Status.INTERRUPTED and r.commit == "" and r.kind == Kind.COMBINATION


def _events():
    def started(i, kind="baseline", parent="base", combo=None):
        return {"event": "experiment_started", "assignment": {"exp_id": i, "worker": f"w{i % 2}", "agent": "a",
                                                              "kind": kind, "parent": parent, "combo_id": combo}}

    def finished(i, metric, kind="baseline", status="keep", parent="base", commit="base"):
        return [{"event": "experiment_finished", "record": rec(metric, Status(status), Kind(kind), parent, i,
                                                                ).replace(commit=commit).to_dict()},
                {"event": "decision", "exp_id": i, "status": status}]

    return [
        {"event": "run_started", "tag": "t", "base_commit": "base", "config": {"workers": 2}, "t": 100.0},
        started(1), started(2), *finished(1, 2.0), *finished(2, 2.2),
        {"event": "baseline_measured", "commit": "base", "metric": 2.1, "noise": 0.2},
        {"event": "best_advanced", "commit": "base", "metric": 2.1, "exp_id": None},
        started(3, "proposal"), started(4, "proposal"),
        *finished(3, 1.9, "proposal", commit="c3"),
        {"event": "best_advanced", "commit": "c3", "metric": 1.9, "exp_id": 3},
        *finished(4, 1.8, "proposal", commit="c4"),
        {"event": "best_advanced", "commit": "c4", "metric": 1.8, "exp_id": 4},
        {"event": "combination_queued", "combo_id": 1, "parent": "c4", "parent_metric": 1.8, "files": {},
         "description": "combine"},
        started(5, "combination", "c4", 1),
        {"event": "run_stopped", "reason": "interrupted"},
    ]


def test_replay_builds_the_coordinator_state():
    s = replay(_events())
    assert s.best == Best("c4", 1.8, 4) and [b.metric for b in s.best_history] == [2.1, 1.9, 1.8]
    assert s.baseline_metric == 2.1 and s.noise == 0.2 and s.baseline_metrics() == [2.0, 2.2]
    assert s.queue == [] and s.combos_queued == 1 and s.next_exp_id == 6
    assert [a.exp_id for a in s.running()] == [5] and s.stopped and s.stop_reason == "interrupted"
    assert s.counts() == {"keep": 4} and len(s.history()) == 4 and s.baselines_to_start() == 0


def test_first_wave_counts_interrupted_baselines_as_not_done():
    events = _events()[:4] + [
        {"event": "experiment_finished", "record": rec(None, Status.INTERRUPTED, Kind.BASELINE, "base", 2).to_dict()},
        {"event": "decision", "exp_id": 2, "status": "interrupted"},
    ]
    assert replay(events).baselines_to_start() == 1


def test_plan_workers():
    p = plan_workers({"GPU": 8, "CPU": 96}, None)
    assert (p.count, p.num_gpus, p.num_cpus, p.on_gpu) == (8, 1.0, 8.0, True)
    assert plan_workers({"GPU": 4, "CPU": 2}, 2).num_cpus == 1.0
    with pytest.raises(ConfigError):
        plan_workers({"GPU": 2, "CPU": 8}, 3)
    p = plan_workers({"CPU": 2}, None)
    assert (p.count, p.num_gpus, p.num_cpus, p.threads) == (2, 0.0, 1.0, 1)
    p = plan_workers({"CPU": 16}, None)
    assert (p.count, p.threads) == (4, 4)


def test_default_tag(tmp_path):
    import datetime as dt

    day = dt.date(2025, 11, 21)
    assert default_tag(tmp_path, day) == "nov21"
    (tmp_path / ".swarm" / "nov21").mkdir(parents=True)
    assert default_tag(tmp_path, day) == "nov21-2"
