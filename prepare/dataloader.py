"""`make_dataloader`: BOS-aligned best-fit packing of tokenized documents into [B, T] batches.

Each row holds T+1 tokens (x = row[:-1], y = row[1:]). Documents are tokenized with BOS in front,
READ_DOCS at a time, into a buffer topped up to BUFFER_DOCS before every placement; a row is filled
by repeatedly taking the longest buffered document that fits in what is left of the row (the
oldest of equally long ones). Only when none fits is a document cropped to fill the row exactly.
Which one, and what happens to its rest, is the profile's `keep_cropped_rest`:

- False (gpu, the reference's best-fit packing): the shortest buffered document is cropped and its
  remainder dropped. With the same data and tokenizer this yields the reference's very rows, so
  the evaluation rows, and with them val_bpb, are comparable with the reference's;
- True (cpu): the oldest buffered document is cropped (so none starves) and its rest goes back into
  the buffer as a new document with BOS in front, so no text is thrown away: stdlib files are
  mostly longer than a cpu-profile row, and dropping would waste most of them.

So every row starts with BOS, there is no padding, and every position is a real token. The epoch
reported is the pass over the data that the newest buffered document came from (the buffer reads
at most ~1/10 of an epoch ahead).

A background thread reads parquet row groups, tokenizes them (tiktoken, several threads) and
packs rows, keeping a few batches ahead; the consumer only copies (pinned + non_blocking on
CUDA). "train" loops forever over the train shards counting epochs; "val" restarts from the
start of the val shard on every call, so it yields the same batches every time (it loops too).
Every shard is announced with the audit event `prepare.read_shard` (path) before it is opened,
so that the referee's guard in the trainer's process (prepare/guard.py) can refuse the val split.
Not covered: the metric (prepare/evaluate.py), distributed sharding.
"""

from __future__ import annotations

import atexit
import bisect
import queue
import sys
import threading
import weakref
from typing import Iterator

import numpy as np

from swarm.errors import DataError

BUFFER_DOCS = 1000  # documents kept ready for best-fit (more: less cropping, more memory); the reference's
READ_DOCS = 128  # documents tokenized per call into the tokenizer (the reference's refill size)
PREFETCH = 3  # batches prepared ahead
READ_EVENT = "prepare.read_shard"  # audit event raised with the path of every shard read

_LIVE: "weakref.WeakSet[_Packer]" = weakref.WeakSet()


class _Stopped(Exception):
    """The consumer went away (or the interpreter is exiting): the producer thread ends."""


def _doc_stream(files, loop: bool, chunk: int = READ_DOCS) -> Iterator[tuple[list[str], int]]:
    """(texts, epoch) chunks over the shards, row group by row group; epoch counts from 1."""
    import pyarrow.parquet as pq

    epoch = 1
    while True:
        yielded = False
        for f in files:
            sys.audit(READ_EVENT, str(f))
            try:
                pf = pq.ParquetFile(f)
                n_groups = pf.num_row_groups
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"data shard {f} is unreadable ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it and prepare again") from None
            for g in range(n_groups):
                try:
                    col = pf.read_row_group(g, columns=["text"]).column(0).to_pylist()
                except Exception as exc:  # noqa: BLE001
                    raise DataError(f"data shard {f} is unreadable at row group {g} ({type(exc).__name__})") from None
                col = [t for t in col if t]
                for i in range(0, len(col), chunk):
                    yielded = True
                    yield col[i : i + chunk], epoch
        if not yielded:
            raise DataError(f"data shards {[str(f) for f in files]} contain no documents")
        if not loop:
            return
        epoch += 1


def _count_docs(files) -> int:
    """Rows in the shards, from parquet metadata (cheap); unreadable shards count as 0 here."""
    import pyarrow.parquet as pq

    total = 0
    for f in files:
        sys.audit(READ_EVENT, str(f))
        try:
            total += pq.ParquetFile(f).metadata.num_rows
        except Exception:  # noqa: BLE001 - the reader names the bad shard
            pass
    return total


class _Packer:
    """Best-fit packing over a length-sorted buffer of token arrays (BOS implicit in front)."""

    def __init__(self, tokenizer, files, loop: bool, threads: int, capacity: int | None = None,
                 keep_rest: bool = False):
        self.tok = tokenizer
        self.keep_rest = keep_rest  # the profile's keep_cropped_rest (see the module docstring)
        self.bos = tokenizer.get_bos_token_id()
        self.threads = threads
        self.lengths: list[int] = []  # sorted ascending; a document's length counts its BOS
        self.docs: list[np.ndarray] = []  # parallel to lengths: the tokens after the BOS
        self.seqs: list[int] = []  # parallel to lengths: arrival order (keep_rest: the oldest is cropped first)
        self.next_seq = 0
        self.exhausted = False
        self.epoch = 1  # the pass over the data that the newest buffered document came from
        # read at most ~1/10 of an epoch ahead, so that a small corpus reports honest epochs
        self.capacity = capacity or max(1, min(BUFFER_DOCS, _count_docs(files) // 10))
        self.stream = _doc_stream(files, loop, chunk=min(READ_DOCS, self.capacity))
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def _add(self, arr: np.ndarray) -> None:
        k = bisect.bisect_right(self.lengths, len(arr) + 1)
        self.lengths.insert(k, len(arr) + 1)
        self.docs.insert(k, arr)
        self.seqs.insert(k, self.next_seq)
        self.next_seq += 1

    def _pop(self, k: int) -> tuple[np.ndarray, int]:
        self.seqs.pop(k)
        return self.docs.pop(k), self.lengths.pop(k)

    def _refill(self) -> None:
        while len(self.docs) < self.capacity and not self.exhausted:
            try:
                texts, self.epoch = next(self.stream)
            except StopIteration:  # only without looping: pack what is left, then stop
                self.exhausted = True
                break
            for ids in self.tok.encode(texts, num_threads=self.threads):
                if ids:
                    self._add(np.asarray(ids, dtype=np.int32))

    def fill(self, rows: np.ndarray) -> None:
        width = rows.shape[1]
        bos = self.bos
        for r in range(rows.shape[0]):
            if self.stop.is_set():
                raise _Stopped
            row = rows[r]
            pos = 0
            while pos < width:
                if len(self.docs) < self.capacity:
                    self._refill()
                    if not self.docs:
                        raise StopIteration
                room = width - pos
                k = bisect.bisect_right(self.lengths, room) - 1
                if k >= 0:  # the longest document that fits; equal lengths sit in arrival order
                    doc, n = self._pop(bisect.bisect_left(self.lengths, self.lengths[k]))
                    row[pos] = bos
                    row[pos + 1 : pos + n] = doc
                    pos += n
                else:  # nothing fits: crop one to fill the row
                    doc, _ = self._pop(self.seqs.index(min(self.seqs)) if self.keep_rest else 0)  # oldest, or shortest
                    row[pos] = bos
                    row[pos + 1 :] = doc[: room - 1]
                    if self.keep_rest and len(doc) > room - 1:
                        self._add(doc[room - 1 :])  # its rest goes back as a new document
                    pos = width


def _stop_all() -> None:
    """At interpreter exit, end producer threads before native libraries are torn down."""
    packers = list(_LIVE)
    for p in packers:
        p.stop.set()
    for p in packers:
        if p.thread is not None:
            p.thread.join(timeout=10)


atexit.register(_stop_all)


def _producer(packer: _Packer, B: int, T: int, out: queue.Queue, pin: bool) -> None:
    import torch

    stop = packer.stop
    try:
        while not stop.is_set():
            rows = np.empty((B, T + 1), dtype=np.int32)
            packer.fill(rows)
            t = torch.from_numpy(rows).to(torch.int64)
            x, y = t[:, :-1].contiguous(), t[:, 1:].contiguous()
            if pin:
                x, y = x.pin_memory(), y.pin_memory()
            _put(out, (x, y, packer.epoch), stop)
    except _Stopped:
        return
    except StopIteration:
        _put(out, StopIteration(), stop)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer
        _put(out, exc, stop)


def _put(out: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def make_dataloader(tokenizer, B: int, T: int, split: str, device="cpu", threads: int | None = None,
                    files=None) -> Iterator[tuple["torch.Tensor", "torch.Tensor", int]]:  # noqa: F821
    """Yield (x, y, epoch) forever: x, y int64 [B, T] on `device`, y = x shifted left by one.

    The data is the tokenizer's source (`tokenizer.source`, prepared by ensure_prepared);
    `files` overrides the shard list (tests, benchmarks); `threads` tokenizer threads (default:
    min(8, CPU cores)).
    """
    import os

    import torch

    threads = threads or min(8, os.cpu_count() or 1)
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if B < 1 or T < 1:
        raise ValueError(f"B and T must be positive, got B={B} T={T}")
    if files is None:
        from prepare.core import data_files

        paths = data_files(tokenizer.source or None, tokenizer.profile, getattr(tokenizer, "home", None))
        files = list(paths.train_files) if split == "train" else [paths.val_file]
    device = torch.device(device)
    cuda = device.type == "cuda"
    return _iterate(tokenizer, list(files), B, T, device, cuda, threads)


def _keep_cropped_rest(tokenizer) -> bool:
    profile = getattr(tokenizer, "profile", None)
    if isinstance(profile, str):
        from prepare.profiles import PROFILES

        profile = PROFILES.get(profile)
    return bool(getattr(profile, "keep_cropped_rest", False))


def _iterate(tokenizer, files, B, T, device, cuda, threads):
    packer = _Packer(tokenizer, files, loop=True, threads=threads, keep_rest=_keep_cropped_rest(tokenizer))
    out: queue.Queue = queue.Queue(maxsize=PREFETCH)
    packer.thread = threading.Thread(target=_producer, args=(packer, B, T, out, cuda), daemon=True,
                                     name="prepare-dataloader")
    _LIVE.add(packer)
    packer.thread.start()
    try:
        while True:
            item = out.get()
            if isinstance(item, BaseException):
                if isinstance(item, StopIteration):
                    return
                raise item
            x, y, epoch = item
            if cuda:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            elif device.type != "cpu":
                x, y = x.to(device), y.to(device)
            yield x, y, epoch
    finally:
        packer.stop.set()
