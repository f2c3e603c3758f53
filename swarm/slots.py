"""Worker slots of the coordinator: starting, replacing, pacing, retiring and stopping worker actors.

A `Slot` is one worker position (w0, w1, ...): its spec, its current Ray actor and what it runs.
`WorkerSlots` is the part of `swarm.coordinator.Coordinator` that manages them: the first start,
a replacement actor after one died (its setup is awaited by the loop, with a timeout), the
backoff of a worker whose agent is unavailable, and retiring a slot for good (too many worker
failures, a permanent agent error, a worker that cannot be set up): its actor is killed so that
its GPU is freed, and when every slot is retired the run ends (`no_workers`). Not covered:
scheduling and recording experiments (swarm.coordinator), what a worker does (swarm.worker).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarm import gitops
from swarm.decisions import Assignment, unfinished_record
from swarm.errors import GitError
from swarm.journal import EventType
from swarm.lanes import MAIN
from swarm.pacing import outage_delay
from swarm.claims import claims_actor
from swarm.records import AgentFailure, Kind, Status
from swarm.worker import WorkerSpec, kill_strays
from swarm.worker_actor import actor_class

SETUP_TIMEOUT = 600.0  # seconds a replacement actor may take to start (placement + setup) before its slot is retired


@dataclass
class Slot:
    """One worker position: its spec, current actor and what it is running."""

    index: int
    spec: WorkerSpec
    actor: Any = None
    generation: int = 0
    transport: str = "worktree"
    synced: str | None = None  # last commit sent to it as a bundle
    busy: Assignment | None = None
    info: dict = field(default_factory=dict)
    failures: int = 0  # consecutive experiments lost to the worker itself (death, setup or git error)
    retired: bool = False  # no more assignments (worker failures, permanent agent error, setup failure)
    lane: str = MAIN  # the lane it races for (compare runs)
    outages: int = 0  # its agent's failed attempts in a row (AgentError): it waits, the others go on
    not_before: float = 0.0  # monotonic time before which it gets no assignment (outage backoff)
    starting_until: float | None = None  # a replacement actor is being set up until this monotonic time

    @property
    def ready(self) -> bool:
        """It may get an assignment now."""
        return (self.busy is None and not self.retired and self.starting_until is None
                and self.not_before <= time.monotonic())


class WorkerSlots:
    """Slot management of the Coordinator (a mixin: it uses the coordinator's state and journal)."""

    setup_timeout: float = SETUP_TIMEOUT
    no_workers: str | None = None  # why the run ran out of workers (every slot retired)

    def _start_workers(self, plan) -> None:
        import ray

        cfg = self.config
        self.setups: dict[Any, Slot] = {}  # setup ref of a replacement actor -> its slot
        node = ray.get_runtime_context().get_node_id()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.claims = claims_actor().options(  # with the coordinator: it lives as long as the run
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(self._claimed())
        for i in range(plan.count):
            name = f"w{i}"
            env = {"OMP_NUM_THREADS": str(plan.threads)}
            spec = WorkerSpec(
                name=name, tag=cfg.tag, task=cfg.task, agent=cfg.agent_for(i),
                checkout=str(cfg.run_dir / "worktrees" / name), log_dir=str(cfg.run_dir / "logs"),
                transport=cfg.transport, coordinator_node=node, seed=cfg.seed * 1000 + i, env=env,
                prepare_data=cfg.prepare_data, profile=cfg.profile, source=cfg.source,
                clone_dir=str(cfg.run_dir / "clones" / name) if cfg.transport == "bundle" else "",
                run_id=str(cfg.run_dir.resolve()), prefetch=cfg.prefetch, claims=self.claims,
            )
            self.slots.append(Slot(i, spec, lane=cfg.lane_for(i).name if cfg.compare else MAIN))
        self._resources = {"num_gpus": plan.num_gpus, "num_cpus": plan.num_cpus}
        setups = [(slot, self._spawn(slot)) for slot in self.slots]
        for slot, ref in setups:
            if ref is None:
                continue
            try:
                info = ray.get(ref)
            except ray.exceptions.RayError as exc:
                self._retire(slot, f"it failed to start: {short_error(exc)}")
                continue
            slot.info, slot.transport = info, info["transport"]

    def _claimed(self) -> list:
        """The changes already tried, from the journal: ((lane, parent, content hash), exp id)."""
        return [((r.lane, r.parent, r.content_hash), r.exp_id) for r in self.state.verdicts.values()
                if r.kind in (Kind.PROPOSAL, Kind.COMBINATION) and r.content_hash and r.status not in (Status.INTERRUPTED, Status.DUPLICATE)]

    def _spawn(self, slot: Slot):
        """(Re)create the slot's actor, repairing its worktree first; returns its setup ref
        (None when the worktree cannot be repaired: the slot is retired)."""
        best = self.state.lane_best(slot.lane)
        start = best.commit if best else self.state.base_commit
        if slot.spec.transport != "bundle":
            try:
                gitops.ensure_worktree(self.repo, Path(slot.spec.checkout), slot.spec.branch, start)
            except GitError as exc:
                self._retire(slot, f"its worktree cannot be set up ({exc})")
                return None
        slot.generation += 1
        slot.synced = None
        slot.actor = actor_class().options(
            name=f"swarm-{self.config.tag}-{slot.spec.name}-g{slot.generation}", **self._resources
        ).remote(slot.spec)
        return slot.actor.setup.remote()

    def _replace(self, slot: Slot) -> None:
        """A new actor for a slot whose actor died; it gets work once its setup has reported."""
        ref = self._spawn(slot)
        if ref is not None:
            slot.starting_until = time.monotonic() + self.setup_timeout
            self.setups[ref] = slot

    def _setup_done(self, ref) -> None:
        """A replacement actor's setup reported: the slot takes work again (or is retired)."""
        import ray

        slot = self.setups.pop(ref)
        slot.starting_until = None
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as exc:
            self._retire(slot, f"its replacement actor failed to start: {short_error(exc)}")
            return
        slot.info, slot.transport, slot.synced = info, info["transport"], None  # bundle transport: full bundle next

    def _check_setups(self) -> None:
        """Retire slots whose replacement actor did not start in time (e.g. no GPU left for it)."""
        now = time.monotonic()
        for ref, slot in list(self.setups.items()):
            if slot.starting_until is not None and now >= slot.starting_until:
                del self.setups[ref]
                slot.starting_until = None
                self._retire(slot, f"its replacement actor did not start within {self.setup_timeout:.0f} s")

    def _retire(self, slot: Slot, why: str) -> None:
        """No more assignments for this slot; its actor is killed (its GPU is freed)."""
        import ray

        slot.retired = True
        self._log(EventType.NOTE, text=f"{slot.spec.name} retired: {why}")
        self.out(f"!     {slot.spec.name:<4} retired: {why[:200]}")
        if slot.actor is not None:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - gone already
                pass
        if all(other.retired for other in self.slots):
            self.no_workers = f"every worker is retired (last: {slot.spec.name}: {why})"
            self._log(EventType.NOTE, text=f"{self.no_workers}; the run ends")
            self.out(f"!     {self.no_workers[:300]}; the run ends")

    def _waiting(self) -> bool:
        """Some idle worker is waiting out an agent outage or for its replacement actor."""
        now = time.monotonic()
        return any(slot.busy is None and not slot.retired and (slot.not_before > now or slot.starting_until)
                   for slot in self.slots)

    def _agent_unavailable(self, slot: Slot, a: Assignment, failures: tuple) -> None:
        """The agent gave no proposal (an outage past its own retries): nothing ran. Withdraw the
        assignment (its id is handed out again), journal the attempt (its usage counts towards the
        cost) and let this worker wait, doubling up to agent_backoff_max; the others go on. A
        permanent failure (bad key, unknown model, bad request) retires the worker instead."""
        failure = failures[-1] if failures else AgentFailure("the agent gave no proposal", at=time.time())
        slot.outages += 1
        delay = 0.0 if failure.permanent else outage_delay(slot.outages, self.config.agent_backoff,
                                                           self.config.agent_backoff_max)
        slot.not_before = time.monotonic() + delay
        if slot.outages == 1 and not failure.permanent:
            self._log(EventType.NOTE, text=f"{slot.spec.name}: agent {a.agent} unavailable ({failure.error}); "
                      "the worker waits and asks again, the others go on")
        self._log(EventType.AGENT_ERROR, worker=slot.spec.name, agent=a.agent, lane=a.lane, exp_id=a.exp_id,
                  retry_in=delay, **failure.to_dict())
        if failure.permanent:
            self.out(f"-{a.exp_id:<4} {slot.spec.name:<4} {a.agent[:18]:<18} {'agent error':<11} {'-':>9} {'':>10}  "
                     f"permanent: the worker is retired (nothing ran)  [{failure.error[:100]}]")
            self._retire(slot, f"agent {a.agent} failed permanently ({failure.error[:200]})")
            return
        self.out(f"-{a.exp_id:<4} {slot.spec.name:<4} {a.agent[:18]:<18} {'agent error':<11} {'-':>9} {'':>10}  "
                 f"retry in {delay:.0f} s (attempt {slot.outages}; nothing ran)  [{failure.error[:100]}]")

    def _bundle_for(self, commit: str, worker_has: str | None) -> bytes:
        """A bundle of `commit`, thin against what the worker already has when that works."""
        if worker_has:
            try:
                return gitops.create_bundle(self.repo, commit, exclude=[worker_has])
            except GitError:  # e.g. nothing new relative to it: send the whole history
                pass
        return gitops.create_bundle(self.repo, commit)

    # ---- stopping -------------------------------------------------------------------------

    def _interrupt_running(self) -> None:
        """Record every running experiment as interrupted and stop its task."""
        self.inflight.clear()
        for slot in self.slots:
            a, slot.busy = slot.busy, None
            if a is None:
                continue
            try:
                slot.actor.kill_task.remote()
            except Exception:  # noqa: BLE001 - the actor may be gone already
                pass
            if a.exp_id not in self.state.verdicts:
                self._record(unfinished_record(a, Status.INTERRUPTED, "run stopped while it was running", time.time()))

    def _shutdown_workers(self) -> None:
        import ray

        for slot in self.slots:
            if slot.actor is not None:
                try:
                    ray.kill(slot.actor)
                except Exception:  # noqa: BLE001
                    pass
                kill_strays(slot.spec.run_mark, slot.spec.name)  # local node: tasks outliving their actor
        if getattr(self, "claims", None) is not None:
            try:
                ray.kill(self.claims)
            except Exception:  # noqa: BLE001
                pass


def short_error(exc: BaseException) -> str:
    """The last line of an error, short (for notes and records)."""
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:200]
