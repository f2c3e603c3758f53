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
