"""The coordinator: the research loop over Ray worker actors, the journal and the best branch.

It is the only writer of the journal and of `swarm/<tag>/best`. It hands each idle worker an
assignment (with the current best commit and metric, and on a bundle-transport worker a git
bundle of it): first-wave baselines, then confirmations the noise gate asks for, then queued
combinations and re-applies, then fresh proposals. It consumes results in completion order with
`ray.wait`, and for each one writes the record, decides with `swarm.decisions` and, for clean
measurements, the noise gate through `swarm.promoter` (which advances the best branch with a
compare-and-swap ref update — one coordinator thread, so merges are serialised — and queues the
combination when the winner raced against a newer best), and regenerates the exports. In a compare
run (swarm.lanes) each worker races for its lane: it sees that lane's best, history and
combinations, and a win advances only that lane's best branch; the first-wave baseline is shared
by all lanes. State is `swarm.state.RunState` fed with exactly the events it journals, so a resumed
coordinator continues where the journal ends. Starting, replacing and retiring worker actors:
swarm.slots. Not covered: what a worker does (swarm.worker), CLI parsing (swarm.commands.run).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from swarm import exports, gitops
from swarm.config import SwarmConfig, plan_workers
from swarm.decisions import (
    Assignment, Best, SchedulerView, baseline_stats, decide, experiment_seed, improves, next_kind,
    unfinished_record,
)
from swarm.errors import ConfigError, GitError, SwarmError
from swarm.journal import EventType, Journal, read_events
from swarm.lanes import MAIN, best_ref, split_workers
from swarm.noise import Noise
from swarm.promoter import Promoter
from swarm.promotion import BEST_EXTRA_RUNS, confirm_description, confirm_targets
from swarm.pacing import over_budget
from swarm.records import ExperimentRecord, Kind, Reapply, Status, Usage
from swarm.slots import Slot, WorkerSlots, short_error as _short
from swarm.state import RunState, replay

HISTORY_LIMIT = 200  # finished experiments sent to agents with each assignment
MAX_WORKER_FAILURES = 3  # consecutive worker-side failures before a worker slot is retired


@dataclass(frozen=True)
class RunSummary:
    tag: str
    reason: str
    best: Best | None
    baseline: float | None
    noise: float | None
    counts: dict[str, int]
    experiments: int
    seconds: float
    overhead_s: tuple[float, ...]  # coordinator time per handled result (journal+decide+merge+broadcast)
    run_dir: Path
    lane_bests: dict = field(default_factory=dict)  # lane -> Best (compare runs: one per lane)
    usage: Usage = Usage()  # the agents' calls, tokens and cost (failed attempts included)
    agent_errors: int = 0  # failed agent attempts (outages: nothing ran)
    message: str = ""  # why a run ended early, for the user (reason "no_workers": every worker retired)
    sigma: Noise = Noise(None, 0, 0)  # the noise model at the end of the run
    confirm_share: float = 0.0  # share of GPU time (time inside the task) spent on confirmations
    pending: int = 0  # candidates still waiting for a confirmation when the run stopped
    best_runs: int = 0  # measurements behind the best's metric


class Coordinator(WorkerSlots):
    def __init__(
        self,
        config: SwarmConfig,
        out: Callable[[str], None] = print,
        stop: threading.Event | None = None,
        on_connected: Callable[[], None] | None = None,
    ):
        """`on_connected` runs once Ray is up: `ray.init` replaces the SIGTERM handler, so a CLI
        that wants a clean stop on SIGTERM re-installs its handlers there."""
        self.config = config
        self.on_connected = on_connected
        self.out = out if config.progress else (lambda _line: None)
        self.stop = stop or threading.Event()
        self.repo = gitops.open_repo(config.repo)
        self.journal = Journal(config.journal_path)
        self.state = RunState()
        self.slots: list[Slot] = []
        self.inflight: dict[Any, Slot] = {}
        self.overheads: list[float] = []
        self.best_ref = best_ref(config.tag, MAIN)
        self.fatal: str | None = None
        self.promoter = Promoter(config, self.repo, self._log, lambda: self.state)
        self.claims = None  # swarm.claims actor, created with the workers

    # ---- journal: every event goes through here ------------------------------------------

    def _log(self, event: EventType, **body: Any) -> None:
        self.state.apply(self.journal.append(event, **body))

    # ---- start ----------------------------------------------------------------------------

    def run(self) -> RunSummary:
        t0 = time.monotonic()
        reason = "done"
        self._connect_ray()
        import pyarrow.parquet  # noqa: F401 - imported once here, not inside the first timed export

        plan = self._open_run()
        try:
            self._start_workers(plan)
            reason = self._loop(t0)
        except KeyboardInterrupt:
            reason = "interrupted"
            self._interrupt_running()
        except BaseException as exc:
            reason = f"error: {exc}"
            self._interrupt_running()
            raise
        finally:
            self._log(EventType.RUN_STOPPED, reason=reason)
            self._shutdown_workers()
            self._export()
        if self.fatal:
            raise SwarmError(self.fatal)
        s = self.state
        best_sample = s.sample(s.best.commit) if s.best else None
        return RunSummary(
            self.config.tag, reason, s.best, s.baseline_metric, s.noise, dict(s.counts()),
            len(s.records), time.monotonic() - t0, tuple(self.overheads), self.config.run_dir,
            dict(s.bests) if self.config.compare else {}, s.total_usage(), s.agent_errors,
            self.no_workers if reason == "no_workers" else "", s.noise_model(), s.confirm_share(),
            sum(len(v) for v in s.pending.values()), best_sample.n if best_sample else 0,
        )

    def _connect_ray(self) -> None:
        import ray

        if not ray.is_initialized():
            self._init_ray(ray)
        if self.on_connected:
            self.on_connected()

    def _init_ray(self, ray) -> None:
        if self.config.address:
            _check_reachable(self.config.address)
        try:
            if self.config.address:
                ray.init(address=self.config.address, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.config.address or "a local cluster"
            raise ConfigError(f"cannot reach Ray at {where}: {str(exc).splitlines()[0] if str(exc) else exc}") from None

    def _open_run(self):
        import ray

        cfg = self.config
        gitops.ensure_excluded(self.repo, ".swarm/")
        exists = cfg.journal_path.exists()
        if cfg.resume:
            if not exists:
                from swarm.config import list_runs

                known = ", ".join(list_runs(cfg.repo)) or "none"
                raise ConfigError(f"no run tagged {cfg.tag!r} to resume in {cfg.repo} (runs: {known})")
            self.state = replay(read_events(cfg.journal_path))
            lanes = [lane.name for lane in cfg.lanes]
            if lanes != self.state.lanes:
                raise ConfigError(f"run {cfg.tag!r} races lanes {self.state.lanes}; these settings give {lanes} "
                                  "(resume with the run's own --agents and --compare)")
            plan = self._split(plan_workers(ray.cluster_resources(), cfg.workers or self.state.wave_size))
            self._log(EventType.RUN_RESUMED, config=cfg.to_dict())
            for lane, best in self.state.bests.items():  # the journal is the truth: undo a ref update it never recorded
                gitops.update_ref(self.repo, best_ref(cfg.tag, lane), best.commit)
            self._settle()
            for a in self.state.running():  # started, never finished: the previous coordinator died
                self._record(unfinished_record(a, Status.INTERRUPTED, "run stopped while it was running", time.time()))
            return plan
        if exists:
            raise ConfigError(f"a run tagged {cfg.tag!r} exists; continue it with --resume or pick another --tag")
        dirty = gitops.dirty_paths(self.repo, list(cfg.task.mutable_files))
        if dirty:
            raise ConfigError(f"uncommitted changes in {', '.join(dirty)}: commit them first (the swarm starts from HEAD)")
        plan = self._split(plan_workers(ray.cluster_resources(), cfg.workers))
        config = {**cfg.to_dict(), "workers": plan.count, "wave_size": max(plan.count, cfg.baseline_runs)}
        self._log(EventType.RUN_STARTED, tag=cfg.tag, base_commit=gitops.head_commit(self.repo), config=config)
        if cfg.compare:
            lanes = cfg.lanes
            self._log(EventType.NOTE, text=f"compare run: {len(lanes)} lanes x {plan.count // len(lanes)} workers: "
                      + ", ".join(f"{lane.name} ({lane.agent.name})" for lane in lanes))
        return plan

    def _split(self, plan):
        """A compare run uses an equal number of workers per lane (the remainder stays idle)."""
        if not self.config.compare:
            return plan
        import dataclasses

        count = split_workers(plan.count, len(self.config.lanes))
        if count != plan.count:
            self.out(f"compare: using {count} of {plan.count} workers so that every lane gets an equal share")
        return dataclasses.replace(plan, count=count)

    # ---- the loop -------------------------------------------------------------------------

    def _loop(self, t0: float) -> str:
        import ray

        deadline = t0 + self.config.hours * 3600 if self.config.hours else None
        reason = "done"
        while True:
            if self.stop.is_set():
                raise KeyboardInterrupt
            self._check_setups()
            reason = self._limit(reason, deadline)
            self._fill_idle(stopping=reason != "done" or self.fatal is not None)
            if not self.inflight:
                if reason == "done" and self.fatal is None and self._waiting():
                    if not self.setups:
                        time.sleep(0.2)  # every idle worker waits out its agent's outage
                        continue
                else:
                    break
            waiting = [*self.inflight, *self.setups]
            ready, _ = ray.wait(waiting, num_returns=1, timeout=0.5)
            if not ready:
                continue
            ready, _ = ray.wait(waiting, num_returns=len(waiting), timeout=0)
            for ref in [r for r in ready if r in self.setups]:
                self._setup_done(ref)
            ready = [r for r in ready if r in self.inflight]
            if not ready:
                continue
            tick = time.perf_counter()
            outcomes = [self._collect(ref) for ref in ready]
            for outcome in sorted(outcomes, key=lambda o: o[1]):  # completion order, as if one by one
                self._handle(*outcome)
                reason = self._limit(reason, deadline)
                self._fill_idle(stopping=reason != "done" or self.fatal is not None)
            self._export()  # once per batch, after the idle workers have their next experiment
            self.overheads.extend([(time.perf_counter() - tick) / len(ready)] * len(ready))
        if self.fatal:
            return "error"
        limit = self.config.max_experiments
        if reason == "done" and limit is not None and len(self.state.assignments) >= limit:
            reason = "max_experiments"
        if reason == "done" and self.no_workers:
            reason = "no_workers"
        return reason

    def _limit(self, reason: str, deadline: float | None) -> str:
        """Why the run stops handing out experiments ("done": it does not): --hours, --max-cost."""
        if reason != "done":
            return reason
        if deadline is not None and time.monotonic() >= deadline:
            return "hours"
        if over_budget(self.state.total_usage().cost_usd, self.config.max_cost):
            return "max_cost"
        return reason

    def _view(self, stopping: bool, lane: str = MAIN, worker: str = "") -> SchedulerView:
        s = self.state
        running = [slot.busy for slot in self.slots if slot.busy]
        targets = self._confirm_targets(lane, worker, running) if self.config.gate else []
        best = s.lane_best(lane)
        return SchedulerView(
            started=len(s.assignments), baseline_done=s.lane_best(lane) is not None,
            baselines_to_start=s.baselines_to_start(running), queued_combinations=len(s.queue_for(lane)),
            max_experiments=self.config.max_experiments, stopping=stopping,
            confirms_wanted=len(targets), best_unsettled=bool(targets) and targets[0] == getattr(best, "commit", None),
        )

    def _confirm_targets(self, lane: str, worker: str, running: list[Assignment]) -> list[str]:
        runs = self.config.max_runs
        best_runs = runs + BEST_EXTRA_RUNS if runs > 1 else 1  # --max-runs 1: every decision on one run
        return confirm_targets(self.state, lane, worker, running, best_runs)

    def _fill_idle(self, stopping: bool) -> None:
        for slot in self.slots:
            if slot.ready:
                kind = next_kind(self._view(stopping, slot.lane, slot.spec.name))
                if kind is None:
                    continue
                self._assign(slot, kind)

    def _assign(self, slot: Slot, kind: Kind) -> None:
        s, exp_id = self.state, self.state.next_exp_id
        extra: dict[str, Any] = {}
        best = s.lane_best(slot.lane)
        if kind == Kind.BASELINE:
            parent, parent_metric = s.base_commit, None
        elif kind == Kind.CONFIRM:
            running = [other.busy for other in self.slots if other.busy]
            parent, parent_metric = self._confirm_targets(slot.lane, slot.spec.name, running)[0], best.metric
            extra = dict(description=confirm_description(s, parent))
        elif kind == Kind.COMBINATION:
            combo = s.queue_for(slot.lane)[0]
            extra = dict(description=combo["description"], combo_id=combo["combo_id"])
            if combo.get("reapply"):  # a lost win: its agent re-applies the change on the best as it is now
                kind, parent, parent_metric = Kind.PROPOSAL, best.commit, best.metric
                extra["reapply"] = Reapply(**combo["reapply"])
            else:
                parent, parent_metric = combo["parent"], combo["parent_metric"]
                extra["files"] = tuple(sorted(combo["files"].items()))
        else:
            parent, parent_metric = best.commit, best.metric
        history = s.history(HISTORY_LIMIT, lane=slot.lane if self.config.compare else None)
        a = Assignment(
            exp_id=exp_id, worker=slot.spec.name, agent=slot.info.get("agent", slot.spec.agent.name), kind=kind,
            parent=parent, parent_metric=parent_metric, noise=s.noise_model().sigma or s.noise,
            seed=experiment_seed(self.config.seed, exp_id),
            started_at=time.time(), history=history, lane=slot.lane, **extra,
        )
        self._log(EventType.EXPERIMENT_STARTED, assignment=a.to_dict())
        bundle = None
        if slot.transport == "bundle" and slot.synced != parent:
            bundle = self._bundle_for(parent, slot.synced)
        slot.busy = a
        limit = self.config.max_experiments
        more = (limit is None or len(s.assignments) < limit) and not over_budget(
            s.total_usage().cost_usd, self.config.max_cost)  # else a prefetch would be wasted
        self.inflight[slot.actor.run.remote(a, bundle, more)] = slot
        slot.synced = parent

    def _collect(self, ref) -> tuple[Slot, float, Any]:
        """(slot, finish time, WorkerResult or the Ray error) of a ready result.

        The slot stays busy until `_handle` records its result, so scheduling between two
        results of one batch sees the others as still running.
        """
        import ray

        slot = self.inflight.pop(ref)
        try:
            result = ray.get(ref)
            return slot, result.record.finished_at if result.record is not None else time.time(), result
        except ray.exceptions.RayError as exc:
            return slot, time.time(), exc

    def _handle(self, slot: Slot, _finished: float, result: Any) -> None:
        import ray

        a, slot.busy = slot.busy, None
        if isinstance(result, BaseException):
            died = isinstance(result, ray.exceptions.RayActorError)
            what = "worker actor died" if died else "worker error"
            # lost with its worker: a combination goes back to the queue (swarm.state)
            self._record(unfinished_record(a, Status.CRASH, f"{what}: {_short(result)}", time.time()), lost=died)
            slot.failures += 1
            if slot.failures >= MAX_WORKER_FAILURES:
                self._retire(slot, f"{slot.failures} worker failures in a row (last: {_short(result)})")
            elif died:
                self._replace(slot)  # new actor, same (repaired) worktree; it gets work once set up
            else:
                slot.synced = None
            return
        slot.failures = 0
        if result.record is None:
            self._agent_unavailable(slot, a, result.agent_errors)
            return
        if slot.outages:
            self._log(EventType.NOTE, text=f"{slot.spec.name}: agent {a.agent} answers again after {slot.outages} "
                      "failed attempt(s)")
            slot.outages = 0
        record = result.record
        if record.commit:  # every experiment's commit stays reachable, kept or not (baselines too)
            exp_ref = f"refs/swarm/{self.config.tag}/exp/{record.exp_id}"
            try:
                if result.bundle is not None:
                    gitops.fetch_bundle(self.repo, result.bundle, exp_ref)
                else:
                    gitops.write_ref(self.repo, exp_ref, record.commit)
            except GitError as exc:  # its commit cannot be kept: the result cannot be used
                record = record.replace(status=Status.CRASH, commit="", metric=None,
                                        error=f"its commit {record.commit[:7]} could not be stored: {exc}")
        self._record(record)

    # ---- recording and deciding -----------------------------------------------------------

    def _record(self, record: ExperimentRecord, lost: bool = False) -> None:
        """Journal one finished experiment, decide, advance the best, queue a combination.

        `lost`: it never really ran (its worker died under it); a combination is queued again."""
        self._log(EventType.EXPERIMENT_FINISHED, record=record.to_dict(), **({"lost": True} if lost else {}))
        if self.claims is not None:  # its change is no longer in flight (free again if it never ran)
            never_ran = lost or record.status == Status.INTERRUPTED
            (self.claims.release if never_ran else self.claims.finish).remote(record.exp_id)
        self._decide(record)

    def _decide(self, record: ExperimentRecord) -> None:
        s, task = self.state, self.config.task
        best_before = s.lane_best(record.lane)
        d = decide(record, best_before, task.direction, self.config.min_delta)
        gated = (self.config.gate and d.status in (Status.KEEP, Status.DISCARD) and record.kind != Kind.BASELINE
                 and best_before is not None)
        if gated:
            self.promoter.judge(record, best_before)
        else:
            self._log(EventType.DECISION, exp_id=record.exp_id, status=d.status.value, reason=d.reason,
                      best_metric=best_before.metric if best_before else None)
            if record.kind == Kind.CONFIRM and record.commit in s.pending:
                self.promoter.confirm_failed(record)
        if record.kind == Kind.BASELINE and self._lanes_without_best():
            self._maybe_finish_wave()
        if d.promote and not gated:
            self.promoter.promote(record, best_before, d.combine)
        self._progress(s.records[record.exp_id], best_before)

    def _settle(self) -> None:
        """Finish what a coordinator killed between two events left half-done (on resume)."""
        s = self.state
        for exp_id, record in sorted(s.verdicts.items()):
            if exp_id not in s.records:  # finished but never decided
                self._decide(record)
        promoted = {b.commit for b in s.best_history}
        for record in s.finished_records():  # decided keep but the best never advanced to it
            best = s.lane_best(record.lane)
            sample = s.sample(record.commit)
            if (record.kind not in (Kind.BASELINE, Kind.CONFIRM) and record.status == Status.KEEP
                    and record.commit not in promoted and best is not None and sample is not None
                    and improves(sample.mean, best.metric, self.config.task.direction, self.config.min_delta)):
                self.promoter.promote(record.replace(metric=sample.mean), best, combine=record.parent != best.commit)
                promoted.add(record.commit)
        if not self.config.gate:  # resumed without the gate: candidates left pending are decided now
            for commit, ids in list(s.pending.items()):
                first = s.records[ids[0]]
                best = s.lane_best(first.lane)
                sample = s.sample(commit)
                better = best is not None and improves(sample.mean, best.metric, self.config.task.direction,
                                                       self.config.min_delta)
                for exp_id in ids:
                    self._log(EventType.DECISION, exp_id=exp_id, status=(Status.KEEP if better else Status.DISCARD).value,
                              reason=f"decided without the gate (--no-gate): mean {sample.mean:.6f} over {sample.n} runs")
                if better:
                    self.promoter.promote(first.replace(metric=sample.mean), best, combine=first.parent != best.commit)
        if self._lanes_without_best() and s.wave_size:
            self._maybe_finish_wave()

    def _lanes_without_best(self) -> list[str]:
        return [lane for lane in self.state.lanes if self.state.lane_best(lane) is None]

    def _maybe_finish_wave(self) -> None:
        s = self.state
        running = [slot.busy for slot in self.slots if slot.busy]
        if s.baselines_to_start(running) > 0 or any(a.kind == Kind.BASELINE for a in running):
            return
        metrics = s.baseline_metrics()
        if not metrics:  # the whole wave finished and nothing was measured: nothing to improve on
            failed = [r for r in s.records.values() if r.kind == Kind.BASELINE]
            where = f" (last: {failed[-1].error}; log {failed[-1].log_path})" if failed else ""
            self.fatal = f"every baseline run failed{where}"
            return
        if s.baseline_metric is None:
            mean, sigma = baseline_stats(metrics)
            ids = [r.exp_id for r in s.records.values() if r.kind == Kind.BASELINE and r.metric is not None]
            self._log(EventType.BASELINE_MEASURED, commit=s.base_commit, metric=mean, noise=sigma, exp_ids=ids)
        for lane in self._lanes_without_best():  # every lane starts from the same measured baseline
            gitops.update_ref(self.repo, best_ref(self.config.tag, lane), s.base_commit)
            self._log(EventType.BEST_ADVANCED, commit=s.base_commit, metric=s.baseline_metric, exp_id=None,
                      previous_commit=None, previous_metric=None, lane=lane)

    def _export(self) -> None:
        exports.write_exports(self.config.run_dir, self.state.result_records(), self.config.task.metric,
                              samples=self.state.measurements, sigma=self.state.noise_model().sigma)

    def _progress(self, r: ExperimentRecord, best_before: Best | None) -> None:
        best = self.state.lane_best(r.lane)
        metric = f"{r.metric:.6f}" if r.metric is not None else "-"
        delta = f"{r.metric - best_before.metric:+.6f}" if r.metric is not None and best_before else ""
        best_s = f"best {best.metric:.6f}" if best else "best -"
        if self.config.compare:
            best_s = f"{r.lane[:16]} {best_s}"
        self.out(f"#{r.exp_id:<4} {r.worker:<4} {r.agent[:18]:<18} {r.status.value:<11} {metric:>9} {delta:>10}  "
                 f"{best_s}  {r.description[:80]}{'  [' + r.error[:80] + ']' if r.error and r.status != Status.KEEP else ''}")

def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast with one line when a `host:port` Ray address does not answer (Ray itself retries
    for minutes). `auto` and addresses without a port are left to Ray."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"Ray address {address} is unreachable ({exc.strerror or exc})") from None

