"""Downloading the climbmix parquet shards (karpathy/climbmix-400b-shuffle) with urllib.

Shards are `shard_00000.parquet` ... `shard_06542.parquet`; the last one is pinned as the
validation shard, the first `num_shards` are training shards. Files that exist are skipped;
each download goes to `<name>.tmp`, is checked to be readable parquet with a `text` column and
only then renamed into place (a corrupt one is deleted and named in the error). Parallel with
threads, retries with exponential backoff on network errors and HTTP 5xx/429; an unreachable
host (connection refused, DNS failure) fails fast with one line naming the URL.
The base URL is `base_url`, else env AUTORESEARCH_CLIMBMIX_URL, else Hugging Face.
Not covered: other sources (prepare/sources.py), manifests and tokenizers (prepare/core.py).
"""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from swarm.errors import DataError

DEFAULT_BASE_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
NUM_SHARDS_TOTAL = 6543
VAL_SHARD = NUM_SHARDS_TOTAL - 1
CHUNK = 1 << 20


def shard_name(i: int) -> str:
    return f"shard_{i:05d}.parquet"


def base_url_from(base_url: str | None = None) -> str:
    return (base_url or os.environ.get("AUTORESEARCH_CLIMBMIX_URL") or DEFAULT_BASE_URL).rstrip("/")


class _Unreachable(Exception):
    """The host cannot be reached at all: retrying will not help."""


def check_parquet(path: Path) -> int:
    """Rows of a parquet file with a non-empty `text` column; DataError otherwise."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        rows = pf.metadata.num_rows
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
        raise DataError(f"{path} is not a readable parquet file ({type(exc).__name__})") from None
    if "text" not in names:
        raise DataError(f"{path} has no 'text' column (columns: {names})")
    if rows == 0:
        raise DataError(f"{path} is empty (0 rows)")
    return rows


def _is_unreachable(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (ConnectionRefusedError, socket.gaierror)):
        return True
    return isinstance(reason, OSError) and getattr(reason, "errno", None) in (101, 113)  # net/host unreachable


def _fetch(url: str, dest: Path, timeout: float, retries: int, backoff: float, progress_cb) -> None:
    """Download `url` to `dest` via `dest.tmp`, retrying transient failures."""
    tmp = dest.with_name(dest.name + ".tmp")
    attempt = 0
    while True:
        attempt += 1
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    progress_cb(len(chunk))
            break
        except urllib.error.HTTPError as exc:
            transient = exc.code >= 500 or exc.code == 429
            if not transient or attempt > retries:
                tmp.unlink(missing_ok=True)
                raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            if _is_unreachable(exc):
                raise _Unreachable(url) from None
            if attempt > retries:
                raise DataError(f"download of {url} failed after {attempt} attempts: {getattr(exc, 'reason', exc)}") from None
        time.sleep(backoff * (2 ** (attempt - 1)))
    try:
        check_parquet(tmp)
    except DataError:
        tmp.unlink(missing_ok=True)
        raise DataError(f"downloaded file {dest.name} from {url} is corrupt (not parquet with a text column); "
                        "it was deleted") from None
    os.replace(tmp, dest)


def download_climbmix(directory: Path, num_shards: int = 10, base_url: str | None = None, workers: int = 8,
                      retries: int = 5, backoff: float = 1.0, timeout: float = 60.0, progress: bool = True) -> dict:
    """Make sure the first `num_shards` training shards and the val shard are in `directory`.

    Returns the manifest fields: {"train": [...names], "val": name, "downloaded": n, "base_url": url}.
    """
    if not 1 <= num_shards < NUM_SHARDS_TOTAL:
        raise DataError(f"num_shards must be between 1 and {NUM_SHARDS_TOTAL - 1}, got {num_shards}")
    url = base_url_from(base_url)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    wanted = [shard_name(i) for i in range(num_shards)] + [shard_name(VAL_SHARD)]
    missing = [n for n in wanted if not (directory / n).is_file()]
    if missing:
        _download_all(url, directory, missing, workers, retries, backoff, timeout, progress)
    return {"train": wanted[:-1], "val": wanted[-1], "downloaded": len(missing), "base_url": url}


def _download_all(url, directory, names, workers, retries, backoff, timeout, progress) -> None:
    import threading

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(names), unit="shard", desc="climbmix", dynamic_ncols=True)
    lock = threading.Lock()
    nbytes = [0]

    def on_bytes(n: int) -> None:
        with lock:
            nbytes[0] += n
            if bar is not None:
                bar.set_postfix_str(f"{nbytes[0] / 1e6:,.0f} MB", refresh=False)

    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(_fetch, f"{url}/{n}", directory / n, timeout, retries, backoff, on_bytes): n
                   for n in names}
        for fut in as_completed(futures):
            if fut.cancelled():
                continue
            exc = fut.exception()
            if exc is not None:
                errors.append(exc)
                for other in futures:  # stop queued downloads; running ones finish
                    other.cancel()
            elif bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if errors:
        first = next((e for e in errors if isinstance(e, _Unreachable)), errors[0])
        if isinstance(first, _Unreachable):
            raise DataError(f"cannot reach {first.args[0]} (offline, DNS failure or connection refused); "
                            "set --base-url / AUTORESEARCH_CLIMBMIX_URL to a mirror or use --source stdlib")
        if isinstance(first, DataError):
            raise first
        raise DataError(f"download failed: {type(first).__name__}: {first}")
