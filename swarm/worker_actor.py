"""The Ray actor around `swarm.worker.Worker`: a thin wrapper, nothing else.

Methods run one at a time in order, except `kill_task` (its own concurrency group), so a clean stop
can end a running task. Importing this module is Ray-free: the class is built on first use.
"""

from __future__ import annotations

from typing import Any

from swarm.decisions import Assignment
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

            def __init__(self, spec: WorkerSpec):
                self.worker = Worker(spec)

            def setup(self) -> dict[str, Any]:
                here = ray.get_runtime_context().get_node_id()
                return self.worker.setup(same_node=here == self.worker.spec.coordinator_node)

            def run(self, a: Assignment, bundle: bytes | None = None, prefetch_next: bool = True) -> WorkerResult:
                return self.worker.run(a, bundle, prefetch_next)

            def ping(self) -> str:
                return self.worker.ping()

            @ray.method(concurrency_group="control")
            def kill_task(self) -> None:
                self.worker.kill_task()

        _ACTOR_CLASS = WorkerActor
    return _ACTOR_CLASS



__all__ = ["actor_class"]
