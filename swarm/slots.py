"""The worker slots of a run: one `WorkerSpec` per worker, from the configuration and the plan.

`make_slots` decides what each worker is (name, agent, lane, checkout, seed, threads); the claims
actor that keeps two workers from running the same change is created here too, on the
coordinator's node. Not covered: running the actors (swarm.pool, swarm.worker_actor).
"""

from __future__ import annotations

from typing import Any

from swarm.claims import claims_actor
from swarm.config import SwarmConfig, WorkerPlan
from swarm.lanes import MAIN
from swarm.pool import Slot
from swarm.records import Kind, Status
from swarm.state import RunState
from swarm.worker import WorkerSpec


def make_slots(cfg: SwarmConfig, plan: WorkerPlan, node: str, claims: Any) -> list[Slot]:
    """One slot per planned worker; `node` is the coordinator's Ray node id (transport "auto")."""
    slots = []
    for i in range(plan.count):
        name = f"w{i}"
        env = {"OMP_NUM_THREADS": str(plan.threads)}
        spec = WorkerSpec(
            name=name, tag=cfg.tag, task=cfg.task, agent=cfg.agent_for(i),
            checkout=str(cfg.run_dir / "worktrees" / name), log_dir=str(cfg.run_dir / "logs"),
            transport=cfg.transport, coordinator_node=node, seed=cfg.seed * 1000 + i, env=env,
            prepare_data=cfg.prepare_data, profile=cfg.profile, source=cfg.source,
            clone_dir=str(cfg.run_dir / "clones" / name) if cfg.transport == "bundle" else "",
            run_id=str(cfg.run_dir.resolve()), prefetch=cfg.prefetch, claims=claims, sandbox=cfg.sandbox,
        )
        slots.append(Slot(i, spec, lane=cfg.lane_for(i).name if cfg.compare else MAIN))
    return slots


def start_claims(state: RunState, node: str):
    """The claims actor, pinned to the coordinator's node (it lives as long as the run), seeded
    with the changes the journal says were already tried."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return claims_actor().options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
        claimed_changes(state))


def claimed_changes(state: RunState) -> list:
    """The changes already tried, from the journal: ((lane, parent, content hash), exp id)."""
    return [((r.lane, r.parent, r.content_hash), r.exp_id) for r in state.verdicts.values()
            if r.kind in (Kind.PROPOSAL, Kind.COMBINATION) and r.content_hash
            and r.status not in (Status.INTERRUPTED, Status.DUPLICATE)]


__all__ = ["make_slots", "start_claims", "claimed_changes"]
