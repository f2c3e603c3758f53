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
coordinator continues where the journal ends. One coordinator per run: it holds the run lock
(swarm.runlock) for its whole life. Starting, replacing and retiring worker actors: the worker pool
(swarm.pool), whose events the coordinator journals. Every journaled event also feeds the Ray
metrics (swarm.metrics). Not covered: what a worker does (swarm.worker), CLI parsing (swarm.commands.run).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from swarm import exports, gitops, raycluster
from swarm.commit_transfer import bundle_for, recover_commit
from swarm.config import SwarmConfig, plan_workers
from swarm.decisions import (
    Assignment, Best, SchedulerView, baseline_stats, decide, experiment_seed, improves, next_kind,
    unfinished_record,
)
from swarm.errors import ConfigError, GitError, SwarmError
from swarm.journal import EventType, Journal
from swarm.lanes import MAIN, best_ref, split_workers
from swarm.metrics import SwarmMetrics
from swarm.noise import Noise
from swarm.preflight import preflight
from swarm.promoter import Promoter
from swarm.promotion import best_runs_wanted, confirm_description, confirm_targets
from swarm.pacing import outage_delay, over_budget
from swarm.records import AgentFailure, ExperimentRecord, Kind, Reapply, Status, Usage
from swarm.runlock import RunLock
from swarm.pool import Outcome, Slot, WorkerPool
from swarm.slots import make_slots, start_claims
from swarm.state import RunState

HISTORY_LIMIT = 200  # finished experiments sent to agents with each assignment


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


class Coordinator:
    stopping = False  # its loop has ended (a stop seen, or a limit): what remains is recording the end

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
        # the worker actors (its Ray backend is set when the workers start)
        self.pool = WorkerPool(None, f"swarm-{config.tag}", prepare=self._prepare_checkout)
        self._said_no_workers = False
        self.overheads: list[float] = []
        self.best_ref = best_ref(config.tag, MAIN)
        self.fatal: str | None = None
        self.promoter = Promoter(config, self.repo, self._log, lambda: self.state)
        self.claims = None  # swarm.claims actor, created with the workers
        self.metrics = SwarmMetrics(config.tag)  # Ray metrics from the journaled events

    @property
    def slots(self) -> list[Slot]:
        return self.pool.slots

    @property
    def no_workers(self) -> str | None:
        return self.pool.no_workers

    # ---- journal: every event goes through here ------------------------------------------

    def _log(self, event: EventType, **body: Any) -> None:
        written = self.journal.append(event, **body)
        self.state.apply(written)
        self.metrics.observe(written, self.state)  # never raises

    # ---- start ----------------------------------------------------------------------------

    def run(self) -> RunSummary:
        t0 = time.monotonic()
        reason = "done"
        lock = RunLock(self.config.run_dir)
        previous = lock.acquire()  # before Ray starts: a second coordinator is refused at once
        try:
            self._connect_ray()
            import pyarrow.parquet  # noqa: F401 - imported once here, not inside the first timed export

            plan = self._open_run()
        except BaseException:
            lock.release()
            raise
        if previous is not None and self.config.resume:
            self._log(EventType.NOTE, text=f"took over from a coordinator that died ({previous.describe()})")
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
            try:
                self._log(EventType.RUN_STOPPED, reason=reason)
                self._shutdown_workers()
                self._export()
            finally:
                lock.release()
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
        raycluster.connect(self.config.address)
        if self.on_connected:
            self.on_connected()

    def _open_run(self):
        import ray

        cfg = self.config
        gitops.ensure_excluded(self.repo, ".swarm/")
        resumed = preflight(cfg, self.repo)  # the CLI ran these checks before Ray; library users get them here
        if cfg.resume:
            self.state = resumed
            plan = self._split(plan_workers(ray.cluster_resources(), cfg.workers or self.state.wave_size))
            self._log(EventType.RUN_RESUMED, config=cfg.to_dict())
            for lane, best in self.state.bests.items():  # the journal is the truth: undo a ref update it never recorded
                gitops.update_ref(self.repo, best_ref(cfg.tag, lane), best.commit)
            self._settle()
            for a in self.state.running():  # started, never finished: the previous coordinator died
                self._record(unfinished_record(a, Status.INTERRUPTED, "run stopped while it was running", time.time()))
            return plan
        plan = self._split(plan_workers(ray.cluster_resources(), cfg.workers))
        if cfg.prepare_data and cfg.profile is None:  # the GPT task on a cluster: the workers' nodes decide
            cfg = self._resolve_profile(plan)
        config = {**cfg.to_dict(), "workers": plan.count, "wave_size": max(plan.count, cfg.baseline_runs)}
        self._log(EventType.RUN_STARTED, tag=cfg.tag, base_commit=gitops.head_commit(self.repo), config=config)
        if cfg.compare:
            lanes = cfg.lanes
            self._log(EventType.NOTE, text=f"compare run: {len(lanes)} lanes x {plan.count // len(lanes)} workers: "
                      + ", ".join(f"{lane.name} ({lane.agent.name})" for lane in lanes))
        return plan

    def _resolve_profile(self, plan) -> SwarmConfig:
        """The GPT task's profile as a worker's node sees it (its own GPU), not as the driver does."""
        import dataclasses

        from swarm.task import gpt_task

        name = raycluster.worker_profile(plan.num_gpus, plan.num_cpus)
        self.config = dataclasses.replace(self.config, profile=name, task=gpt_task(name))
        self.promoter = Promoter(self.config, self.repo, self._log, lambda: self.state)
        self.out(f"profile: {name} (as a worker's node sees it)")
        return self.config

    def _split(self, plan):
        """A compare run uses an equal number of workers per lane (the remainder stays idle)."""
        if not self.config.compare:
            return plan
        import dataclasses

        count = split_workers(plan.count, len(self.config.lanes))
        if count != plan.count:
            self.out(f"compare: using {count} of {plan.count} workers so that every lane gets an equal share")
        return dataclasses.replace(plan, count=count)

    # ---- workers (swarm.pool holds the actors; their events are journaled here) -----------

    def _start_workers(self, plan) -> None:
        import ray

        from swarm.worker_actor import RayBackend

        node = ray.get_runtime_context().get_node_id()
        self.claims = start_claims(self.state, node)
        self.pool.backend = RayBackend({"num_gpus": plan.num_gpus, "num_cpus": plan.num_cpus})
        self.pool.start(make_slots(self.config, plan, node, self.claims), stopped=self.stop.is_set)
        mismatches = [slot.info["profile_mismatch"] for slot in self.slots if slot.info.get("profile_mismatch")]
        if mismatches:  # before any experiment: a CPU worker in a GPU run would measure another model
            raise ConfigError(mismatches[0] + (f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""))
        self._pool_events()
        warnings = sorted({slot.info["sandbox_warning"] for slot in self.slots if slot.info.get("sandbox_warning")})
        for text in warnings:  # --sandbox auto fell back to off on some node
            self._log(EventType.NOTE, text=f"sandbox: {text}")
            self.out(f"!     sandbox: {text}")

    def _prepare_checkout(self, slot: Slot) -> None:
        """Repair (or create) a worktree-transport slot's worktree at its lane's best before an actor starts."""
        if slot.spec.transport == "bundle":
            return
        best = self.state.lane_best(slot.lane)
        start = best.commit if best else self.state.base_commit
        gitops.ensure_worktree(self.repo, Path(slot.spec.checkout), slot.spec.branch, start)

    def _pool_events(self) -> None:
        """Journal and print what the pool did (replacements, retries, retirements)."""
        for event in self.pool.take_events():
            self._log(EventType.NOTE, text=event.text)
            self.out(f"!     {event.text[:300]}")
        if self.pool.no_workers and not self._said_no_workers:
            self._said_no_workers = True
            self._log(EventType.NOTE, text=f"{self.pool.no_workers}; the run ends")
            self.out(f"!     {self.pool.no_workers[:300]}; the run ends")

    def _agent_unavailable(self, slot: Slot, a: Assignment, failures: tuple) -> None:
        """The agent gave no proposal (an outage past its own retries): nothing ran. Withdraw the
        assignment (its id is handed out again), journal the attempt (its usage counts towards the
        cost) and let this worker wait, doubling up to agent_backoff_max; the others go on. A
        permanent failure (bad key, unknown model, bad request) retires the worker instead."""
        failure = failures[-1] if failures else AgentFailure("the agent gave no proposal", at=time.time())
        slot.outages += 1
        cfg = self.config
        delay = 0.0 if failure.permanent else outage_delay(slot.outages, cfg.agent_backoff, cfg.agent_backoff_max)
        self.pool.pause(slot, delay)
        if slot.outages == 1 and not failure.permanent:
            self._log(EventType.NOTE, text=f"{slot.name}: agent {a.agent} unavailable ({failure.error}); "
                      "the worker waits and asks again, the others go on")
        self._log(EventType.AGENT_ERROR, worker=slot.name, agent=a.agent, lane=a.lane, exp_id=a.exp_id,
                  retry_in=delay, **failure.to_dict())
        head = f"-{a.exp_id:<4} {slot.name:<4} {a.agent[:18]:<18} {'agent error':<11} {'-':>9} {'':>10}  "
        if failure.permanent:
            self.out(f"{head}permanent: the worker is retired (nothing ran)  [{failure.error[:100]}]")
            self.pool.retire(slot, f"agent {a.agent} failed permanently ({failure.error[:200]})")
            self._pool_events()
            return
        self.out(f"{head}retry in {delay:.0f} s (attempt {slot.outages}; nothing ran)  [{failure.error[:100]}]")

    def _interrupt_running(self) -> None:
        """Record every running experiment as interrupted and stop its task."""
        for a in self.pool.interrupt_all():
            if a.exp_id not in self.state.verdicts:
                self._record(unfinished_record(a, Status.INTERRUPTED, "run stopped while it was running", time.time()))

    def _shutdown_workers(self) -> None:
        """Kill the actors, end the task processes on every node, drop the claims actor."""
        import ray

        if self.pool.backend is not None:
            self.pool.shutdown()
        if self.claims is not None:
            try:
                ray.kill(self.claims)
            except Exception:  # noqa: BLE001
                pass

    # ---- the loop -------------------------------------------------------------------------

    def _loop(self, t0: float) -> str:
        deadline = t0 + self.config.hours * 3600 if self.config.hours else None
        reason = "done"
        while True:
            if self.stop.is_set():
                self.stopping = True
                raise KeyboardInterrupt
            reason = self._limit(reason, deadline)
            self._fill_idle(stopping=reason != "done" or self.fatal is not None)
            self._pool_events()
            limit = self.config.max_experiments
            more = limit is None or self.state.counted_experiments() < limit  # else no waiting worker gets work
            if not self.pool.inflight and not (reason == "done" and self.fatal is None and more and self.pool.waiting()):
                break
            outcomes = self.pool.poll(0.5)  # idle workers may be waiting out an outage or a replacement
            self._pool_events()
            if not outcomes:
                continue
            tick = time.perf_counter()
            for outcome in outcomes:  # completion order, as if one by one
                self._handle(outcome)
                reason = self._limit(reason, deadline)
                self._fill_idle(stopping=reason != "done" or self.fatal is not None)
            self._export()  # once per batch, after the idle workers have their next experiment
            self.overheads.extend([(time.perf_counter() - tick) / len(outcomes)] * len(outcomes))
        self.stopping = True
        if self.fatal:
            return "error"
        limit = self.config.max_experiments
        if reason == "done" and limit is not None and self.state.counted_experiments() >= limit:
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
        running = self.pool.running()
        targets = self._confirm_targets(lane, worker, running) if self.config.gate else []
        best = s.lane_best(lane)
        return SchedulerView(
            started=s.counted_experiments(), baseline_done=s.lane_best(lane) is not None,
            baselines_to_start=s.baselines_to_start(running), queued_combinations=len(s.queue_for(lane)),
            max_experiments=self.config.max_experiments, stopping=stopping,
            confirms_wanted=len(targets), best_unsettled=bool(targets) and targets[0] == getattr(best, "commit", None),
        )

    def _confirm_targets(self, lane: str, worker: str, running: list[Assignment]) -> list[str]:
        best_runs = best_runs_wanted(self.config.max_runs, len(self.slots))
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
            running = self.pool.running()
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
            bundle = bundle_for(self.repo, parent, slot.synced)
        limit = self.config.max_experiments
        more = (limit is None or s.counted_experiments() < limit) and not over_budget(
            s.total_usage().cost_usd, self.config.max_cost)  # else a prefetch would be wasted
        self.pool.submit(slot, a, bundle, more)
        slot.synced = parent

    def _handle(self, outcome: Outcome) -> None:
        slot = outcome.slot
        a = self.pool.release(slot)
        if outcome.lost is not None:
            commit = recover_commit(self.repo, self.config.tag, slot, a) if outcome.lost.died else ""
            # lost with its worker: a combination goes back to the queue (swarm.state)
            record = unfinished_record(a, Status.CRASH, str(outcome.lost), time.time())
            self._record(record.replace(commit=commit) if commit else record, lost=outcome.lost.died)
            self.pool.lost(slot, outcome.lost)  # replaced, or retired after too many failures
            return
        self.pool.succeeded(slot)
        result = outcome.result
        if result.record is None:
            self._agent_unavailable(slot, a, result.agent_errors)
            return
        if slot.outages:
            self._log(EventType.NOTE, text=f"{slot.spec.name}: agent {a.agent} answers again after {slot.outages} "
                      "failed attempt(s)")
            slot.outages = 0
        record = result.record
        if result.log is not None:  # a worker on another node: its log comes to the run's logs/ here
            path = self.config.run_dir / "logs" / f"{record.exp_id}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(result.log)
            record = record.replace(log_path=str(path))
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
        running = self.pool.running()
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
