"""Prefetch, rebase and agent pacing without Ray: the pure merge, the plain Worker, the replay."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from swarm import gitops
from swarm.agents import parse_agent_spec
from swarm.decisions import Assignment
from swarm.journal import EventType
from swarm.merge import merge3_text, rebase_files
from swarm.pacing import outage_delay, over_budget, prefetch_enabled
from swarm.prefetch import Attempt, Prefetcher, ask_agent, carry_over
from swarm.records import AgentFailure, Kind, Proposal, Status, Usage
from swarm.state import replay
from swarm.worker import Worker, WorkerSpec
from tests.standin import constants, git, make_standin_repo, standin_task
from tests.standin_agents import set_constant

AGENT = "py:tests.standin_agents:ScriptedAgent"
BASE = "A = 1\n\nB = 2\n\nC = 3\n"


# ---- the pure three-way merge ------------------------------------------------------------


def test_merge_takes_both_sides_separate_changes():
    ours = BASE.replace("A = 1", "A = 10")
    theirs = BASE.replace("C = 3", "C = 30")
    assert merge3_text(BASE, ours, theirs) == "A = 10\n\nB = 2\n\nC = 30\n"


def test_merge_same_change_on_both_sides_once():
    both = BASE.replace("B = 2", "B = 5")
    assert merge3_text(BASE, both, both) == both


def test_merge_conflict_on_the_same_line_is_none():
    assert merge3_text(BASE, BASE.replace("B = 2", "B = 5"), BASE.replace("B = 2", "B = 6")) is None


def test_merge_adjacent_changes_merge_unlike_git():
    base = "A = 1\nB = 2\n"
    assert merge3_text(base, "A = 9\nB = 2\n", "A = 1\nB = 8\n") == "A = 9\nB = 8\n"
    assert rebase_files({"t.py": base}, {"t.py": "A = 9\nB = 2\n"}, {"t.py": "A = 1\nB = 8\n"}) == {
        "t.py": "A = 9\nB = 8\n"}


def test_merge_insertions_deletions_and_trailing_lines():
    ours = "# header\n" + BASE + "D = 4\n"  # insert at both ends
    theirs = BASE.replace("B = 2\n\n", "")  # delete in the middle
    assert merge3_text(BASE, ours, theirs) == "# header\nA = 1\n\nC = 3\nD = 4\n"
    assert merge3_text(BASE, BASE, theirs) == theirs and merge3_text(BASE, ours, BASE) == ours
    assert merge3_text("", "x\n", "") == "x\n"
    assert merge3_text("a\n", "a\nb\n", "a\nc\n") is None  # both append different lines


def test_rebase_files_per_path_and_conflicts():
    base = {"t.py": BASE, "u.py": "u = 0\n"}
    proposed = {"t.py": BASE.replace("A = 1", "A = 7")}
    new = {"t.py": BASE.replace("C = 3", "C = 9"), "u.py": "u = 1\n"}
    assert rebase_files(base, proposed, new) == {"t.py": "A = 7\n\nB = 2\n\nC = 9\n"}
    assert rebase_files(base, {"t.py": BASE.replace("C = 3", "C = 4")}, new) is None
    assert rebase_files(base, {"new.txt": "hi\n"}, new) == {"new.txt": "hi\n"}


def test_carry_over_as_is_rebased_or_ask_again():
    p = Proposal("A up", files={"t.py": BASE.replace("A = 1", "A = 7")})
    attempt = Attempt(p, None, "old", {"t.py": BASE})
    assert carry_over(attempt, "old", {"t.py": "whatever"}) is p  # same base: as is
    moved = carry_over(attempt, "new", {"t.py": BASE.replace("C = 3", "C = 9")})
    assert moved.files == {"t.py": "A = 7\n\nB = 2\n\nC = 9\n"} and moved.description == "A up"
    assert carry_over(attempt, "new", {"t.py": BASE.replace("A = 1", "A = 2")}) is None  # conflict
    assert carry_over(attempt, "new", {"t.py": BASE.replace("A = 1", "A = 7")}) is None  # already in
    bad = Attempt(Proposal("x", error="did not apply"), None, "old", {"t.py": BASE})
    assert carry_over(bad, "new", {"t.py": BASE}).error == "did not apply"
    # a re-apply assignment never takes a free proposal, nor the other way round
    assert carry_over(attempt, "old", {"t.py": BASE}, reapply=12) is None
    made_for_12 = Attempt(p, None, "old", {"t.py": BASE}, reapply=12)
    assert carry_over(made_for_12, "old", {"t.py": BASE}, reapply=12) is p
    assert carry_over(made_for_12, "old", {"t.py": BASE}) is None


def test_ask_agent_records_which_reapply_it_answered():
    from swarm.records import Reapply

    class Echo:
        def propose(self, ctx):
            return Proposal("x", files={"t.py": "x\n"})

    class Ctx:
        baseline_commit, files, reapply = "c0", {"t.py": BASE}, Reapply(12, "A 1 -> 2", "")

    class Plain:
        baseline_commit, files = "c0", {"t.py": BASE}

    assert ask_agent(Echo(), Ctx()).reapply == 12 and ask_agent(Echo(), Plain()).reapply is None


# ---- pacing -------------------------------------------------------------------------------


def test_outage_delay_doubles_up_to_the_cap():
    assert [outage_delay(n, 5, 300) for n in range(0, 9)] == [0, 5, 10, 20, 40, 80, 160, 300, 300]
    assert outage_delay(10_000, 5, 300) == 300


def test_over_budget_and_prefetch_rules():
    assert not over_budget(1.0, None) and not over_budget(0.99, 1.0) and over_budget(1.0, 1.0)
    assert prefetch_enabled(True, "llm", None) and not prefetch_enabled(False, "llm", None)
    assert not prefetch_enabled(True, "command", True)  # edits the worktree: never
    assert not prefetch_enabled(True, "builtin", None) and prefetch_enabled(True, "python", True)


def test_ask_agent_sorts_outcomes():
    class Outage:
        def propose(self, ctx):
            from swarm.errors import AgentError

            exc = AgentError("down")
            exc.usage = Usage(calls=2, cost_usd=0.01)
            raise exc

    class Buggy:
        def propose(self, ctx):
            raise KeyError("oops")

    class Ctx:
        baseline_commit, files = "c0", {"t.py": BASE}

    a = ask_agent(Outage(), Ctx(), prefetched=True)
    assert a.proposal is None and a.failure.error == "down" and a.failure.usage.cost_usd == 0.01
    assert a.failure.prefetched and a.usage.calls == 2 and not a.failure.permanent

    class BadKey:
        def propose(self, ctx):
            from swarm.errors import AgentError

            raise AgentError("401 bad key", permanent=True)

    assert ask_agent(BadKey(), Ctx()).failure.permanent
    b = ask_agent(Buggy(), Ctx())
    assert b.failure is None and "KeyError" in b.proposal.error


def test_prefetcher_runs_in_the_background():
    class Slow:
        def propose(self, ctx):
            time.sleep(0.3)
            return Proposal("slow", files={"t.py": "x\n"})

    class Ctx:
        baseline_commit, files = "c0", {}

    pf = Prefetcher()
    assert pf.take() is None
    t0 = time.monotonic()
    pf.start(Slow(), Ctx())
    assert time.monotonic() - t0 < 0.2 and pf.pending
    got = pf.take()
    assert got.prefetched and got.proposal.description == "slow" and got.seconds >= 0.3 and not pf.pending


# ---- the plain Worker ---------------------------------------------------------------------


@pytest.fixture()
def repo(tmp_path):
    return make_standin_repo(tmp_path / "task", sleep=0.6)


def make_worker(repo: Path, steps, prefetch=True) -> Worker:
    base = git(repo, "rev-parse", "HEAD")
    checkout = repo / ".swarm" / "t" / "worktrees" / "w0"
    gitops.ensure_worktree(gitops.open_repo(repo), checkout, "swarm/t/w0", base)
    spec = WorkerSpec(
        name="w0", tag="t", task=standin_task(timeout=10),
        agent=parse_agent_spec(AGENT, {"steps": steps, "prefetch": prefetch}),
        checkout=str(checkout), log_dir=str(repo / ".swarm" / "t" / "logs"), transport="worktree",
    )
    w = Worker(spec)
    w.setup()
    return w


def assign(exp_id: int, parent: str, kind=Kind.PROPOSAL, metric=2.0) -> Assignment:
    return Assignment(exp_id=exp_id, worker="w0", agent="scripted", kind=kind, parent=parent,
                      parent_metric=metric, seed=exp_id)


def commit_best(repo: Path, **values) -> str:
    """A commit on a side branch with some constants changed: someone else's win."""
    text = git(repo, "show", "HEAD:train.py") + "\n"
    for name, value in values.items():
        text = set_constant(text, name, value)
    wt = repo.parent / "other"
    if not wt.exists():
        git(repo, "worktree", "add", "-q", "-b", "other", str(wt), "HEAD")
    (wt / "train.py").write_text(text)
    git(wt, "commit", "-qam", f"other win {values}")
    return git(wt, "rev-parse", "HEAD")


def test_next_proposal_is_made_while_the_task_runs_and_rebased(repo):
    base = git(repo, "rev-parse", "HEAD")
    w = make_worker(repo, [{"X": 1.0}, {"Y": -1.0}])
    first = w.run(assign(1, base)).record
    assert first.status == Status.KEEP and not first.prefetched and first.proposed_on == ""
    assert w.prefetcher.pending  # proposal 2 was asked for while experiment 1 ran
    new_best = commit_best(repo, X=2.0)  # the best moved meanwhile (another worker's win)
    second = w.run(assign(2, new_best, metric=1.9)).record
    assert second.prefetched and second.proposed_on == base and second.parent == new_best
    assert first.started_at <= second.proposed_at <= first.finished_at  # made during experiment 1
    text = git(repo, "show", f"{second.commit}:train.py")
    assert constants(text)["X"] == 2.0 and constants(text)["Y"] == -1.0  # rebased: both changes
    assert second.metric == pytest.approx(1.1, abs=0.001) and second.description == "Y=-1.0"
    assert w.agent.contexts[1].baseline_commit == base  # it saw the best of its time


def test_conflicting_prefetch_is_asked_again_with_its_cost(repo):
    base = git(repo, "rev-parse", "HEAD")
    w = make_worker(repo, [{"Y": -0.5}, {"X": 1.0}, {"Y": -1.0}])
    w.run(assign(1, base))
    new_best = commit_best(repo, X=2.0)  # the prefetched X=1.0 now conflicts
    second = w.run(assign(2, new_best, metric=1.9), prefetch_next=False).record
    assert not second.prefetched and second.description == "Y=-1.0" and second.proposed_on == ""
    assert second.usage.calls == 2 and second.usage.cost_usd == pytest.approx(0.002)  # the wasted one counts
    assert w.agent.contexts[2].baseline_commit == new_best
    assert not w.prefetcher.pending  # prefetch_next=False: nothing asked for


def test_a_crash_reaches_the_next_proposal_not_one_late(repo):
    """The prefetch made while experiment 1 ran could not know that it would crash: the next
    proposal is asked again, with the crash in its context (the dropped prefetch's cost counts)."""
    base = git(repo, "rev-parse", "HEAD")
    w = make_worker(repo, [{"CRASH": 1}, {"X": 1.0}, {"Y": -1.0}])
    first = w.run(assign(1, base)).record
    assert first.status == Status.CRASH and w.agent.contexts[1].last_failure is None  # the prefetch
    second = w.run(assign(2, base), prefetch_next=False).record
    assert not second.prefetched and second.description == "Y=-1.0"
    assert "crash requested" in w.agent.contexts[2].last_failure
    assert second.usage.calls == 2  # the stale prefetch was paid for too


def test_agent_outage_is_no_experiment(repo):
    base = git(repo, "rev-parse", "HEAD")
    w = make_worker(repo, [{"__outage__": "503"}, {"X": 1.0}], prefetch=False)
    result = w.run(assign(1, base))
    assert result.record is None and len(result.agent_errors) == 1
    failure = result.agent_errors[0]
    assert "scripted outage: 503" in failure.error and failure.usage.cost_usd == 0.0005
    assert not (repo / ".swarm" / "t" / "logs" / "1.log").exists()  # nothing ran
    assert git(repo, "rev-parse", "swarm/t/w0") == base  # nothing committed
    assert w.run(assign(1, base)).record.status == Status.KEEP  # asked again: same id, now it answers


def test_prefetch_hitting_an_outage_reports_it_with_the_next_assignment(repo):
    base = git(repo, "rev-parse", "HEAD")
    w = make_worker(repo, [{"X": 1.0}, {"__outage__": "429"}, {"Y": -1.0}])
    w.run(assign(1, base))
    result = w.run(assign(2, base))
    assert result.record is None and result.agent_errors[0].prefetched
    assert w.run(assign(2, base)).record.description == "Y=-1.0"


def test_baseline_run_prefetches_too(repo):
    base = git(repo, "rev-parse", "HEAD")
    w = make_worker(repo, [{"X": 1.0}])
    w.run(assign(1, base, Kind.BASELINE, metric=None))
    assert w.prefetcher.pending
    rec = w.run(assign(2, base)).record
    assert rec.prefetched and rec.proposed_on == "" and rec.description == "X=1.0"


def test_builtin_and_plain_scripted_agents_do_not_prefetch(repo):
    w = make_worker(repo, [{"X": 1.0}], prefetch=False)
    w.run(assign(1, git(repo, "rev-parse", "HEAD")))
    assert not w.prefetch_on and not w.prefetcher.pending


# ---- the replay: withdrawn assignments and the cost total ---------------------------------


def test_replay_withdraws_assignments_reuses_ids_and_counts_failed_usage():
    started = {"event": "run_started", "tag": "t", "base_commit": "c0", "config": {"workers": 2}}

    def start(i, w):
        a = Assignment(exp_id=i, worker=w, agent="m", kind=Kind.PROPOSAL, parent="c0", parent_metric=2.0)
        return {"event": "experiment_started", "assignment": a.to_dict()}

    failure = AgentFailure("down", Usage(calls=1, tokens_in=5, cost_usd=0.25))
    events = [started, start(1, "w0"), start(2, "w1"),
              {"event": EventType.AGENT_ERROR.value, "worker": "w0", "exp_id": 1, "retry_in": 5.0, **failure.to_dict()}]
    s = replay(events)
    assert sorted(s.assignments) == [2] and s.next_exp_id == 1  # the withdrawn id is handed out again
    assert s.agent_errors == 1 and s.total_usage().cost_usd == pytest.approx(0.25)
    s.apply(start(1, "w1"))
    assert s.next_exp_id == 3


def test_merge_versions_combines_per_path_with_missing_files():
    from swarm.merge import merge_versions

    ours, theirs = BASE.replace("A = 1", "A = 10"), BASE.replace("C = 3", "C = 30")
    assert merge_versions({"t.py": BASE}, {"t.py": ours}, {"t.py": theirs}, ["t.py"]) == {
        "t.py": "A = 10\n\nB = 2\n\nC = 30\n"}
    assert merge_versions({"t.py": BASE}, {"t.py": ours}, {"t.py": BASE.replace("A = 1", "A = 2")}, ["t.py"]) is None
    assert merge_versions({}, {"n.py": "x\n"}, {"n.py": "x\n"}, ["n.py", "gone.py"]) == {"n.py": "x\n"}
    assert merge_versions({"n.py": "x\n"}, {"n.py": "y\n"}, {}, ["n.py"]) is None  # edited vs deleted
