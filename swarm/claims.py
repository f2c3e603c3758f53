"""Claims on changes: which change runs, or ran, on which parent, so that no change runs twice.

A claim is keyed by (lane, parent commit, content hash of the mutable files after the change): two
proposals that produce the same files on the same parent are the same experiment. A worker claims
its proposal after committing it and before running it; when the key is taken, the experiment is
recorded `duplicate` and nothing runs. The claims also tell agents what is running now (the
in-flight list in their context). `Claims` is plain logic; `claims_actor()` wraps it as a small Ray
actor that every worker of a run calls (the coordinator creates it, seeded from the journal on
resume). Not covered: deciding anything about the experiments (swarm.decisions).
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping

from swarm.records import InFlight

Key = tuple[str, str, str]  # lane, parent, content hash


def content_hash(files: Mapping[str, str]) -> str:
    """sha256 over the mutable files' paths and texts (the identity of a change on a parent)."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + (files[path] or "").encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


class Claims:
    def __init__(self, done: Iterable[tuple[Key, int]] = ()):
        self.holder: dict[Key, int] = {}  # key -> exp id that holds it
        self.running: dict[int, tuple[Key, InFlight]] = {}  # exp id -> its key and in-flight view
        for key, exp_id in done:
            self.holder.setdefault(tuple(key), int(exp_id))

    def claim(self, lane: str, parent: str, digest: str, flight: InFlight) -> int | None:
        """Claim the change for `flight.exp_id`; returns the holder's exp id when it is taken."""
        key = (lane, parent, digest)
        holder = self.holder.get(key)
        if holder is not None and holder != flight.exp_id:
            return holder
        self.holder[key] = flight.exp_id
        self.running[flight.exp_id] = (key, flight)
        return None

    def taken(self, lane: str, parent: str, digest: str) -> int | None:
        """The exp id holding this change on this parent, or None (nothing is claimed)."""
        return self.holder.get((lane, parent, digest))

    def finish(self, exp_id: int) -> None:
        """The experiment ended: its change stays taken, it is no longer in flight."""
        self.running.pop(exp_id, None)

    def release(self, exp_id: int) -> None:
        """The experiment never really ran (interrupted, its worker died): its change is free again."""
        entry = self.running.pop(exp_id, None)
        if entry is not None and self.holder.get(entry[0]) == exp_id:
            del self.holder[entry[0]]

    def in_flight(self, lane: str) -> tuple[InFlight, ...]:
        return tuple(flight for (key, flight) in self.running.values() if key[0] == lane)


_ACTOR = None


def claims_actor() -> Any:
    """The Ray actor class wrapping `Claims` (built on first use: importing this module is Ray-free)."""
    global _ACTOR
    if _ACTOR is None:
        import ray

        @ray.remote(num_cpus=0, max_restarts=0)
        class ClaimsActor:
            __qualname__ = "ClaimsActor"  # Ray's dashboard shows this, not claims_actor.<locals>.ClaimsActor

            def __init__(self, done):
                self.claims = Claims(done)

            def claim(self, lane, parent, digest, flight):
                return self.claims.claim(lane, parent, digest, flight)

            def taken(self, lane, parent, digest):
                return self.claims.taken(lane, parent, digest)

            def finish(self, exp_id):
                self.claims.finish(exp_id)

            def release(self, exp_id):
                self.claims.release(exp_id)

            def in_flight(self, lane):
                return self.claims.in_flight(lane)

        _ACTOR = ClaimsActor
    return _ACTOR


def call(claims: Any, method: str, *args: Any) -> Any:
    """Call `method` on a plain `Claims` or on its actor handle (waiting for the answer)."""
    target = getattr(claims, method)
    if hasattr(target, "remote"):
        import ray

        return ray.get(target.remote(*args), timeout=60)
    return target(*args)


__all__ = ["Claims", "call", "claims_actor", "content_hash"]
