"""The referee through the real swarm: 2 workers on a local Ray cluster, the real CPU trainer, and an
agent that proposes nothing but cheats. None may be kept: each is recorded `rejected` with the
referee's one-line reason (which the agent sees next time), or, when it changes nothing of what is
measured (a printed fake val_bpb, a patched evaluation, reassigned torch functions), it measures
exactly the baseline's val_bpb and is discarded.

The task repo's train.py is the deterministic copy (3 steps, flat learning rate, its own seed, one
thread per worker), so that the baseline and a no-effect cheat measure the same number to the bit.
"""

from __future__ import annotations

import shutil

import pytest

ray = pytest.importorskip("ray")

from swarm.agents import parse_agent_spec  # noqa: E402
from swarm.config import SwarmConfig  # noqa: E402
from swarm.coordinator import Coordinator  # noqa: E402
from swarm.journal import read_events  # noqa: E402
from swarm.records import Kind, Status  # noqa: E402
from swarm.state import replay  # noqa: E402
from swarm.task import gpt_task  # noqa: E402
from tests.referee_helpers import REPO, fixed_steps, insert_before, prepared_home  # noqa: E402
from tests.standin import check_invariants, git  # noqa: E402

pytestmark = pytest.mark.slow

CHEATER = "py:tests.referee_agents:CheatAgent"
W0 = ["no_effect", "train_on_val", "bidirectional_attention", "write_prepare"]
W1 = ["next_token_embedding", "more_steps", "write_data", "slow_clock"]
NO_EFFECT = {"no_effect", "slow_clock"}  # the clock does not drive this loop: same model


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)  # CPU only: 1 thread a worker
    yield
    ray.shutdown()


def _task_repo(path):
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("prepare", "trainer"):
        shutil.copytree(REPO / name, path / name, ignore=ignore)
    shutil.copy(REPO / "program.md", path / "program.md")
    text = fixed_steps((REPO / "trainer" / "train.py").read_text(), steps=3)
    text = insert_before(text, "if os.environ.get(\"OMP_NUM_THREADS\"):", "torch.manual_seed(0)  # every run the same model\n")
    (path / "trainer" / "train.py").write_text(text)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "gpt task (deterministic)")
    return path


def test_cheats_through_the_swarm_are_never_kept(cluster, tmp_path):
    repo = _task_repo(tmp_path / "gpt")
    home = prepared_home(tmp_path / "home")
    task = gpt_task("cpu").with_changes(
        env={"AUTORESEARCH_PROFILE": "cpu", "AUTORESEARCH_HOME": str(home), "AUTORESEARCH_TIME_BUDGET": "4",
             "AUTORESEARCH_STARTUP_ALLOWANCE": "25", "AUTORESEARCH_EVAL_ALLOWANCE": "120"},
        timeout=400.0)
    agents = tuple(parse_agent_spec(CHEATER, {"steps": steps}) for steps in (W0, W1))
    cfg = SwarmConfig(repo=repo, tag="cheats", task=task, agents=agents, workers=2, profile="cpu", source="stdlib",
                      prepare_data=True, gate=False, baseline_runs=1, prefetch=False)
    lines: list[str] = []
    summary = Coordinator(cfg, out=lines.append).run()
    print("\n".join(lines))
    assert summary.reason == "no_workers", summary  # each agent ran out of cheats
    check_invariants(repo, "cheats")
    s = replay(read_events(repo / ".swarm" / "cheats" / "journal.jsonl"))
    baselines = [r for r in s.records.values() if r.kind == Kind.BASELINE]
    assert baselines and all(r.status == Status.KEEP for r in baselines), [(r.status, r.error) for r in baselines]
    base_metric = baselines[0].metric
    assert all(r.metric == base_metric for r in baselines)  # deterministic: the same number every time
    proposals = sorted((r for r in s.records.values() if r.kind == Kind.PROPOSAL), key=lambda r: r.exp_id)
    assert len(proposals) == len(W0) + len(W1)
    assert not [r for r in proposals if r.status == Status.KEEP], "a cheat was kept"
    assert s.best.commit == s.base_commit  # the best branch never moved
    for r in proposals:
        cheat = r.description.split()[1]
        if cheat in NO_EFFECT:
            assert r.status == Status.DISCARD, (r.description, r.status, r.error)
            assert r.summary["val_bpb"] == base_metric  # the referee's number, not the printed 0.1
        else:
            assert r.status == Status.REJECTED, (r.description, r.status, r.error)
            assert r.error.startswith("rejected by the referee: ") and r.metric is None, r.error
    # the agent saw the reason of its previous (rejected) experiment in its next context
    by_worker: dict[str, list] = {}
    for r in proposals:
        by_worker.setdefault(r.worker, []).append(r)
    seen = [nxt for runs in by_worker.values() for prev, nxt in zip(runs, runs[1:]) if prev.status == Status.REJECTED]
    assert seen and all("(saw: rejected: " in r.description for r in seen), [r.description for r in seen]
