"""`results.tsv` and `results.parquet`: exports of the journal, regenerated whole each time.

One row per decided experiment (a candidate waiting for its confirmation shows status `pending`),
in the order they were decided; a confirmation is a row of its own with kind `confirm`. The TSV
starts with the reference's five columns (commit, val_bpb, memory_gb, status, description: the
metric is this run's own measurement; a crashed run shows 0.000000 and 0.0 as in the reference),
then runs, mean and stderr (how often the row's commit was measured in all, the mean of those
measurements and its standard error sigma / sqrt(runs): the number promotion decides on), then
worker, agent, kind, parent, exp_id, started_at, task_seconds, agent_seconds, cost_usd, tokens. The
metric column is named after the task's metric (val_bpb for the GPT task). The parquet file has the
same columns with full commits and nulls instead of zeros, plus parent_metric, finished_at, error
and lane.
Not covered: reading the journal (swarm.state).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

from swarm.records import ExperimentRecord

TAIL_COLUMNS = (
    "worker", "agent", "kind", "parent", "exp_id", "started_at",
    "task_seconds", "agent_seconds", "cost_usd", "tokens",
)


SAMPLE_COLUMNS = ("runs", "mean", "stderr")


def columns(metric: str = "val_bpb") -> tuple[str, ...]:
    return ("commit", metric, "memory_gb", "status", "description", *SAMPLE_COLUMNS, *TAIL_COLUMNS)


def sample_stats(r: ExperimentRecord, samples: Mapping[str, Sequence[float]], sigma: float | None):
    """(runs, mean, stderr) of the record's commit; (0, None, None) when it was never measured."""
    values = samples.get(r.commit) if r.commit else None
    if not values:
        return 0, None, None
    mean = math.fsum(values) / len(values)
    return len(values), mean, (sigma / math.sqrt(len(values)) if sigma else None)


def _clean(text: str) -> str:
    return " ".join(str(text).replace("\t", " ").split())


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t).isoformat(timespec="seconds") if t else ""


def tsv_rows(records: Sequence[ExperimentRecord], samples: Mapping[str, Sequence[float]] | None = None,
             sigma: float | None = None) -> list[list[str]]:
    rows = []
    for r in records:
        runs, mean, se = sample_stats(r, samples or {}, sigma)
        rows.append(
            [
                r.commit[:7],
                f"{r.metric:.6f}" if r.metric is not None else "0.000000",
                f"{r.memory_gb:.1f}",
                r.status.value,
                _clean(r.description),
                str(runs),
                f"{mean:.6f}" if mean is not None else "",
                f"{se:.6f}" if se is not None else "",
                r.worker,
                r.agent,
                r.kind.value,
                r.parent[:7],
                str(r.exp_id),
                _iso(r.started_at),
                f"{r.task_seconds:.1f}",
                f"{r.agent_seconds:.1f}",
                f"{r.usage.cost_usd:.4f}",
                str(r.usage.tokens_in + r.usage.tokens_out),
            ]
        )
    return rows


def write_tsv(path: Path, records: Sequence[ExperimentRecord], metric: str = "val_bpb",
              samples: Mapping[str, Sequence[float]] | None = None, sigma: float | None = None) -> None:
    lines = ["\t".join(columns(metric))] + ["\t".join(row) for row in tsv_rows(records, samples, sigma)]
    _atomic_write(Path(path), ("\n".join(lines) + "\n").encode("utf-8"))


def write_parquet(path: Path, records: Sequence[ExperimentRecord], metric: str = "val_bpb",
                  samples: Mapping[str, Sequence[float]] | None = None, sigma: float | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    stats = [sample_stats(r, samples or {}, sigma) for r in records]
    data = {
        "commit": [r.commit for r in records],
        metric: pa.array([r.metric for r in records], type=pa.float64()),
        "memory_gb": pa.array([r.memory_gb for r in records], type=pa.float64()),
        "status": [r.status.value for r in records],
        "description": [r.description for r in records],
        "runs": pa.array([n for n, _, _ in stats], type=pa.int64()),
        "mean": pa.array([m for _, m, _ in stats], type=pa.float64()),
        "stderr": pa.array([e for _, _, e in stats], type=pa.float64()),
        "worker": [r.worker for r in records],
        "agent": [r.agent for r in records],
        "kind": [r.kind.value for r in records],
        "parent": [r.parent for r in records],
        "exp_id": pa.array([r.exp_id for r in records], type=pa.int64()),
        "started_at": pa.array([r.started_at for r in records], type=pa.float64()),
        "task_seconds": pa.array([r.task_seconds for r in records], type=pa.float64()),
        "agent_seconds": pa.array([r.agent_seconds for r in records], type=pa.float64()),
        "cost_usd": pa.array([r.usage.cost_usd for r in records], type=pa.float64()),
        "tokens": pa.array([r.usage.tokens_in + r.usage.tokens_out for r in records], type=pa.int64()),
        "parent_metric": pa.array([r.parent_metric for r in records], type=pa.float64()),
        "finished_at": pa.array([r.finished_at for r in records], type=pa.float64()),
        "error": [r.error for r in records],
        "lane": [r.lane for r in records],
    }
    table = pa.table({k: (v if isinstance(v, pa.Array) else pa.array(v, type=pa.string())) for k, v in data.items()})
    tmp = Path(path).with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_exports(run_dir: Path, records: Sequence[ExperimentRecord], metric: str = "val_bpb", parquet: bool = True,
                  samples: Mapping[str, Sequence[float]] | None = None, sigma: float | None = None) -> None:
    """Both exports; `samples` (commit -> its measurements) and `sigma` fill runs, mean and stderr."""
    write_tsv(Path(run_dir) / "results.tsv", records, metric, samples, sigma)
    if parquet:
        write_parquet(Path(run_dir) / "results.parquet", records, metric, samples, sigma)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
