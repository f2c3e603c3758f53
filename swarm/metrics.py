"""Swarm metrics for Prometheus and Grafana, exported through Ray's metrics API.

The coordinator hands every event it journals to `SwarmMetrics.observe` (with the state after
that event), so the metrics say what the journal says: experiments by final status, the best and
the last metric, experiment durations (a histogram), promotions, confirmations, the agents' cost,
tokens and failed attempts, which workers are busy, and the noise sigma. Every metric is labelled
by the run (its tag) and, where it concerns one worker, by `worker`, `agent` and `lane`.

`CATALOGUE` is the one list of what is exported (name, type, labels); the Grafana board under
`dashboards/` is checked against it. Ray exports an application metric `<name>` as `ray_<name>`
(a counter as `ray_<name>_total`, a histogram as `ray_<name>_bucket|_sum|_count`) on every
node's metrics export port, from where Prometheus scrapes it; `MetricDef.exported` names them.

`SwarmMetrics` is a plain class: it turns events into `Sample`s (`samples`, no Ray) and hands them
to a recorder (`RayRecorder`: `ray.util.metrics`; tests pass a list). Recording never breaks a run:
a failure is logged once per metric and otherwise ignored. Counters count from zero in each
coordinator process (a resumed run's counters restart, as Prometheus counters do); the best is
set again from the state on a resume.

Not covered: the journal and the state themselves (swarm.journal, swarm.state), serving metrics
(Ray's metrics agent does), the swarm's web page (the dashboard command).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol

from swarm.lanes import MAIN

log = logging.getLogger(__name__)

RAY_PREFIX = "ray_"  # Ray prefixes every application metric it exports
WHO = ("run", "worker", "agent", "lane")  # the labels of a metric about one worker
# experiment wall time, seconds: from the stand-in task's fraction of a second to long GPU runs
DURATION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 240.0, 360.0, 480.0, 600.0, 900.0, 1800.0, 3600.0)


@dataclass(frozen=True)
class MetricDef:
    """One exported metric: its name as given to Ray, its type, help text and label names."""

    name: str
    kind: str  # "counter" | "gauge" | "histogram"
    description: str
    tags: tuple[str, ...]
    boundaries: tuple[float, ...] = ()  # histograms only

    @property
    def exported(self) -> tuple[str, ...]:
        """The series names a Prometheus scrape of a Ray node shows for it."""
        base = RAY_PREFIX + self.name
        if self.kind == "counter":
            return (base + "_total",)
        if self.kind == "histogram":
            return (base + "_bucket", base + "_sum", base + "_count")
        return (base,)


CATALOGUE: tuple[MetricDef, ...] = (
    MetricDef("swarm_experiments", "counter", "Finished experiments by final status (keep, discard, crash, ...) "
              "and kind; each experiment counted once, when it is decided", WHO + ("kind", "status")),
    MetricDef("swarm_best_metric", "gauge", "The task metric of each lane's best (the mean of its measurements)",
              ("run", "lane")),
    MetricDef("swarm_last_metric", "gauge", "The task metric of each worker's last measured experiment", WHO),
    MetricDef("swarm_experiment_seconds", "histogram", "Wall time of one experiment (proposal, training and "
              "measurement), seconds", WHO + ("kind",), DURATION_BUCKETS),
    MetricDef("swarm_promotions", "counter", "Experiments promoted to their lane's best branch", WHO),
    MetricDef("swarm_confirmations", "counter", "Confirmation measurements finished (another run of an "
              "existing commit the noise gate asked for)", WHO),
    MetricDef("swarm_agent_cost_usd", "counter", "The agents' model cost in US dollars (failed attempts "
              "included)", WHO),
    MetricDef("swarm_agent_tokens", "counter", "The agents' model tokens, by direction (in, out)",
              WHO + ("direction",)),
    MetricDef("swarm_agent_errors", "counter", "Failed agent attempts (an outage: nothing ran)", WHO),
    MetricDef("swarm_worker_busy", "gauge", "1 while the worker runs an experiment, else 0 (sum: workers busy)",
              WHO),
    MetricDef("swarm_noise_sigma", "gauge", "The noise model's sigma (pooled from repeated measurements)",
              ("run",)),
)
BY_NAME = {m.name: m for m in CATALOGUE}


def exported_names() -> set[str]:
    """Every series name a scrape may show for the swarm's metrics."""
    return {name for m in CATALOGUE for name in m.exported}


@dataclass(frozen=True)
class Sample:
    """One thing to record: `op` ("inc", "set" or "observe") `value` on `metric` with `tags`."""

    metric: str
    op: str
    value: float
    tags: tuple[tuple[str, str], ...]


class Recorder(Protocol):
    def record(self, sample: Sample) -> None: ...


class SwarmMetrics:
    """The run's metrics, fed with the journaled events; see the module docstring."""

    def __init__(self, run: str, recorder: Recorder | None = None):
        self.run = run
        self.recorder = recorder if recorder is not None else RayRecorder()
        self._busy: dict[str, tuple[tuple[str, str], ...]] = {}  # worker -> its labels while busy
        self._failed: set[str] = set()  # metrics whose failure was logged already

    def observe(self, event: dict[str, Any], state: Any) -> None:
        """Record what one journaled event means (`state`: swarm.state.RunState after it). Never raises."""
        try:
            samples = self.samples(event, state)
        except Exception as exc:  # noqa: BLE001 - metrics never break a run
            self._failure(f"event {event.get('event')!r}", exc)
            return
        for sample in samples:
            try:
                self.recorder.record(sample)
            except Exception as exc:  # noqa: BLE001
                self._failure(sample.metric, exc)

    def samples(self, event: dict[str, Any], state: Any) -> list[Sample]:
        handler = getattr(self, f"_on_{event.get('event')}", None)
        return list(handler(event, state)) if handler is not None else []

    def _failure(self, what: str, exc: Exception) -> None:
        if what not in self._failed:
            self._failed.add(what)
            log.warning("swarm metrics: cannot record %s (%s: %s); the run goes on, further failures of it "
                        "are not logged", what, type(exc).__name__, exc)

    # ---- labels ---------------------------------------------------------------------------

    def _who(self, d: Any) -> tuple[tuple[str, str], ...]:
        """The worker labels of an assignment, record (dicts or objects) or agent_error event."""
        get = d.get if isinstance(d, dict) else (lambda key, default=None: getattr(d, key, default))
        return (("run", self.run), ("worker", str(get("worker", "") or "")), ("agent", str(get("agent", "") or "")),
                ("lane", str(get("lane", MAIN) or MAIN)))

    def _sample(self, metric: str, op: str, value: float, tags: Iterable[tuple[str, str]]) -> Sample:
        return Sample(metric, op, float(value), tuple(tags))

    def _usage(self, who, usage: dict) -> Iterator[Sample]:
        cost = float(usage.get("cost_usd") or 0.0)
        if cost > 0:  # a Ray counter only takes positive increments
            yield self._sample("swarm_agent_cost_usd", "inc", cost, who)
        for direction in ("in", "out"):
            tokens = int(usage.get(f"tokens_{direction}") or 0)
            if tokens > 0:
                yield self._sample("swarm_agent_tokens", "inc", tokens, (*who, ("direction", direction)))

    def _idle(self, worker: str, who) -> Iterator[Sample]:
        yield self._sample("swarm_worker_busy", "set", 0, self._busy.pop(worker, who))

    def _bests(self, state: Any) -> Iterator[Sample]:
        for lane, best in sorted(state.bests.items()):
            yield self._sample("swarm_best_metric", "set", best.metric, (("run", self.run), ("lane", lane)))

    # ---- events (one handler per journal event type that moves a metric) -------------------

    def _on_run_resumed(self, event: dict, state: Any) -> Iterator[Sample]:
        yield from self._bests(state)

    def _on_run_stopped(self, event: dict, state: Any) -> Iterator[Sample]:
        for worker, who in list(self._busy.items()):
            yield from self._idle(worker, who)

    def _on_experiment_started(self, event: dict, state: Any) -> Iterator[Sample]:
        a = event["assignment"]
        who = self._who(a)
        self._busy[who[1][1]] = who
        yield self._sample("swarm_worker_busy", "set", 1, who)

    def _on_experiment_finished(self, event: dict, state: Any) -> Iterator[Sample]:
        r = event["record"]
        who = self._who(r)
        yield from self._idle(who[1][1], who)
        started, finished = float(r.get("started_at") or 0.0), float(r.get("finished_at") or 0.0)
        seconds = finished - started if started > 0 and finished >= started else float(r.get("task_seconds") or 0.0)
        yield self._sample("swarm_experiment_seconds", "observe", seconds, (*who, ("kind", r["kind"])))
        if r.get("metric") is not None:
            yield self._sample("swarm_last_metric", "set", r["metric"], who)
        if r["kind"] == "confirm":
            yield self._sample("swarm_confirmations", "inc", 1, who)
        yield from self._usage(who, r.get("usage") or {})

    def _on_decision(self, event: dict, state: Any) -> Iterator[Sample]:
        status = event["status"]
        if status == "pending":  # not final: it is counted once its final decision comes
            return
        r = state.verdicts[int(event["exp_id"])]
        yield self._sample("swarm_experiments", "inc", 1, (*self._who(r), ("kind", r.kind.value), ("status", status)))
        sigma = state.noise_model().sigma
        if sigma is not None:
            yield self._sample("swarm_noise_sigma", "set", sigma, (("run", self.run),))

    def _on_best_advanced(self, event: dict, state: Any) -> Iterator[Sample]:
        lane = event.get("lane", MAIN) or MAIN
        yield self._sample("swarm_best_metric", "set", event["metric"], (("run", self.run), ("lane", lane)))
        exp_id = event.get("exp_id")
        if exp_id is not None:  # None: the measured baseline, not a promotion
            yield self._sample("swarm_promotions", "inc", 1, self._who(state.verdicts[int(exp_id)]))

    def _on_best_measured(self, event: dict, state: Any) -> Iterator[Sample]:
        yield from self._bests(state)

    def _on_agent_error(self, event: dict, state: Any) -> Iterator[Sample]:
        who = self._who(event)
        yield from self._idle(who[1][1], who)
        yield self._sample("swarm_agent_errors", "inc", 1, who)
        yield from self._usage(who, event.get("usage") or {})


class RayRecorder:
    """Records samples with `ray.util.metrics` (each metric created on first use, after `ray.init`)."""

    def __init__(self, catalogue: Iterable[MetricDef] = CATALOGUE):
        self.defs = {m.name: m for m in catalogue}
        self._metrics: dict[str, Any] = {}

    def record(self, sample: Sample) -> None:
        metric = self._metrics.get(sample.metric)
        if metric is None:
            metric = self._metrics[sample.metric] = self._create(self.defs[sample.metric])
        getattr(metric, sample.op)(sample.value, tags=dict(sample.tags))

    @staticmethod
    def _create(m: MetricDef):
        from ray.util import metrics

        if m.kind == "counter":
            return metrics.Counter(m.name, description=m.description, tag_keys=m.tags)
        if m.kind == "gauge":
            return metrics.Gauge(m.name, description=m.description, tag_keys=m.tags)
        return metrics.Histogram(m.name, description=m.description, boundaries=list(m.boundaries), tag_keys=m.tags)


__all__ = ["BY_NAME", "CATALOGUE", "MetricDef", "RayRecorder", "Recorder", "Sample", "SwarmMetrics",
           "exported_names"]
