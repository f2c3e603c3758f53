"""Connecting the coordinator to Ray: a local cluster of its own, or one started with `ray start`
/ `ray up` (`--address`); and asking the cluster which GPT profile its worker nodes run.

A cluster of its own is always a new one (Ray's `address="local"`): without it Ray joins whatever
Ray cluster already runs on the machine (another run's, another user's); `--address auto` is the
way to join one. It serves the Ray dashboard (on 127.0.0.1, port 8265 or the next free one)
wherever the dashboard's dependencies (`ray[default]`) are installed; with them Ray's metrics agent
also writes the Prometheus service-discovery file that `ray metrics launch-prometheus` reads.
An unreachable `host:port` fails at once with one line (Ray itself retries for minutes). Not
covered: starting cluster nodes (the cluster launcher), the worker actors (swarm.worker_actor),
the swarm's metrics (swarm.metrics).
"""

from __future__ import annotations

import importlib.util
import socket
from typing import Any

from swarm.errors import ConfigError


def connect(address: str | None, **options: Any) -> str | None:
    """`ray.init` for the coordinator (nothing when this process is connected already).

    Returns the dashboard's `host:port` when it started a cluster of its own with one, else None.
    `options`: more `ray.init` arguments for a cluster of its own (tests: explicit ports)."""
    import ray

    if ray.is_initialized():
        return None
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
            return None
        # "local": a new cluster even where another one runs on this machine (joining it: --address auto)
        context = ray.init(**{"address": "local", "include_dashboard": dashboard_available(), "log_to_driver": False,
                              **options})
        return getattr(context, "dashboard_url", None) or None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local cluster"
        raise ConfigError(f"cannot reach Ray at {where}: {str(exc).splitlines()[0] if str(exc) else exc}") from None


def dashboard_available() -> bool:
    """Whether Ray's dashboard can start here (`ray[default]`, not minimal Ray)."""
    try:
        from ray._private.utils import get_dashboard_dependency_error  # Ray's own check

        return get_dashboard_dependency_error() is None
    except ImportError:  # a Ray without that helper: look for the dashboard's main dependencies
        return all(importlib.util.find_spec(name) is not None
                   for name in ("aiohttp", "aiohttp_cors", "prometheus_client"))


def worker_profile(num_gpus: float, num_cpus: float, timeout: float = 300.0) -> str:
    """The GPT profile a worker's node resolves (AUTORESEARCH_PROFILE there, else its own CUDA),
    from a Ray task that asks for what a worker asks for, so it lands where a worker would."""
    import ray

    @ray.remote(max_retries=0)
    def profile_here() -> str:
        from prepare.profiles import active_profile

        return active_profile().name

    ref = profile_here.options(num_gpus=num_gpus, num_cpus=num_cpus).remote()
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        raise ConfigError(f"no node of the cluster could take a worker within {timeout:.0f} s "
                          "(to resolve the profile); pass --profile gpu|cpu") from None


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast with one line when a `host:port` Ray address does not answer. `auto` and
    addresses without a port are left to Ray."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"Ray address {address} is unreachable ({exc.strerror or exc})") from None


__all__ = ["connect", "check_reachable", "dashboard_available", "worker_profile"]
