"""The LLM agent through the real swarm: 2 Ray workers (fake GPUs), the fake OpenAI-compatible
server on 127.0.0.1 scripted with good edits of the stand-in train.py, malformed edits, a 429, a
500 outage for a few seconds and slow replies. No network.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
if importlib.util.find_spec("litellm") is None:
    pytest.skip("litellm is not installed", allow_module_level=True)

from swarm.agents import parse_agent_spec  # noqa: E402
from swarm.config import SwarmConfig  # noqa: E402
from swarm.coordinator import Coordinator  # noqa: E402
from swarm.journal import read_events  # noqa: E402
from swarm.records import Kind, Status  # noqa: E402
from swarm.state import replay  # noqa: E402
from tests.fake_llm_server import FakeLLMServer, Reply, Request  # noqa: E402
from tests.standin import check_invariants, make_standin_repo, standin_task  # noqa: E402

KEY_VAR = "SWARM_LLM_TEST_KEY"
KEY = "sk-swarm-test-4f8a1c2e9b7d"
OPTION_KEY = "sk-option-key-0a1b2c3d4e5f"
PRICE = dict(price_in_per_mtok=1.0, price_out_per_mtok=2.0)  # 1000 in + 500 out tokens: $0.002 a call
CALL_USD = 0.002
MALFORMED = "Description: wrong line\n\ntrain.py\n<<<<<<< SEARCH\nX = 42.0\n=======\nX = 43.0\n>>>>>>> REPLACE\n"
_LINE = re.compile(r"^(X|Y) = ([^\s#]+)  # optimum at (-?\d+)$", re.M)


def good_edit(req: Request, turn: int = 0) -> str:
    """A SEARCH/REPLACE that moves one constant of the train.py in the prompt towards its optimum
    (X on even turns, Y on odd ones, while they are not there yet)."""
    text = req.messages[1]["content"] if len(req.messages) > 1 else req.text
    found = {m.group(1): (m.group(0), float(m.group(2)), float(m.group(3))) for m in _LINE.finditer(text)}
    order = ("X", "Y") if turn % 2 == 0 else ("Y", "X")
    for name in order:
        line, value, best = found[name]
        if abs(value - best) > 1e-9:
            step = 0.5 if name == "X" else 0.25  # several steps each: prefetched edits often rebase cleanly
            new = value + max(-step, min(step, best - value))
            break
    else:
        name, (line, value, best) = "X", found["X"]
        new = value + 0.25 * (1 + turn % 3)  # at the optimum already: a step that will be discarded
    return (f"Description: move {name} from {value} to {new}\n\n"
            f"train.py\n<<<<<<< SEARCH\n{line}\n=======\n{line.replace(f'= {_raw(line)}', f'= {new!r}', 1)}\n"
            ">>>>>>> REPLACE\n")


def _raw(line: str) -> str:
    return line.split("=", 1)[1].split("#", 1)[0].strip()


class Script:
    """Replies by plan for each first-round request; follow-up rounds (an edit error sent back)
    always get the malformed edit again. "outage" answers 500 to everything for `outage_s`."""

    def __init__(self, plan, outage_s: float = 3.0):
        self.plan = list(plan)
        self.outage_s = outage_s
        self.outage_until = 0.0
        self.outages: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.turn = 0

    def __call__(self, req: Request):
        if len(req.messages) > 2:  # a follow-up round: the last reply did not apply
            return MALFORMED
        with self.lock:
            now = time.time()
            if now < self.outage_until:
                return Reply(status=500)
            item = self.plan.pop(0) if self.plan else "good"
            self.turn += 1
            turn = self.turn
            if item == "outage":
                self.outage_until = now + self.outage_s
                self.outages.append((now, self.outage_until))
                return Reply(status=500)
        if item == "good":
            return good_edit(req, turn)
        if item == "slow":
            return Reply(content=good_edit(req, turn), delay=1.5)
        return item


@pytest.fixture(scope="module")
def cluster():
    os.environ[KEY_VAR] = KEY  # the user's exported key: every actor inherits it, no task may see it
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    os.environ.pop(KEY_VAR, None)


def llm_config(repo: Path, tag: str, server: FakeLLMServer, options: dict, **kw) -> SwarmConfig:
    opts = dict(api_base=server.api_base, num_retries=1, retry_base_delay=0.05, timeout=10, max_edit_rounds=2,
                **PRICE)
    opts.update(options)
    task = standin_task(timeout=20, env={"STANDIN_FORBIDDEN": KEY_VAR})
    return SwarmConfig(repo=repo, tag=tag, task=task, agents=(parse_agent_spec("openai/fake", opts),), workers=2,
                       agent_backoff=0.3, agent_backoff_max=1.0, baseline_runs=1, max_runs=1, **kw)


def _all_text(run: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in run.rglob("*") if p.is_file() and p.suffix != ".parquet")


def test_llm_swarm_edits_failures_outage_cost_and_secrets(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.5)
    script = Script(["good", MALFORMED, Reply(status=429, headers={"Retry-After": "0"}), "good", "slow", "outage"])
    lines: list[str] = []
    with FakeLLMServer(default=script) as server:
        cfg = llm_config(repo, "llm", server, {"api_key_env": KEY_VAR}, max_experiments=12)
        summary = Coordinator(cfg, out=lines.append).run()
    assert summary.reason == "max_experiments" and summary.experiments == 12
    check_invariants(repo, "llm")
    run = repo / ".swarm" / "llm"
    events = read_events(run / "journal.jsonl")
    s = replay(events)
    records = list(s.records.values())
    proposals = [r for r in records if r.kind == Kind.PROPOSAL]
    assert not s.counts().get("crash"), [r.error for r in records]  # exit 3 would mean the task saw the key

    # good edits applied and measured; the malformed one recorded invalid after its rounds
    measured = [r for r in proposals if r.status in (Status.KEEP, Status.DISCARD)]
    duplicates = [r for r in proposals if r.status == Status.DUPLICATE]  # the fake model ignores what runs
    assert len(measured) + len(duplicates) >= 5 and any(r.status == Status.KEEP for r in measured)
    assert all("the same change as #" in r.error and not r.task_seconds for r in duplicates)
    assert all(r.agent == "openai/fake" and r.description.startswith("move ") for r in measured)
    assert s.best.metric < s.baseline_metric - 0.3
    invalid = [r for r in proposals if r.status == Status.INVALID]
    assert len(invalid) == 1 and "edit did not apply after 2 round(s)" in invalid[0].error
    assert invalid[0].usage.calls == 2

    # cost and tokens: every call priced by the override, in the journal and in results.tsv
    for r in proposals:
        assert r.usage.calls >= 1 and r.usage.tokens_in == 1000 * r.usage.calls
        assert r.usage.cost_usd == pytest.approx(CALL_USD * r.usage.calls)
    rows = [line.split("\t") for line in (run / "results.tsv").read_text().splitlines()]
    cost_col = rows[0].index("cost_usd")
    assert sum(float(row[cost_col]) for row in rows[1:]) == pytest.approx(sum(r.usage.cost_usd for r in records), abs=1e-3)
    assert s.total_usage().cost_usd >= CALL_USD * len(proposals)

    # the 429 was retried inside the agent; the outage made workers wait, not the run end
    assert not script.plan  # every planned reply was served, the 429 and the slow one included
    errors = [e for e in events if e["event"] == "agent_error"]
    assert errors and all("500" in e["error"] and e["exp_id"] is not None for e in errors)
    assert any("unavailable" in e.get("text", "") for e in events if e["event"] == "note")
    assert any("agent error" in line and "nothing ran" in line for line in lines)
    from swarm.commands.run import format_summary

    text = format_summary(summary)
    assert f"agents: ${summary.usage.cost_usd:.4f}" in text and "failed attempt(s)" in text
    assert summary.agent_errors == len([e for e in events if e["event"] == "agent_error"])
    outage_end = script.outages[0][1]
    after = [r for r in measured if r.started_at > outage_end]
    assert after, "no experiment was measured after the outage"
    withdrawn = {e["exp_id"] for e in errors}
    assert withdrawn <= set(s.records)  # withdrawn ids were handed out again and recorded once

    # prefetch: some worker's agent started on a proposal while its previous experiment ran (when
    # the reply arrives depends on the load: a slow or retried reply may land after that run ends)
    def overlapped(r):
        before = [p for p in records if p.worker == r.worker and p.finished_at <= r.started_at + 1e-6]
        prev = max(before, key=lambda p: p.finished_at, default=None)
        asked_at = r.proposed_at - r.agent_seconds
        return prev is not None and prev.started_at - 0.05 <= asked_at <= prev.finished_at

    table = "\n".join(f"{r.exp_id} {r.worker} {r.kind.value} {r.status.value} {r.started_at % 1000:.2f} "
                      f"{r.finished_at % 1000:.2f} pre={r.prefetched} at={r.proposed_at % 1000:.2f} "
                      f"on={r.proposed_on[:7]} agent_s={r.agent_seconds:.2f} calls={r.usage.calls} {r.description}" for r in records)
    assert any(r.prefetched and overlapped(r) for r in measured), table

    # the key: sent to the server, never seen by the task, never written anywhere in the run
    assert all(req.headers.get("Authorization") == f"Bearer {KEY}" for req in server.requests)
    assert KEY not in _all_text(run)
    assert KEY not in "\n".join(lines)


def test_max_cost_stops_the_run(cluster, tmp_path):
    repo = make_standin_repo(tmp_path / "task", sleep=0.3)
    with FakeLLMServer(default=Script([])) as server:
        cfg = llm_config(repo, "cost", server, {"api_key": OPTION_KEY}, max_experiments=40, max_cost=0.007)
        summary = Coordinator(cfg, out=lambda _: None).run()
    assert summary.reason == "max_cost"
    check_invariants(repo, "cost")
    run = repo / ".swarm" / "cost"
    events = read_events(run / "journal.jsonl")
    s = replay(events)
    assert s.stop_reason == "max_cost" and s.config["max_cost"] == 0.007
    assert s.total_usage().cost_usd >= 0.007
    assert 4 <= len(s.records) <= 10 and not s.running() and not s.counts().get("interrupted")
    # once the limit was reached nothing new was handed out
    crossed, spent = None, 0.0
    for e in events:
        if e["event"] == "experiment_finished":
            spent += e["record"]["usage"]["cost_usd"]
            if spent >= 0.007 and crossed is None:
                crossed = e["t"]
    assert crossed is not None
    assert not [e for e in events if e["event"] == "experiment_started" and e["t"] > crossed]
    assert OPTION_KEY not in _all_text(run)
    assert all(req.headers.get("Authorization") == f"Bearer {OPTION_KEY}" for req in server.requests)
