"""Shared by tests/test_metrics.py and tests/test_prometheus.py: the swarm's own Ray cluster
(`raycluster.connect` without an address, so Ray's `address="local"`: a new cluster even where
others run on this machine) with explicit free ports and the dashboard on.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from typing import Iterator

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def own_cluster() -> Iterator[dict]:
    """Starts the cluster and shuts down only it. Yields `metrics` (the node's Prometheus endpoint),
    `dashboard` (host:port) and `session_dir` (this cluster's Ray session directory)."""
    ray = pytest.importorskip("ray")
    from swarm import raycluster

    if ray.is_initialized():
        pytest.skip("another Ray session is connected in this process")
    metrics_port, dashboard_port = free_port(), free_port()
    url = raycluster.connect(None, num_cpus=4, num_gpus=2, _metrics_export_port=metrics_port,
                             dashboard_port=dashboard_port, _system_config={"metrics_report_interval_ms": 1000})
    try:
        yield {"metrics": f"http://127.0.0.1:{metrics_port}/metrics", "dashboard": url,
               "session_dir": ray._private.worker.global_worker.node.get_session_dir_path()}
    finally:
        ray.shutdown()
