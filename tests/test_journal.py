"""The journal: durable appends, torn last lines, corruption, concurrent writers, replay."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from swarm.errors import JournalError
from swarm.journal import EventType, Journal, read_events
from swarm.state import replay


def test_append_and_read_round_trip(tmp_path):
    j = Journal(tmp_path / "run" / "journal.jsonl")
    j.append(EventType.NOTE, text="a")
    j.append("note", text="b", value=float("nan"))
    events = j.read()
    assert [e["text"] for e in events] == ["a", "b"]
    assert all(e["event"] == "note" and e["t"] > 0 for e in events)
    assert events[1]["value"] == "nan"  # strict JSON: non-finite floats become strings
    with pytest.raises(ValueError):
        j.append("no_such_event")


def test_torn_last_line_is_ignored_then_cut(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.append(EventType.NOTE, text="whole")
    with open(path, "ab") as f:
        f.write(b'{"event": "note", "text": "to')  # crash mid-write
    assert [e["text"] for e in read_events(path)] == ["whole"]
    j.append(EventType.NOTE, text="next")
    assert [e["text"] for e in read_events(path)] == ["whole", "next"]
    assert path.read_bytes().count(b"\n") == 2


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text('{"event": "note"}\nnot json\n{"event": "note"}\n')
    with pytest.raises(JournalError, match="line 2"):
        read_events(path)


def test_missing_journal_reads_empty(tmp_path):
    assert read_events(tmp_path / "nope.jsonl") == []


def _writer(path, n, who):
    j = Journal(path)
    for i in range(n):
        j.append(EventType.NOTE, text=f"{who}-{i}", pad="x" * 2000)


def test_concurrent_writers_never_interleave(tmp_path):
    path = tmp_path / "journal.jsonl"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, 40, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    events = read_events(path)
    assert len(events) == 160
    assert len({e["text"] for e in events}) == 160
    for line in path.read_text().splitlines():
        json.loads(line)


def _exp(exp_id, status="keep", metric=1.0, kind="proposal", parent="p", commit="c"):
    record = {"exp_id": exp_id, "worker": "w0", "agent": "a", "kind": kind, "parent": parent, "commit": commit,
              "description": "d", "status": status, "metric": metric}
    assignment = {"exp_id": exp_id, "worker": "w0", "agent": "a", "kind": kind, "parent": parent}
    return assignment, record


def test_replay_rejects_double_recording(tmp_path):
    a, r = _exp(1)
    events = [
        {"event": "run_started", "tag": "t", "base_commit": "b", "config": {"workers": 1}},
        {"event": "experiment_started", "assignment": a},
        {"event": "experiment_finished", "record": r},
        {"event": "decision", "exp_id": 1, "status": "discard"},
    ]
    s = replay(events)
    assert s.records[1].status.value == "discard" and s.verdicts[1].status.value == "keep"
    with pytest.raises(JournalError, match="finished twice"):
        replay(events + [{"event": "experiment_finished", "record": r}])
    with pytest.raises(JournalError, match="started twice"):
        replay(events + [{"event": "experiment_started", "assignment": a}])


def test_lost_combination_goes_back_to_the_queue():
    """A started combination that ends interrupted (or lost with its worker) is queued again,
    also in a replay (--resume); one that really ran is not."""
    queued = {"event": "combination_queued", "combo_id": 1, "parent": "p1", "parent_metric": 1.5,
              "files": {"t.py": "x\n"}, "description": "combine", "sources": [2, 3], "lane": "main"}

    def started(exp_id):
        a = {"exp_id": exp_id, "worker": "w0", "agent": "a", "kind": "combination", "parent": "p1", "combo_id": 1}
        return {"event": "experiment_started", "assignment": a}

    def finished(exp_id, status, **extra):
        r = {"exp_id": exp_id, "worker": "w0", "agent": "a", "kind": "combination", "parent": "p1", "commit": "",
             "description": "combine", "status": status, "metric": None}
        return {"event": "experiment_finished", "record": r, **extra}

    head = [{"event": "run_started", "tag": "t", "base_commit": "b", "config": {"workers": 1}}, queued, started(4)]
    s = replay(head)
    assert s.queue == []
    s.apply(finished(4, "interrupted"))
    assert [c["combo_id"] for c in s.queue] == [1] and s.queue[0]["files"] == {"t.py": "x\n"}
    s.apply(started(5))  # handed out again, once
    assert s.queue == []
    s.apply(finished(5, "crash", lost=True))  # its worker actor died under it
    assert [c["combo_id"] for c in s.queue] == [1]
    assert replay(head + [finished(4, "interrupted"), started(5), finished(5, "crash", lost=True)]).queue == s.queue
    ran = replay(head + [finished(4, "crash")])  # the combination itself crashed: it stands
    assert ran.queue == []


def test_torn_last_line_with_newline_is_cut_before_the_next_append(tmp_path):
    """Newline written, body torn: the reader ignores that line, and the writer cuts exactly it, so
    the next append does not bury it mid-file (which would make the journal unreadable)."""
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.append(EventType.NOTE, text="whole")
    with open(path, "ab") as f:
        f.write(b'{"event": "note", "text": "to\n')
    assert [e["text"] for e in read_events(path)] == ["whole"]
    j.append(EventType.NOTE, text="next")
    assert [e["text"] for e in read_events(path)] == ["whole", "next"]
    assert b'"to' not in path.read_bytes() and path.read_bytes().count(b"\n") == 2


@pytest.mark.parametrize("tail", [
    b'{"event": "note", "text": "\xc3\n',  # torn inside a multi-byte character
    b"\n\n",  # blank lines are not events and not torn: kept
    b'{"event": "note", "text": "torn"',  # no newline, and valid JSON but for it
])
def test_writer_repairs_exactly_what_the_reader_ignores(tmp_path, tail):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.append(EventType.NOTE, text="whole")
    with open(path, "ab") as f:
        f.write(tail)
    assert [e["text"] for e in read_events(path)] == ["whole"]
    j.append(EventType.NOTE, text="next")
    assert [e["text"] for e in read_events(path)] == ["whole", "next"]


def test_only_one_torn_line_is_tolerated(tmp_path):
    """A bad line before the torn last one is corruption, before and after the next append."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"event": "note", "text": "a"}\nnot json\n{"event": "no')
    with pytest.raises(JournalError, match="line 2"):
        read_events(path)
    Journal(path).append(EventType.NOTE, text="b")
    with pytest.raises(JournalError, match="line 2"):
        read_events(path)


def _small_run(j: Journal) -> None:
    """A finished two-experiment run, as a coordinator writes it."""
    j.append(EventType.RUN_STARTED, tag="torn", base_commit="b" * 40, config={"workers": 1, "wave_size": 1})
    for exp_id, kind, metric in ((1, "baseline", 2.0), (2, "proposal", 1.5)):
        a, r = _exp(exp_id, metric=metric, kind=kind, commit=f"{exp_id}" * 40, parent="b" * 40)
        j.append(EventType.EXPERIMENT_STARTED, assignment=a)
        j.append(EventType.EXPERIMENT_FINISHED, record=r)
        j.append(EventType.DECISION, exp_id=exp_id, status="keep", reason="")
        if kind == "baseline":
            j.append(EventType.BASELINE_MEASURED, commit="b" * 40, metric=metric, noise=None, exp_ids=[1])
        j.append(EventType.BEST_ADVANCED, commit=r["commit"] if kind != "baseline" else "b" * 40, metric=metric,
                 exp_id=None if kind == "baseline" else exp_id, previous_commit=None, previous_metric=None)
    j.append(EventType.RUN_STOPPED, reason="max_experiments")


def test_run_with_a_torn_newline_tail_stays_usable(tmp_path):
    """Through the commands: `status` reads the run, and a resume's append keeps it readable."""
    from swarm.commands.status import status_text
    from tests.standin import make_standin_repo

    repo = make_standin_repo(tmp_path / "task")
    path = repo / ".swarm" / "torn" / "journal.jsonl"
    j = Journal(path)
    _small_run(j)
    with open(path, "ab") as f:
        f.write(b'{"event":"experiment_started","assignment":{"exp_id":3,"wor\n')  # killed mid-line
    text = status_text(str(repo), "torn")
    assert "run torn: stopped (max_experiments)" in text and "best val_bpb 1.500000" in text
    j.append(EventType.RUN_RESUMED, config={"workers": 1})
    j.append(EventType.NOTE, text="after the resume")
    s = replay(read_events(path))
    assert s.sessions == 2 and not s.stopped and s.notes == ["after the resume"] and sorted(s.records) == [1, 2]
    assert b'"exp_id":3' not in path.read_bytes()
    assert "run torn: " in status_text(str(repo), "torn")


def test_interrupted_experiments_do_not_count_towards_the_limit():
    """--max-experiments counts what finished (crashes and lost ones included) and what runs now;
    experiments a stop interrupted are not counted (they are run again)."""
    head = [{"event": "run_started", "tag": "t", "base_commit": "b", "config": {"workers": 2}}]
    events = list(head)
    for exp_id, status in ((1, "keep"), (2, "interrupted"), (3, "crash"), (4, "interrupted"), (5, None)):
        a, r = _exp(exp_id, status=status or "keep")
        events.append({"event": "experiment_started", "assignment": a})
        if status is not None:  # #5 is still running
            events.append({"event": "experiment_finished", "record": r, **({"lost": True} if exp_id == 3 else {})})
    s = replay(events)
    assert len(s.assignments) == 5 and s.counted_experiments() == 3  # #1, #3 and the running #5
    s.apply({"event": "experiment_finished", "record": _exp(5, status="interrupted")[1]})
    assert s.counted_experiments() == 2
