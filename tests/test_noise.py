"""The noise model and the promotion gate (pure), the promotion helpers over a replayed state,
and the claims that keep a change from running twice."""

from __future__ import annotations

import math
import random

import pytest

from swarm.claims import Claims, content_hash
from swarm.decisions import Assignment
from swarm.noise import GatePolicy, Sample, Verdict, gain, gate, pooled_noise
from swarm.promotion import best_runs_wanted, confirm_description, confirm_targets, judge, reapply_diff
from swarm.records import ExperimentRecord, InFlight, Kind, Status
from swarm.state import RunState

POLICY = GatePolicy(confidence=0.99, max_runs=4)


def test_pooled_noise_is_a_standard_deviation_pooled_over_commits():
    noise = pooled_noise([[1.0, 1.2, 1.1], [2.0, 2.2], [5.0]])  # the single run adds nothing
    squares = (0.01 + 0.01 + 0.0) + (0.01 + 0.01)
    assert noise.sigma == pytest.approx(math.sqrt(squares / (2 + 1)))
    assert (noise.runs, noise.dof) == (5, 3)
    assert pooled_noise([[1.0], [2.0]]).sigma is None
    rng = random.Random(0)  # many commits measured a few times each: close to the true sigma
    groups = [[10 * c + rng.gauss(0, 0.5) for _ in range(3)] for c in range(400)]
    assert pooled_noise(groups).sigma == pytest.approx(0.5, rel=0.05)


def test_gain_direction():
    assert gain(1.0, 1.5, "min") == 0.5 and gain(2.0, 1.5, "max") == 0.5
    with pytest.raises(ValueError):
        gain(1, 2, "up")


def test_gate_promotes_clear_wins_and_discards_clear_losses():
    best = Sample(3, 2.0)
    sigma = 0.01  # one run against 3: se of the difference = 0.01 * sqrt(1 + 1/3) = 0.01155
    assert gate(Sample(1, 2.0 - 0.04), best, sigma, "min", POLICY).verdict == Verdict.PROMOTE  # 3.5 se at once
    assert gate(Sample(1, 2.0 + 0.001), best, sigma, "min", POLICY).verdict == Verdict.DISCARD  # measured worse
    grey = gate(Sample(1, 2.0 - 0.01), best, sigma, "min", POLICY)
    assert grey.verdict == Verdict.MEASURE_AGAIN and "grey zone" in grey.reason and 0 < grey.z < 2.33
    # the futility bar rises: a mean that stays barely better is dropped before max_runs
    assert gate(Sample(3, 2.0 - 0.003), best, sigma, "min", POLICY).verdict == Verdict.DISCARD
    # after max_runs the gate must decide
    assert gate(Sample(4, 2.0 - 0.012), best, sigma, "min", POLICY).verdict == Verdict.DISCARD
    assert gate(Sample(4, 2.0 - 0.02), best, sigma, "min", POLICY).verdict == Verdict.PROMOTE
    # max direction
    assert gate(Sample(1, 2.04), best, sigma, "max", POLICY).verdict == Verdict.PROMOTE


def test_a_single_run_needs_several_standard_errors():
    """2.6 se clears the 0.95 bar (1.64) on two runs, but one run is promoted at once only from 3 se."""
    best, sigma = Sample(3, 2.0), 0.01
    assert GatePolicy(0.95).z_bar(1) == 3.0 and GatePolicy(0.95).z_bar(2) == pytest.approx(1.645, abs=1e-3)
    assert gate(Sample(1, 2.0 - 0.03), best, sigma, "min", GatePolicy(0.95)).verdict == Verdict.MEASURE_AGAIN
    assert gate(Sample(2, 2.0 - 0.03), best, sigma, "min", GatePolicy(0.95)).verdict == Verdict.PROMOTE


def test_gate_confidence_trades_runs_for_certainty():
    best, sigma, cand = Sample(3, 2.0), 0.01, Sample(2, 2.0 - 0.02)  # about 2.2 standard errors
    assert gate(cand, best, sigma, "min", GatePolicy(0.95, 4)).verdict == Verdict.PROMOTE
    assert gate(cand, best, sigma, "min", GatePolicy(0.999, 4)).verdict == Verdict.MEASURE_AGAIN


def test_gate_min_delta_is_an_extra_floor_and_no_noise_means_classic():
    best = Sample(3, 2.0)
    r = gate(Sample(2, 1.9), best, 0.001, "min", GatePolicy(0.99, 4, min_delta=0.2))
    assert r.verdict == Verdict.DISCARD and "min-delta" in r.reason
    assert gate(Sample(1, 1.999), best, None, "min", POLICY).verdict == Verdict.PROMOTE
    assert gate(Sample(1, 2.0), best, 0.0, "min", POLICY).verdict == Verdict.DISCARD


def null_promotion_rate(policy: GatePolicy, trials: int = 3000, seed: int = 1) -> float:
    """Candidates with no true gain, through the whole sequential procedure: the share promoted."""
    rng = random.Random(seed)
    promoted = 0
    for _ in range(trials):
        best = [rng.gauss(0, 1) for _ in range(3)]
        runs = []
        while True:
            runs.append(rng.gauss(0, 1))
            v = gate(Sample.of(runs), Sample.of(best), 1.0, "min", policy).verdict
            if v != Verdict.MEASURE_AGAIN:
                promoted += v == Verdict.PROMOTE
                break
    return promoted / trials


def test_gate_false_promotion_rate_under_pure_noise_is_small_and_falls_with_confidence():
    loose, default, strict = (null_promotion_rate(GatePolicy(c, 4)) for c in (0.9, 0.99, 0.999))
    assert default < 0.03  # about 2 % of pure-noise candidates over up to 4 looks
    assert strict < default < loose


def rec(exp_id, commit, metric, kind=Kind.PROPOSAL, parent="base", worker="w0", status=Status.KEEP, lane="main"):
    return ExperimentRecord(exp_id=exp_id, worker=worker, agent="a", kind=kind, parent=parent, commit=commit,
                            description=f"edit {exp_id}", status=status, metric=metric, lane=lane)


def state_with(*finished, decisions=(), bests=(("base", 2.0, None),)):
    s = RunState()
    s.apply({"event": "run_started", "t": 1.0, "tag": "t", "base_commit": "base", "config": {"workers": 2}})
    for r in finished:
        s.apply({"event": "experiment_started", "t": 2.0, "assignment": Assignment(
            r.exp_id, r.worker, "a", r.kind, r.parent, None, lane=r.lane).to_dict()})
        s.apply({"event": "experiment_finished", "t": 3.0, "record": r.to_dict()})
    for exp_id, status in decisions:
        s.apply({"event": "decision", "t": 4.0, "exp_id": exp_id, "status": status})
    for commit, metric, exp_id in bests:
        s.apply({"event": "best_advanced", "t": 5.0, "commit": commit, "metric": metric, "exp_id": exp_id})
    return s


def test_state_keeps_measurements_pending_candidates_and_confirm_share():
    s = state_with(rec(1, "base", 2.00, Kind.BASELINE), rec(2, "base", 2.02, Kind.BASELINE, worker="w1"),
                   rec(3, "c3", 1.99), rec(4, "c3", 1.98, Kind.CONFIRM, parent="c3", worker="w1"),
                   decisions=[(1, "keep"), (2, "keep"), (3, "pending")])
    assert s.sample("c3") == Sample(2, pytest.approx(1.985))
    assert s.noise_model().sigma == pytest.approx(math.sqrt((0.0002 + 0.00005) / 2), rel=1e-6)
    assert s.pending == {"c3": [3]} and s.pending_commits() == ["c3"]
    assert [r.exp_id for r in s.finished_records()] == [1, 2]  # pending is not final
    assert [r.status for r in s.result_records()][-1] == Status.PENDING
    # the final decision replaces the pending one, keeps its place, and clears the pending set
    s.apply({"event": "decision", "t": 6.0, "exp_id": 3, "status": "keep"})
    s.apply({"event": "decision", "t": 6.0, "exp_id": 4, "status": "keep"})
    assert s.pending == {} and s.order == [1, 2, 3, 4]
    history = {h.exp_id: h for h in s.history()}
    assert 4 not in history and history[3].runs == 2 and history[3].confirmed
    with pytest.raises(Exception, match="decided twice"):
        s.apply({"event": "decision", "t": 7.0, "exp_id": 3, "status": "discard"})


def test_confirm_share_counts_task_seconds_of_confirmations():
    s = state_with(rec(1, "base", 2.0, Kind.BASELINE).replace(task_seconds=30.0),
                   rec(2, "c", 1.9).replace(task_seconds=30.0),
                   rec(3, "c", 1.9, Kind.CONFIRM, parent="c").replace(task_seconds=40.0))
    assert s.confirm_seconds() == (40.0, 100.0) and s.confirm_share() == pytest.approx(0.4)


def test_judge_and_confirm_targets_over_a_state():
    s = state_with(rec(1, "base", 2.00, Kind.BASELINE), rec(2, "base", 2.01, Kind.BASELINE, worker="w1"),
                   rec(3, "base", 1.99, Kind.BASELINE), rec(4, "c4", 1.99, worker="w0"),
                   rec(5, "c5", 1.996, worker="w1"),
                   decisions=[(1, "keep"), (2, "keep"), (3, "keep"), (4, "pending"), (5, "pending")])
    best = s.lane_best()
    assert judge(s, "c4", best, POLICY).verdict == Verdict.MEASURE_AGAIN
    # w0 measured c4 itself: it gets c5 first (another worker, another seed); a running confirm is skipped
    assert confirm_targets(s, "main", "w0", [], best_runs=3) == ["c5", "c4"]
    running = [Assignment(9, "w1", "a", Kind.CONFIRM, "c5", None)]
    assert confirm_targets(s, "main", "w0", running, best_runs=3) == ["c4", "c5"]  # fewest running first
    running.append(Assignment(10, "w2", "a", Kind.CONFIRM, "c5", None))
    assert confirm_targets(s, "main", "w0", running, best_runs=3) == ["c4"]  # at most 2 at once
    assert confirm_description(s, "c4") == "confirm #4 (edit 4)"


def test_confirm_targets_remeasure_a_best_promoted_on_few_runs():
    s = state_with(rec(1, "base", 2.0, Kind.BASELINE), rec(2, "c2", 1.9), decisions=[(1, "keep"), (2, "keep")],
                   bests=(("base", 2.0, None), ("c2", 1.9, 2)))
    assert confirm_targets(s, "main", "w0", [], best_runs=3) == ["c2"]
    assert confirm_targets(s, "main", "w0", [], best_runs=1) == []


def test_a_best_is_measured_more_the_more_workers_judge_candidates_against_it():
    assert best_runs_wanted(max_runs=4, workers=1) == 7
    assert best_runs_wanted(max_runs=4, workers=2) == 7
    assert best_runs_wanted(max_runs=4, workers=8) == 10
    assert best_runs_wanted(max_runs=6, workers=8) == 12
    assert best_runs_wanted(max_runs=1, workers=8) == 1  # --max-runs 1: every decision on one run
    assert best_runs_wanted(max_runs=4, workers=0) == 7  # no slot yet counts as one worker


def test_reapply_diff_shows_the_change():
    diff = reapply_diff({"train.py": "A = 1\nB = 2\n"}, {"train.py": "A = 1\nB = 3\n"})
    assert "-B = 2\n" in diff and "+B = 3\n" in diff and "a/train.py" in diff
    assert reapply_diff({"x": "same"}, {"x": "same"}) == ""


def test_claims_refuse_the_same_change_on_the_same_parent():
    files = {"train.py": "LR = 0.1\n"}
    digest = content_hash(files)
    assert digest == content_hash(dict(files)) and digest != content_hash({"train.py": "LR = 0.2\n"})
    claims = Claims(done=[(("main", "p0", "old"), 1)])
    flight = InFlight(5, "w0", "builtin", "p1", "LR 0.05 -> 0.1")
    assert claims.claim("main", "p1", digest, flight) is None
    assert claims.in_flight("main") == (flight,) and claims.in_flight("other") == ()
    assert claims.claim("main", "p1", digest, InFlight(6, "w1", "builtin", "p1", "same")) == 5
    assert claims.claim("main", "p2", digest, InFlight(7, "w1", "builtin", "p2", "other parent")) is None
    assert claims.claim("main", "p0", "old", InFlight(8, "w1", "b", "p0", "done before")) == 1
    assert claims.taken("main", "p1", digest) == 5 and claims.taken("main", "p9", digest) is None
    claims.finish(5)
    assert claims.claim("main", "p1", digest, InFlight(9, "w1", "b", "p1", "")) == 5  # finished: still taken
    assert all(f.exp_id != 5 for f in claims.in_flight("main"))
    claims.release(7)  # it never ran: free again
    assert claims.claim("main", "p2", digest, InFlight(10, "w0", "b", "p2", "")) is None
