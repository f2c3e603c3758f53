"""The swarm's Ray metrics (swarm.metrics), the Ray dashboard of a cluster of its own, the named
worker actors, and the Grafana board (dashboards/grafana-swarm.json).

The first tests need no Ray: journaled events become samples, recording failures never break a
run, and the board names only metrics and labels the coordinator exports. The last ones start the
swarm's own cluster once for the module (`raycluster.connect`, dashboard on, explicit ports) and
read the metrics from the node's Prometheus endpoint during a real small run.
"""

from __future__ import annotations

import json
import logging
import re
import runpy
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from swarm.decisions import Assignment
from swarm.journal import EventType
from swarm.metrics import BY_NAME, CATALOGUE, Sample, SwarmMetrics, exported_names
from swarm.records import ExperimentRecord, Kind, Status, Usage
from swarm.state import RunState
from tests.metrics_run import own_cluster as start_own_cluster

ROOT = Path(__file__).resolve().parents[1]
BOARD = ROOT / "dashboards" / "grafana-swarm.json"
RAY_LABELS = {"SessionName"}  # a label Ray adds to every metric, used by the board's filters
GOOD = "py:tests.standin_agents:GoodAgent"


class ListRecorder:
    def __init__(self):
        self.samples: list[Sample] = []

    def record(self, sample: Sample) -> None:
        self.samples.append(sample)


class FailingRecorder:
    def __init__(self):
        self.calls = 0

    def record(self, sample: Sample) -> None:
        self.calls += 1
        raise RuntimeError("metrics agent unreachable")


# ---- events -> samples (no Ray) ---------------------------------------------------------------

def _events() -> list[dict]:
    """A small run's journal: two baselines, a candidate confirmed and promoted, an agent outage."""
    t = 1000.0

    def started(exp_id, worker, agent, kind, parent="base"):
        a = Assignment(exp_id=exp_id, worker=worker, agent=agent, kind=kind, parent=parent, parent_metric=None,
                       noise=None, seed=exp_id, started_at=t + exp_id)
        return {"event": "experiment_started", "t": t + exp_id, "assignment": a.to_dict()}

    def finished(exp_id, worker, agent, kind, commit, metric, usage=Usage(), status=Status.KEEP):
        r = ExperimentRecord(exp_id=exp_id, worker=worker, agent=agent, kind=kind, parent="base", commit=commit,
                             description=f"#{exp_id}", status=status, metric=metric, started_at=t + exp_id,
                             finished_at=t + exp_id + 2.5, usage=usage)
        return {"event": "experiment_finished", "t": t + exp_id + 2.5, "record": r.to_dict()}

    def decision(exp_id, status):
        return {"event": "decision", "t": t + 20 + exp_id, "exp_id": exp_id, "status": status, "reason": ""}

    paid = Usage(calls=1, tokens_in=100, tokens_out=40, cost_usd=0.002)
    return [
        {"event": "run_started", "t": t, "tag": "m", "base_commit": "base", "config": {"workers": 2, "wave_size": 2}},
        started(1, "w0", "builtin", Kind.BASELINE), started(2, "w1", "good", Kind.BASELINE),
        finished(1, "w0", "builtin", Kind.BASELINE, "base", 2.0), decision(1, "keep"),
        finished(2, "w1", "good", Kind.BASELINE, "base", 2.002), decision(2, "keep"),
        {"event": "baseline_measured", "t": t + 30, "commit": "base", "metric": 2.001, "noise": 0.0014,
         "exp_ids": [1, 2]},
        {"event": "best_advanced", "t": t + 31, "commit": "base", "metric": 2.001, "exp_id": None,
         "previous_commit": None, "previous_metric": None, "lane": "main"},
        started(3, "w1", "good", Kind.PROPOSAL), finished(3, "w1", "good", Kind.PROPOSAL, "c3", 1.5, paid),
        decision(3, "pending"),
        started(4, "w0", "builtin", Kind.CONFIRM, parent="c3"), finished(4, "w0", "builtin", Kind.CONFIRM, "c3", 1.52),
        decision(4, "keep"), decision(3, "keep"),
        {"event": "best_advanced", "t": t + 40, "commit": "c3", "metric": 1.51, "exp_id": 3,
         "previous_commit": "base", "previous_metric": 2.001, "lane": "main"},
        started(5, "w0", "builtin", Kind.PROPOSAL, parent="c3"),
        finished(5, "w0", "builtin", Kind.PROPOSAL, "c5", None, status=Status.CRASH), decision(5, "crash"),
        started(6, "w1", "good", Kind.PROPOSAL, parent="c3"),
        {"event": "agent_error", "t": t + 50, "worker": "w1", "agent": "good", "lane": "main", "exp_id": 6,
         "retry_in": 5.0, "error": "outage",
         "usage": {"calls": 1, "tokens_in": 7, "tokens_out": 0, "cost_usd": 0.0005}},
        started(7, "w1", "good", Kind.PROPOSAL, parent="c3"),
        {"event": "run_stopped", "t": t + 60, "reason": "interrupted"},
    ]


def _feed(events, recorder) -> SwarmMetrics:
    state, metrics = RunState(), SwarmMetrics("m", recorder)
    for event in events:
        EventType(event["event"])  # only real event types
        state.apply(event)
        metrics.observe(event, state)
    return metrics


def _totals(samples, metric, *labels) -> Counter:
    out = Counter()
    for s in samples:
        if s.metric == metric:
            tags = dict(s.tags)
            out[tuple(tags[label] for label in labels)] += s.value
    return out


def _last(samples, metric, *labels) -> dict:
    out = {}
    for s in samples:
        if s.metric == metric:
            out[tuple(dict(s.tags)[label] for label in labels)] = s.value
    return out


def test_journaled_events_become_the_swarm_metrics():
    rec = ListRecorder()
    _feed(_events(), rec)
    s = rec.samples
    for sample in s:  # Ray needs every declared label on every record, and the op of the metric's type
        m = BY_NAME[sample.metric]
        assert tuple(k for k, _ in sample.tags) == m.tags, sample
        assert sample.op == {"counter": "inc", "gauge": "set", "histogram": "observe"}[m.kind], sample
        assert dict(sample.tags)["run"] == "m"
        assert m.kind != "counter" or sample.value > 0, sample  # Ray counters take positive increments only
    # experiments by final status, counted once each (the pending decision of #3 is not counted)
    assert _totals(s, "swarm_experiments", "status") == {("keep",): 4, ("crash",): 1}
    assert _totals(s, "swarm_experiments", "worker", "kind", "status")[("w1", "proposal", "keep")] == 1
    assert _last(s, "swarm_best_metric", "lane") == {("main",): 1.51}
    assert _last(s, "swarm_last_metric", "worker", "agent") == {("w0", "builtin"): 1.52, ("w1", "good"): 1.5}
    durations = [x for x in s if x.metric == "swarm_experiment_seconds"]
    assert len(durations) == 5 and {x.value for x in durations} == {2.5}  # one per finished experiment
    assert _totals(s, "swarm_promotions", "worker", "agent", "lane") == {("w1", "good", "main"): 1}
    assert _totals(s, "swarm_confirmations", "worker") == {("w0",): 1}
    cost = _totals(s, "swarm_agent_cost_usd", "agent")
    assert cost[("good",)] == pytest.approx(0.0025) and ("builtin",) not in cost  # free: no series
    assert _totals(s, "swarm_agent_tokens", "agent", "direction") == {("good", "in"): 107, ("good", "out"): 40}
    assert _totals(s, "swarm_agent_errors", "worker") == {("w1",): 1}
    busy = [(dict(x.tags)["worker"], x.value) for x in s if x.metric == "swarm_worker_busy"]
    assert busy[:2] == [("w0", 1), ("w1", 1)]
    assert _last(s, "swarm_worker_busy", "worker") == {("w0",): 0, ("w1",): 0}  # the stop idles #7's worker
    sigmas = [x.value for x in s if x.metric == "swarm_noise_sigma"]
    assert sigmas[0] == pytest.approx(0.001 * 2 ** 0.5)  # the two baselines (2.0 and 2.002)
    assert sigmas[-1] == pytest.approx(((0.002 ** 2 / 2 + 0.02 ** 2 / 2) / 2) ** 0.5)  # pooled with c3's runs


def test_a_resumed_run_sets_the_best_again():
    events = _events()
    state = RunState()
    for event in events:
        state.apply(event)
    rec = ListRecorder()
    metrics = SwarmMetrics("m", rec)
    resumed = {"event": "run_resumed", "t": 2000.0, "config": {}}
    state.apply(resumed)
    metrics.observe(resumed, state)
    assert [(x.metric, x.value) for x in rec.samples] == [("swarm_best_metric", 1.51)]


def test_recording_failures_never_break_the_run_and_are_logged_once(caplog):
    failing = FailingRecorder()
    with caplog.at_level(logging.WARNING, logger="swarm.metrics"):
        metrics = _feed(_events() * 1, failing)
        state = RunState()
        metrics.observe({"event": "decision", "exp_id": 99, "status": "keep"}, state)  # unknown experiment
        metrics.observe({"event": "decision", "exp_id": 98, "status": "keep"}, state)
    assert failing.calls > 20  # it kept trying: a recovered agent gets the later samples
    warnings = [r.getMessage() for r in caplog.records]
    per_metric = Counter(w.split(" (")[0] for w in warnings)
    assert per_metric and all(n == 1 for n in per_metric.values()), warnings
    assert "swarm metrics: cannot record swarm_worker_busy" in per_metric
    assert "swarm metrics: cannot record event 'decision'" in per_metric


# ---- the Grafana board (no Ray) ----------------------------------------------------------------

def _board() -> dict:
    return json.loads(BOARD.read_text())


def _exprs(board: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def test_the_board_is_its_generators_output():
    build = runpy.run_path(str(ROOT / "dashboards" / "build_grafana.py"), run_name="build_grafana")
    assert BOARD.read_text() == build["render"](), "run python dashboards/build_grafana.py"


def test_every_board_expression_names_exported_metrics_and_labels():
    board = _board()
    exported = exported_names()
    by_series = {name: m for m in CATALOGUE for name in m.exported}
    referenced = set()
    for title, expr in _exprs(board):
        names = set(re.findall(r"\bray_[A-Za-z0-9_:]+", expr))
        assert names, (title, expr)
        assert names <= exported, (title, names - exported)
        referenced |= {by_series[n].name for n in names}
        allowed = RAY_LABELS | {tag for n in names for tag in by_series[n].tags}
        allowed |= {"le"} if any(n.endswith("_bucket") for n in names) else set()
        for series, selector in re.findall(r"\b(ray_[A-Za-z0-9_]+)\{([^}]*)\}", expr):
            used = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
            assert used <= RAY_LABELS | set(by_series[series].tags), (title, series, used)
        for clause in re.findall(r"\bby \(([^)]*)\)", expr):
            assert {x.strip() for x in clause.split(",")} <= allowed, (title, clause)
    assert referenced == {m.name for m in CATALOGUE}  # a panel for every metric


def test_the_board_uses_the_datasource_variable_like_rays_own_dashboards():
    board = _board()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"] == "${datasource}" for p in panels)
    assert all(t["datasource"] == "${datasource}" for p in panels for t in p["targets"])
    assert all(v["datasource"] == "${datasource}" for name, v in variables.items() if name != "datasource")
    for name in ("SessionName", "run", "lane", "worker", "agent"):
        assert variables[name]["type"] == "query"
        assert set(re.findall(r"\bray_[A-Za-z0-9_]+", variables[name]["definition"])) <= exported_names()
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


# ---- on the swarm's own Ray cluster -------------------------------------------------------------

@pytest.fixture(scope="module")
def own_cluster():
    """The swarm's own cluster (raycluster.connect without an address), with explicit ports."""
    with start_own_cluster() as cluster:
        yield cluster


def _scrape(url: str, run: str) -> list[tuple[str, dict, float]]:
    """(series name, labels, value) of this run's swarm series on the node's metrics endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    except OSError:
        return []
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name.startswith("ray_swarm_") and s.labels.get("run") == run]


def _sum(samples, name: str, by: str | None = None) -> dict:
    out: dict = Counter()
    for series, labels, value in samples:
        if series == name:
            out[labels.get(by) if by else None] += value
    return dict(out)


def test_dashboard_on_and_named_actors_on_a_cluster_of_its_own(own_cluster):
    import ray

    from swarm import raycluster

    assert raycluster.dashboard_available()
    url = own_cluster["dashboard"]
    assert url, "a cluster of its own serves the Ray dashboard"
    from ray.util.state import list_nodes  # Ray's client of the dashboard's API (it handles Ray's auth token)

    nodes = list_nodes(address=f"http://{url}")
    assert [n.node_id for n in nodes] == [ray.get_runtime_context().get_node_id()]
    from swarm.worker_actor import RayBackend

    @ray.remote(num_cpus=0)
    class Holder:
        def ping(self):
            return 1

    holder = Holder.options(name="swarm-names-w0-g1").remote()  # still holds the name
    ray.get(holder.ping.remote())
    from swarm.worker import WorkerSpec
    from tests.standin import standin_task
    from swarm.config import parse_agents

    spec = WorkerSpec(name="w0", tag="names", task=standin_task(), agent=parse_agents("builtin")[0],
                      checkout="/nonexistent", log_dir="/nonexistent")
    backend = RayBackend({"num_cpus": 0})
    actor = backend.create(spec, "swarm-names-w0-g1")
    try:
        assert ray.get(actor.ping.remote()) == "w0"
        assert ray.get_actor("swarm-names-w0-g1.2")._actor_id == actor._actor_id  # a suffix, no failed start
    finally:
        backend.kill(actor)
        ray.kill(holder)


def test_metrics_reach_the_nodes_endpoint_during_a_real_run(own_cluster, tmp_path):
    import ray

    from swarm.agents import parse_agent_spec
    from swarm.config import SwarmConfig
    from swarm.coordinator import Coordinator
    from swarm.journal import read_events
    from swarm.state import replay
    from tests.standin import make_standin_repo, standin_task

    repo = make_standin_repo(tmp_path / "task", sleep=0.3)
    tag = "metrics"
    cfg = SwarmConfig(repo=repo, tag=tag, task=standin_task(timeout=20), agents=(parse_agent_spec(GOOD),),
                      workers=2, max_experiments=80, baseline_runs=2, max_runs=2, sandbox="off")
    stop = threading.Event()
    coordinator = Coordinator(cfg, out=lambda _line: None, stop=stop)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("summary", coordinator.run()), daemon=True)
    thread.start()
    wanted = {"ray_swarm_experiments_total", "ray_swarm_worker_busy", "ray_swarm_promotions_total",
              "ray_swarm_confirmations_total", "ray_swarm_agent_cost_usd_total", "ray_swarm_best_metric"}
    during: set = set()
    deadline = time.monotonic() + 240
    while thread.is_alive() and time.monotonic() < deadline and not wanted <= during:
        during |= {name for name, _labels, _value in _scrape(own_cluster["metrics"], tag)}
        time.sleep(1.0)
    alive = thread.is_alive()
    actors = []
    if alive:  # the worker actors as Ray's dashboard lists them
        from ray.util.state import list_actors

        actors = [a for a in list_actors(address=f"http://{own_cluster['dashboard']}", detail=True)
                  if a.class_name == "WorkerActor" and a.state == "ALIVE"]
    stop.set()
    thread.join(timeout=120)
    assert not thread.is_alive() and box["summary"].reason == "interrupted"
    assert alive and wanted <= during, sorted(wanted - during)  # read while the run was going on
    here = ray.util.get_node_ip_address()
    assert sorted((a.name, a.repr_name) for a in actors) == [(f"swarm-{tag}-w{i}-g1", f"w{i}@{here}") for i in (0, 1)]

    state = replay(read_events(cfg.journal_path))
    counts = Counter(r.status.value for r in state.records.values() if r.status != "pending")
    finished = len(state.verdicts)
    promotions = sum(1 for b in state.best_history if b.exp_id is not None)
    confirms = sum(1 for r in state.verdicts.values() if r.kind == Kind.CONFIRM)
    assert promotions >= 1 and confirms >= 1
    samples: list = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the agent exports what the stop recorded a moment later
        samples = _scrape(own_cluster["metrics"], tag)
        if (_sum(samples, "ray_swarm_experiments_total", "status") == dict(counts)
                and _sum(samples, "ray_swarm_experiment_seconds_count") == {None: finished}
                and _sum(samples, "ray_swarm_worker_busy") == {None: 0}):
            break
        time.sleep(1.0)
    assert _sum(samples, "ray_swarm_experiments_total", "status") == dict(counts)
    assert _sum(samples, "ray_swarm_experiment_seconds_count") == {None: finished}
    assert _sum(samples, "ray_swarm_worker_busy") == {None: 0}  # the stop left no worker busy
    assert _sum(samples, "ray_swarm_promotions_total") == {None: promotions}
    assert _sum(samples, "ray_swarm_confirmations_total") == {None: confirms}
    cost = state.total_usage().cost_usd
    assert _sum(samples, "ray_swarm_agent_cost_usd_total")[None] == pytest.approx(cost)
    tokens = _sum(samples, "ray_swarm_agent_tokens_total", "direction")
    usage = state.total_usage()
    assert tokens == {"in": usage.tokens_in, "out": usage.tokens_out}
    best = [(labels["lane"], value) for name, labels, value in samples if name == "ray_swarm_best_metric"]
    assert best == [("main", pytest.approx(state.best.metric))]
    workers = {labels["worker"] for name, labels, _ in samples if name == "ray_swarm_worker_busy"}
    agents = {labels["agent"] for name, labels, _ in samples if name == "ray_swarm_experiments_total"}
    assert workers == {"w0", "w1"} and agents == {"good"}
    board_metrics = {n for _, expr in _exprs(_board()) for n in re.findall(r"\bray_[A-Za-z0-9_]+", expr)}
    seen = {name for name, _, _ in samples}
    errors_expected = {"ray_swarm_agent_errors_total"}  # no outage in this run: no series
    assert board_metrics - errors_expected <= seen, sorted(board_metrics - errors_expected - seen)
