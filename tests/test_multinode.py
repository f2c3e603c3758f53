"""The swarm across nodes: Ray's own multi-node test cluster, 2 nodes with 2 fake GPUs each, each
node with its own data home, so that anything assuming a shared file system would be noticed.

The test starts the cluster itself (explicit ports are Ray's own free ones), shuts down only what
it started and never calls `ray stop`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from swarm.agents import parse_agent_spec  # noqa: E402
from swarm.config import SwarmConfig  # noqa: E402
from swarm.coordinator import Coordinator  # noqa: E402
from swarm.journal import read_events  # noqa: E402
from swarm.records import Kind, Status  # noqa: E402
from swarm.state import replay  # noqa: E402
from tests.standin import check_invariants, make_standin_repo, standin_task  # noqa: E402

HILL = "py:tests.standin_agents:HillClimber"


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """(cluster, {node id: its AUTORESEARCH_HOME}); the driver runs on the head node."""
    if ray.is_initialized():
        pytest.skip("another Ray session is connected in this process")
    homes = [tmp_path_factory.mktemp(f"node{i}-home") for i in range(2)]
    node_env = [{"AUTORESEARCH_HOME": str(home), "AUTORESEARCH_PROFILE": "cpu"} for home in homes]
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=2, num_gpus=2, env_vars=node_env[0], include_dashboard=False))
    worker = cluster.add_node(num_cpus=2, num_gpus=2, env_vars=node_env[1])
    ray.init(address=cluster.address, log_to_driver=False)
    head_id = ray.get_runtime_context().get_node_id()
    try:
        yield cluster, {head_id: homes[0], worker.node_id: homes[1]}
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_workers_on_both_nodes_exchange_bundles_and_every_log_reaches_the_head(two_nodes, tmp_path):
    _cluster, homes = two_nodes
    repo = make_standin_repo(tmp_path / "task", sleep=0.3)
    cfg = SwarmConfig(repo=repo, tag="multi", task=standin_task(timeout=30), agents=(parse_agent_spec(HILL),),
                      workers=4, max_experiments=16, baseline_runs=1, max_runs=1)
    coord = Coordinator(cfg, out=lambda _: None)
    summary = coord.run()
    assert summary.reason == "max_experiments"
    check_invariants(repo, "multi")
    by_node = {}
    for slot in coord.slots:
        by_node.setdefault(slot.info["node_id"], []).append(slot)
    assert set(by_node) == set(homes)  # workers landed on both nodes
    head = ray.get_runtime_context().get_node_id()
    remote = [slot for node, slots in by_node.items() if node != head for slot in slots]
    assert remote and all(slot.transport == "bundle" for slot in remote)
    assert all(slot.transport == "worktree" for slot in by_node[head])
    for slot in remote:  # its clone lives in its own node's data home, nothing in the run dir
        assert Path(slot.info["checkout"]).is_relative_to(homes[slot.info["node_id"]])
    s = replay(read_events(cfg.journal_path))
    remote_names = {slot.spec.name for slot in remote}
    remote_records = [r for r in s.records.values() if r.worker in remote_names]
    # their proposals came back as commits (bundles), each under its exp ref (check_invariants)
    assert any(r.kind == Kind.PROPOSAL and r.metric is not None and r.commit != r.parent for r in remote_records)
    for r in s.records.values():  # every experiment's log is in the run's logs/ on the head
        log = cfg.run_dir / "logs" / f"{r.exp_id}.log"
        assert r.log_path == str(log) and log.is_file(), r
        if r.metric is not None:
            assert "val_bpb" in log.read_text()


def test_a_node_lost_mid_run_costs_only_its_experiments_and_resume_works(two_nodes, tmp_path):
    cluster, homes = two_nodes
    doomed = cluster.add_node(num_cpus=2, num_gpus=2, env_vars={"AUTORESEARCH_HOME": str(tmp_path / "node2-home")})
    cluster.wait_for_nodes()
    repo = make_standin_repo(tmp_path / "task", sleep=1.0)
    cfg = SwarmConfig(repo=repo, tag="lost", task=standin_task(timeout=30), agents=(parse_agent_spec(HILL),),
                      workers=6, max_experiments=24, baseline_runs=1, max_runs=1)
    coord = Coordinator(cfg, out=lambda _: None)
    coord.pool.setup_timeout = 5.0  # its replacement actors find no node with a free GPU
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(summary=coord.run()), daemon=True)
    thread.start()

    def running_there():
        slots = [s for s in coord.slots if s.info.get("node_id") == doomed.node_id and s.busy is not None]
        return slots and len(read_events(cfg.journal_path)) > 12

    end = time.time() + 90
    while time.time() < end and not running_there():
        time.sleep(0.2)
    assert running_there(), "no worker of the doomed node was running"
    lost_workers = {s.spec.name for s in coord.slots if s.info.get("node_id") == doomed.node_id}
    cluster.remove_node(doomed)
    thread.join(240)
    assert not thread.is_alive() and box["summary"].reason == "max_experiments"
    check_invariants(repo, "lost")
    s = replay(read_events(cfg.journal_path))
    gone = [r for r in s.records.values() if r.worker in lost_workers and r.status == Status.CRASH
            and "actor died" in r.error]
    assert gone  # the node's running experiments were recorded, not lost
    assert len([r for r in s.records.values() if r.worker not in lost_workers and r.metric is not None]) > 12
    resumed = Coordinator(replace(cfg, workers=4, max_experiments=28, resume=True), out=lambda _: None).run()
    assert resumed.reason == "max_experiments"
    check_invariants(repo, "lost")


def test_the_profile_is_what_a_worker_node_resolves_not_the_driver(two_nodes, monkeypatch):
    """The nodes say cpu (AUTORESEARCH_PROFILE in their environment); the driver says gpu."""
    from swarm.raycluster import worker_profile

    monkeypatch.setenv("AUTORESEARCH_PROFILE", "gpu")
    assert worker_profile(num_gpus=1, num_cpus=0) == "cpu"


def test_joining_a_cluster_leaves_the_profile_to_the_workers_nodes(tmp_path, monkeypatch):
    from swarm.cli import build_parser
    from swarm.commands.run import build_config
    from tests.standin import git

    monkeypatch.delenv("AUTORESEARCH_PROFILE", raising=False)
    monkeypatch.setenv("AUTORESEARCH_SOURCE", "climbmix")  # the driver's; a worker's node has its own
    repo = tmp_path / "gptrepo"
    (repo / "trainer").mkdir(parents=True)
    (repo / "trainer" / "train.py").write_text("X = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    parse = build_parser().parse_args
    joined = build_config(parse(["run", "--repo", str(repo), "--address", "10.0.0.1:6379"]))
    assert joined.prepare_data and joined.profile is None  # the coordinator asks a worker's node
    assert joined.source is None  # each worker prepares its node's AUTORESEARCH_SOURCE (or its profile's default)
    assert build_config(parse(["run", "--repo", str(repo), "--address", "10.0.0.1:6379", "--profile", "gpu"])).profile == "gpu"
    assert build_config(parse(["run", "--repo", str(repo)])).profile in ("cpu", "gpu")  # its own cluster: here


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed child stays in the table until its parent reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_stopping_ends_the_task_processes_on_every_node(two_nodes, monkeypatch):
    """A task process on the other node is ended by the stop's per-node sweep. The head's own
    sweep is switched off here (on one machine it would see that process too), so only the Ray
    task sent to the other node can end it."""
    import os
    import subprocess

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from swarm import worker_actor

    _, homes = two_nodes
    here = ray.get_runtime_context().get_node_id()
    other = next(node for node in homes if node != here)
    mark = f"stop-test-{os.getpid()}"

    @ray.remote(num_cpus=0)
    def start_a_task_process() -> tuple[str, int]:
        env = {**os.environ, "AUTORESEARCH_RUN": mark, "AUTORESEARCH_WORKER": "w7"}
        proc = subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)
        return ray.get_runtime_context().get_node_id(), proc.pid

    node, pid = ray.get(start_a_task_process.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(other, soft=False)).remote())
    assert node == other and _running(pid)
    monkeypatch.setattr(worker_actor, "kill_strays", lambda run_mark, worker: None)
    worker_actor.RayBackend({"num_gpus": 1}).end_tasks(mark, ["w7"], [here, other])
    deadline = time.monotonic() + 30
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(pid), "the other node's task process outlived the stop"
