"""`swarm.table`: the one table of a run's experiments that report, status and the dashboard read."""

from __future__ import annotations

import pytest

from swarm.decisions import Assignment
from swarm.exports import tsv_rows
from swarm.records import Kind, Status, Usage
from swarm.table import EXPERIMENT_COLUMNS, GROUP_COLUMNS, RunTable, records_of
from tests.test_report import T0, Run, shared_run


def _with_extras(run: Run) -> Run:
    """A confirmation of #3, a best advance, an agent outage and one experiment still running."""
    run.exp("a", Status.KEEP, 1.802, at=450, kind=Kind.CONFIRM)
    run.events[-2]["record"]["commit"] = "c3"  # the confirmation measured #3's commit again
    run.events.append({"event": "best_advanced", "t": T0 + 100, "commit": "c3", "metric": 1.8, "exp_id": 3,
                       "previous_commit": "base", "previous_metric": 2.0, "lane": "main"})
    run.events.append({"event": "agent_error", "t": T0 + 500, "worker": "w1", "agent": "b", "lane": "main",
                       "exp_id": None, "error": "rate limited",
                       "usage": {"calls": 2, "tokens_in": 40, "tokens_out": 0, "cost_usd": 0.25}})
    a = Assignment(run.n + 1, "w1", "b", Kind.PROPOSAL, "c3", 1.8, description="still running", started_at=T0 + 600)
    run.events.append({"event": "experiment_started", "t": T0 + 600, "assignment": a.to_dict()})
    return run


def test_one_row_per_decided_experiment_like_results_tsv():
    run = _with_extras(shared_run())
    table = RunTable.from_events(run.events)
    df = table.experiments
    assert list(df.columns) == list(EXPERIMENT_COLUMNS)
    s = table.state
    assert list(df["exp_id"]) == [r.exp_id for r in s.result_records()]  # decision order, as the export
    tsv = tsv_rows(s.result_records(), s.measurements, s.noise_model().sigma)
    for row, line in zip(records_of(df), tsv):
        assert line[0] == row["commit"][:7] and line[3] == row["status"] and line[12] == str(row["exp_id"])
        assert line[1] == (f"{row['metric']:.6f}" if row["metric"] is not None else "0.000000")
        assert line[5] == str(row["runs"])
        assert line[6] == (f"{row['mean']:.6f}" if row["mean"] is not None else "")
        assert line[7] == (f"{row['stderr']:.6f}" if row["stderr"] is not None else "")
        assert line[16] == f"{row['cost_usd']:.4f}" and line[17] == str(row["tokens"])
    third = df.set_index("exp_id").loc[3]
    assert third["runs"] == 2 and third["mean"] == pytest.approx(1.801)  # #3 and its confirmation
    assert third["delta"] == pytest.approx(-0.2) and third["tokens"] == 1200 and third["cost_usd"] == 0.5
    assert df.set_index("exp_id").loc[5]["runs"] == 0  # a crash: never measured


def test_counts_running_errors_and_bests():
    table = RunTable.from_events(_with_extras(shared_run()).events)
    counts = table.counts()
    assert counts == {"keep": 5, "discard": 1, "crash": 1, "invalid": 1, "interrupted": 1, "timeout": 1}
    assert list(table.running["description"]) == ["still running"] and list(table.running["worker"]) == ["w1"]
    assert table.agent_errors["cost_usd"].sum() == 0.25 and list(table.agent_errors["error"]) == ["rate limited"]
    assert list(table.bests["exp_id"]) == [3] and table.bests["metric"].iloc[0] == 1.8
    assert list(table.recent(2)["exp_id"]) == list(table.experiments["exp_id"])[-2:]
    assert table.recent(0).empty
    assert table.metric == "val_bpb" and table.direction == "min"


def test_group_table_is_the_reports_rows():
    table = RunTable.from_events(_with_extras(shared_run()).events)
    frame = table.group_table("agent", target=1.85)
    assert list(frame.columns) == [*GROUP_COLUMNS, "curve"]
    rows = {r["group"]: r for r in records_of(frame)}
    assert list(frame["group"]) == ["b", "a"]  # best gain first
    assert rows["a"]["experiments"] == 4  # the confirmation and the baseline are not the agent's work
    assert rows["b"]["agent_errors"] == 1 and rows["b"]["cost_usd"] == pytest.approx(0.25)
    assert rows["a"]["time_to_target_s"] == 100 and rows["a"]["curve"] == ((0.0, 2.0), (100.0, 1.8))
    with pytest.raises(ValueError):
        table.group_table("colour")


def test_empty_journal_and_a_run_without_experiments():
    empty = RunTable.from_events([])
    assert empty.experiments.empty and list(empty.experiments.columns) == list(EXPERIMENT_COLUMNS)
    assert empty.counts() == {} and empty.group_table().empty
    started = RunTable.from_events(Run().events)
    assert started.experiments.empty and started.running.empty and started.group_table("worker").empty
    paid = Usage(calls=1, tokens_in=5, tokens_out=5, cost_usd=0.01)
    one = RunTable.from_events(Run().baseline().exp("a", Status.DISCARD, 2.1, at=30, usage=paid).events)
    assert one.counts() == {"keep": 2, "discard": 1} and one.experiments["tokens"].sum() == 10
