"""The Ray edge of the worker pool: the actor around `swarm.worker.Worker` and `RayBackend`.

The actor is a thin wrapper: methods run one at a time in order, except `kill_task` (its own
concurrency group), so a clean stop can end a running task. In Ray's dashboard and log prefixes it
shows as `w3@<node ip>` (its repr); its actor name is the pool's, unique per run and
replacement (`swarm-<tag>-w3-g2`), and a name still held by an actor that is not gone yet gets a
suffix instead of failing the start. `RayBackend` is what
`swarm.pool.WorkerPool` calls (create, setup, run, wait, get, kill, end the tasks on every node),
mapping Ray's errors to `WorkerLost`. `recover_commit` fetches a dead worker's last commit from its
node. Importing this module is Ray-free: Ray is imported on first use.
"""

from __future__ import annotations

from typing import Any

from swarm.decisions import Assignment
from swarm.proc import kill_strays
from swarm.worker import Worker, WorkerResult, WorkerSpec

_ACTOR_CLASS = None


def actor_class():
    """The Ray actor class wrapping `Worker` (built on first use: importing this module is Ray-free)."""
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        import ray

        @ray.remote(max_restarts=0, max_task_retries=0, concurrency_groups={"control": 1})
        class WorkerActor:
            """Methods run one at a time in order, except `kill_task` (its own concurrency group)."""

            __qualname__ = "WorkerActor"  # its class name in Ray's dashboard (not actor_class.<locals>...)

            def __init__(self, spec: WorkerSpec):
                self.worker = Worker(spec)
                self.where = ray.util.get_node_ip_address()  # placed already: this is its node

            def __repr__(self) -> str:  # Ray's dashboard ("Repr") and log prefixes: w3@10.0.0.5
                return f"{self.worker.spec.name}@{self.where}"

            def setup(self) -> dict[str, Any]:
                here = ray.get_runtime_context().get_node_id()
                info = self.worker.setup(same_node=here == self.worker.spec.coordinator_node)
                return {**info, "node_id": here, "node_ip": self.where}

            def run(self, a: Assignment, bundle: bytes | None = None, prefetch_next: bool = True) -> WorkerResult:
                return self.worker.run(a, bundle, prefetch_next)

            def ping(self) -> str:
                return self.worker.ping()

            @ray.method(concurrency_group="control")
            def kill_task(self) -> None:
                self.worker.kill_task()

        _ACTOR_CLASS = WorkerActor
    return _ACTOR_CLASS


NAME_ATTEMPTS = 5  # names tried for one actor when an earlier actor still holds the name


def actor_name(name: str, attempt: int = 1) -> str:
    """The Ray actor name for the pool's `name` (its `attempt`-th try: a suffix after the first)."""
    return name if attempt == 1 else f"{name}.{attempt}"


class RayBackend:
    """`swarm.pool.Backend` over Ray actors with the given resources (num_gpus / num_cpus)."""

    def __init__(self, resources: dict[str, Any], stop_timeout: float = 30.0):
        self.resources = resources
        self.stop_timeout = stop_timeout

    def create(self, spec: WorkerSpec, name: str):
        import ray

        taken = getattr(ray.exceptions, "ActorAlreadyExistsError", ValueError)  # a ValueError in older Ray
        for attempt in range(1, NAME_ATTEMPTS + 1):
            try:
                return actor_class().options(name=actor_name(name, attempt), **self.resources).remote(spec)
            except taken:
                if attempt == NAME_ATTEMPTS:
                    raise

    def setup(self, actor):
        return actor.setup.remote()

    def run(self, actor, a: Assignment, bundle: bytes | None, more: bool):
        return actor.run.remote(a, bundle, more)

    def wait(self, refs: list, timeout: float) -> list:
        import ray

        ready, _ = ray.wait(refs, num_returns=1 if timeout else len(refs), timeout=timeout)
        return ready

    def get(self, ref):
        import ray

        from swarm.pool import WorkerLost, short

        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            raise WorkerLost(f"worker actor died: {short(exc)}", died=True) from None
        except ray.exceptions.RayError as exc:
            raise WorkerLost(f"worker error: {short(exc)}", died=False) from None

    def kill(self, actor) -> None:
        import ray

        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - gone already
            pass

    def kill_task(self, actor) -> None:
        try:
            actor.kill_task.remote()
        except Exception:  # noqa: BLE001 - the actor may be gone already
            pass

    def end_tasks(self, run_mark: str, workers: list[str], nodes: list[str]) -> None:
        """End this run's task processes on each node (and this one): a task outlives its actor."""
        import ray

        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        for worker in workers:
            kill_strays(run_mark, worker)
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        here = ray.get_runtime_context().get_node_id()
        refs = [_end_tasks_remote().options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                .remote(run_mark, workers) for node in nodes if node in alive and node != here]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=self.stop_timeout)


def recover_commit(info: dict, branch: str, parent: str, marker: str, timeout: float = 60.0) -> bytes | None:
    """A bundle of a dead bundle-transport worker's last commit (its branch tip, when it is the
    commit of the experiment `marker` names on `parent`), fetched on the worker's node; None when
    the node or the commit is gone."""
    import ray

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node, checkout = info.get("node_id"), info.get("checkout")
    if not node or not checkout:
        return None
    ref = _recover_remote().options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
        checkout, branch, parent, marker)
    ready, _ = ray.wait([ref], timeout=timeout)
    if not ready:
        ray.cancel(ref, force=True)
        return None
    try:
        return ray.get(ref)
    except ray.exceptions.RayError:
        return None


_REMOTES: dict[str, Any] = {}


def _end_tasks_remote():
    if "end" not in _REMOTES:
        import ray

        @ray.remote(num_cpus=0, max_retries=0)
        def end_tasks(run_mark: str, workers: list[str]) -> None:
            from swarm.proc import kill_strays as kill_here  # this node's, imported where it runs

            for worker in workers:
                kill_here(run_mark, worker)

        _REMOTES["end"] = end_tasks
    return _REMOTES["end"]


def _recover_remote():
    if "recover" not in _REMOTES:
        import ray

        @ray.remote(num_cpus=0, max_retries=0)
        def recover(checkout: str, branch: str, parent: str, marker: str) -> bytes | None:
            from swarm import gitops

            repo = gitops.open_repo(checkout)
            commit = gitops.find_exp_commit(repo, branch, parent, marker)
            return gitops.create_bundle(repo, commit, exclude=[parent]) if commit else None

        _REMOTES["recover"] = recover
    return _REMOTES["recover"]


__all__ = ["actor_class", "actor_name", "RayBackend", "recover_commit"]
