"""The Grafana board's PromQL in a real Prometheus, fed the way the README says.

One slow test: the swarm's own Ray cluster (explicit ports, `tests.metrics_run`), a real small run
(stand-in task, 2 workers), and a real Prometheus (`prometheus` on PATH) started with the
configuration Ray generates for this session (`<session>/metrics/prometheus/prometheus.yml`, file
service discovery on the file Ray's dashboard writes into the session). Every expression of every
panel target and every template variable of `dashboards/grafana-swarm.json` is evaluated through
Prometheus's HTTP API with Grafana's substitutions ("All" and the run's own values); each must
evaluate, and the core panels must agree with the run's journal. Not covered: Grafana itself (its
rendering, the datasource variable), `ray metrics launch-prometheus` (it downloads Prometheus).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.metrics_run import free_port, own_cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Prometheus (`prometheus` on PATH)"),
]

ROOT = Path(__file__).resolve().parents[1]
BOARD = ROOT / "dashboards" / "grafana-swarm.json"
GOOD = "py:tests.standin_agents:GoodAgent"
TAG = "prom"
RATE = "1m"  # what Grafana gives $__rate_interval for a 10 s scrape interval on a short time range


class Prometheus:
    """A Prometheus subprocess and its HTTP API."""

    def __init__(self, config: Path, data: Path, log: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        self._log = open(log, "wb")
        self.log_path = log
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
             f"--web.listen-address={self.url.removeprefix('http://')}"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def get(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # a bad query: 400 with Prometheus's error body
            return json.loads(exc.read())

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    def query(self, expr: str, **params) -> dict:
        return self.get("/api/v1/query", query=expr, **params)

    def vector(self, expr: str) -> dict:
        """An instant query's result as {tuple of sorted labels: value}."""
        out = self.query(expr)
        assert out["status"] == "success", (expr, out)
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in out["data"]["result"]}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._log.close()


def by(vector: dict, label: str | None = None) -> dict:
    """{label value: value} of a vector (None as key when `label` is None)."""
    out = {}
    for labels, value in vector.items():
        out[dict(labels).get(label) if label else None] = value
    return out


def _until(deadline_s: float, check, interval: float = 1.0):
    """Polls `check()` until it returns something truthy or the deadline passes; returns its last value."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# ---- Grafana's substitutions --------------------------------------------------------------------

def _variables(board: dict) -> dict:
    return {v["name"]: v for v in board["templating"]["list"] if v["type"] == "query"}


def _value(values) -> str:
    """A variable's value as Grafana interpolates it into a Prometheus query: one value as is,
    several as a regex alternation `(a|b)`."""
    values = [values] if isinstance(values, str) else list(values)
    assert all(re.fullmatch(r"[A-Za-z0-9_:-]+", v) for v in values), values  # nothing Grafana would escape
    return values[0] if len(values) == 1 else "(" + "|".join(values) + ")"


def substitute(expr: str, values: dict) -> str:
    """`$name` / `${name}` -> the variable's value, Grafana's interval variables -> RATE."""
    out = expr.replace("$__rate_interval", RATE).replace("${__rate_interval}", RATE)
    out = out.replace("$__interval", "15s").replace("${__interval}", "15s")
    for name in sorted(values, key=len, reverse=True):
        out = out.replace("${" + name + "}", values[name])
        out = re.sub(r"\$" + re.escape(name) + r"\b", lambda _m: values[name], out)
    assert "$" not in out, (expr, out)  # every variable is one Grafana would fill in
    return out


def _label_values(definition: str) -> tuple[str, str]:
    """label_values(selector, label) -> (selector, label)."""
    m = re.fullmatch(r"label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)", definition.strip())
    assert m, definition
    return m.group(1), m.group(2)


def _finite(values) -> list[float]:
    return [float(v) for v in values if math.isfinite(float(v))]


# ---- the test -----------------------------------------------------------------------------------

def test_the_boards_queries_in_a_real_prometheus_fed_by_rays_configuration(tmp_path):
    board = json.loads(BOARD.read_text())
    with own_cluster() as cluster:
        session = Path(cluster["session_dir"])
        assert session.name.startswith("session_") and session.is_dir(), session
        # Ray's dashboard writes the configuration and keeps the discovery file up to date
        config = session / "metrics" / "prometheus" / "prometheus.yml"
        discovery = session / "prom_metrics_service_discovery.json"
        metrics_target = cluster["metrics"].removeprefix("http://").removesuffix("/metrics")

        def discovered():
            try:
                groups = json.loads(discovery.read_text())
            except (OSError, ValueError):
                return False
            targets = [t for g in groups for t in g["targets"]]
            return config.is_file() and any(t.endswith(":" + metrics_target.split(":")[1]) for t in targets)

        assert _until(60, discovered), (config, discovery, discovery.exists() and discovery.read_text())
        text = config.read_text()
        assert f"'{discovery}'" in text and "file_sd_configs" in text, text  # this session's file, not /tmp/ray's
        scrape_interval = re.search(r"scrape_interval:\s*(\d+)s", text)
        assert scrape_interval and int(scrape_interval.group(1)) <= 15, text  # RATE spans at least four scrapes

        prom = Prometheus(config, tmp_path / "tsdb", tmp_path / "prometheus.log")
        try:
            assert _until(60, prom.ready), prom.log()
            _check_board(prom, board, session.name, metrics_target.split(":")[1], tmp_path)
        finally:
            prom.stop()


def _check_board(prom: Prometheus, board: dict, session_name: str, metrics_port: str, tmp_path: Path) -> None:
    """A real run scraped by `prom`; then every board query and variable against the run's journal."""
    from swarm.agents import parse_agent_spec
    from swarm.config import SwarmConfig
    from swarm.coordinator import Coordinator
    from swarm.journal import read_events
    from swarm.records import Kind
    from swarm.state import replay
    from tests.standin import make_standin_repo, standin_task

    run_filter = f'run="{TAG}"'
    # Prometheus scrapes the node's metrics export port (found through Ray's file service discovery)
    up = _until(60, lambda: prom.vector(f'up{{job="ray",instance=~".+:{metrics_port}"}} == 1'))
    assert up, (prom.get("/api/v1/targets"), prom.log())

    # small steps: real experiments for minutes (Ray's configuration scrapes every 10 s); stopped sooner
    repo = make_standin_repo(tmp_path / "task", sleep=0.3)
    cfg = SwarmConfig(repo=repo, tag=TAG, task=standin_task(timeout=20), agents=(parse_agent_spec(GOOD, {"step": 0.05}),),
                      workers=2, max_experiments=400, baseline_runs=2, max_runs=2, sandbox="off")
    stop = threading.Event()
    coordinator = Coordinator(cfg, out=lambda _line: None, stop=stop)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("summary", coordinator.run()), daemon=True)
    started = time.time()
    thread.start()

    wanted = {  # scraped: experiments, a promotion, a confirmation, a rate over two scrapes
        "experiments": f"sum(ray_swarm_experiments_total{{{run_filter}}})",
        "promotions": f"sum(ray_swarm_promotions_total{{{run_filter}}})",
        "confirmations": f"sum(ray_swarm_confirmations_total{{{run_filter}}})",
        "rate": f"sum(rate(ray_swarm_experiment_seconds_count{{{run_filter}}}[{RATE}])) > 0",
    }
    seen: dict = {}

    def enough():
        seen.update({name: by(prom.vector(expr)).get(None) for name, expr in wanted.items()})
        return all(seen.values())

    try:
        _until(240, lambda: enough() or not thread.is_alive(), interval=2.0)
        alive = thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=120)
    assert alive, ("the run ended before Prometheus had scraped what the test needs", seen)
    assert not thread.is_alive() and box["summary"].reason == "interrupted", box

    state = replay(read_events(cfg.journal_path))
    counts = Counter(r.status.value for r in state.records.values() if r.status != "pending")
    finished = len(state.verdicts)
    promotions = sum(1 for b in state.best_history if b.exp_id is not None)
    confirms = sum(1 for r in state.verdicts.values() if r.kind == Kind.CONFIRM)
    kinds = Counter(r.kind.value for r in state.verdicts.values())
    per_worker = Counter(r.worker for r in state.verdicts.values())
    durations = [r.finished_at - r.started_at for r in state.verdicts.values()]
    usage = state.total_usage()
    assert promotions >= 1 and confirms >= 1 and finished >= 4

    # the last values (what the stop recorded) reach Prometheus at its next scrapes
    def settled():
        return (by(prom.vector(f"sum by (status) (ray_swarm_experiments_total{{{run_filter}}})"), "status")
                == dict(counts)
                and by(prom.vector(f"sum(ray_swarm_experiment_seconds_count{{{run_filter}}})")) == {None: finished}
                and by(prom.vector(f"sum(ray_swarm_worker_busy{{{run_filter}}})")) == {None: 0})

    assert _until(90, settled), (dict(counts), finished,
                                 prom.vector(f"sum by (status) (ray_swarm_experiments_total{{{run_filter}}})"))
    end = time.time()

    # ---- the template variables, as Grafana resolves them (label_values -> /api/v1/label/<name>/values)
    variables = _variables(board)
    mine = {"SessionName": [session_name], "run": [TAG], "lane": ["main"], "worker": ["w0", "w1"], "agent": ["good"]}
    assert set(variables) == set(mine), sorted(variables)
    passes = {
        "All": {name: v["allValue"] for name, v in variables.items()},
        "this run": {name: _value(values) for name, values in mine.items()},
    }
    for pass_name, values in passes.items():
        for name, v in variables.items():
            selector, label = _label_values(v["definition"])
            match = substitute(selector, values)
            got = prom.get(f"/api/v1/label/{label}/values", **{"match[]": match, "start": started - 60, "end": end})
            assert got["status"] == "success", (pass_name, name, match, got)
            assert sorted(got["data"]) == sorted(mine[name]), (pass_name, name, match, got["data"])
            series = prom.get("/api/v1/series", **{"match[]": match, "start": started - 60, "end": end})
            assert series["status"] == "success", (pass_name, name, match, series)
            assert sorted({s[label] for s in series["data"]}) == sorted(mine[name]), (pass_name, name, match)

    # ---- every panel target: it evaluates (instant, as a stat panel, and over the run, as a time series)
    targets = [(p["title"], t["refId"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
    assert len(targets) >= 20
    step = 5
    for pass_name, values in passes.items():
        instant: dict = {}
        ranged: dict = {}
        for title, ref, expr in targets:
            promql = substitute(expr, values)
            out = prom.query(promql, time=end)
            assert out["status"] == "success", (pass_name, title, promql, out)
            assert out["data"]["resultType"] == "vector", (title, out["data"]["resultType"])
            instant[(title, ref)] = {tuple(sorted(r["metric"].items())): float(r["value"][1])
                                     for r in out["data"]["result"]}
            out = prom.get("/api/v1/query_range", query=promql, start=started - 30, end=end, step=step)
            assert out["status"] == "success", (pass_name, title, promql, out)
            ranged[(title, ref)] = {tuple(sorted(r["metric"].items())): [float(v) for _, v in r["values"]]
                                    for r in out["data"]["result"]}
        _check_core_panels(pass_name, instant, ranged, counts=counts, finished=finished, promotions=promotions,
                           confirms=confirms, kinds=kinds, per_worker=per_worker, durations=durations, usage=usage,
                           state=state)


def _check_core_panels(pass_name, instant, ranged, *, counts, finished, promotions, confirms, kinds, per_worker,
                       durations, usage, state):
    def one(title, ref="A"):
        vector = instant[(title, ref)]
        assert len(vector) == 1, (pass_name, title, vector)
        return next(iter(vector.values()))

    def labelled(title, *labels, ref="A"):
        vector = instant[(title, ref)]
        assert vector, (pass_name, title)
        return {tuple(dict(k)[label] for label in labels) if len(labels) > 1 else dict(k)[labels[0]]: v
                for k, v in vector.items()}

    where = f"({pass_name})"
    assert labelled("Experiments by status", "status") == {k: float(v) for k, v in counts.items()}, where
    assert one("Experiments") == finished, where
    assert one("Kept") == counts["keep"], where
    assert one("Crashes and timeouts") == counts["crash"] + counts["timeout"], where
    assert labelled("Best metric per lane", "run", "lane") == {(TAG, "main"): pytest.approx(state.best.metric)}, where
    assert one("Promotions") == promotions, where
    assert labelled("Promotions by lane and agent", "lane", "agent") == {("main", "good"): promotions}, where
    assert labelled("Confirmations", "worker") and sum(labelled("Confirmations", "worker").values()) == confirms
    assert labelled("Experiments by kind", "kind") == {k: float(v) for k, v in kinds.items()}, where
    assert labelled("Experiments by worker", "worker") == {k: float(v) for k, v in per_worker.items()}, where
    keep_rate = labelled("Keep rate by agent", "agent")
    assert keep_rate == {"good": pytest.approx(counts["keep"] / finished)}, where
    assert one("Agent cost") == pytest.approx(usage.cost_usd), where
    tokens = labelled("Agent tokens", "agent", "direction")
    assert tokens == {("good", "in"): usage.tokens_in, ("good", "out"): usage.tokens_out}, where
    assert labelled("Noise sigma", "run") == {TAG: pytest.approx(state.noise_model().sigma)}, where
    assert set(labelled("Last metric per worker", "worker")) == {"w0", "w1"}, where
    # workers busy: none after the stop, some (at most the two workers) while the run went on
    assert one("Workers busy") == 0, where
    busy = [v for series in ranged[("Workers busy", "A")].values() for v in series]
    assert busy and 1 <= max(busy) <= 2, (where, busy)
    assert set(labelled("Busy workers", "worker")) == {"w0", "w1"}, where
    # experiment duration (rates over RATE): finite while experiments finished, within what the journal says
    lo, hi = min(durations), max(durations)
    bound = min(b for b in (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0) if b >= hi)  # the bucket holding the max
    for ref in ("A", "B", "C"):
        values = _finite(v for series in ranged[("Experiment duration", ref)].values() for v in series)
        assert values, (where, ref, ranged[("Experiment duration", ref)])
        if ref == "C":  # the mean of the experiments that finished in the window
            assert all(lo - 1e-6 <= v <= hi + 1e-6 for v in values), (where, lo, hi, values)
        else:  # a quantile interpolated within the buckets
            assert all(0 <= v <= bound for v in values), (where, bound, values)
    per_hour = _finite(v for series in ranged[("Experiments per hour by status", "A")].values() for v in series)
    assert per_hour and max(per_hour) > 0, where
