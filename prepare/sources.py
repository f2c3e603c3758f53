"""Data sources: naming, on-disk layout, manifests, and materialising `stdlib` / `local:PATH`.

Every source becomes the same thing on disk: a directory `AUTORESEARCH_HOME/data/<key>/` of
parquet shards with a `text` column plus a `manifest.json` naming the train shards and the one
validation shard. The manifest is written last, so its presence means "prepared". One dataloader
serves every source through the manifest.

Covered here: `stdlib` (the running Python's standard-library .py files) and `local:PATH`
(a directory or glob of .parquet / .jsonl / .txt). Not covered: the climbmix download
(prepare/download.py), tokenizers, batching.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from swarm.errors import ConfigError, DataError

MANIFEST = "manifest.json"
TEXT_COLUMN = "text"
VAL_PERCENT = 2  # local/stdlib: documents whose hash lands in the lowest 2% go to val
SHARD_CHARS = 200_000_000  # local/stdlib: start a new train shard after this many characters
ROW_GROUP_DOCS = 1024  # parquet row group size (the dataloader reads one row group at a time)


@dataclass(frozen=True)
class SourceSpec:
    """A parsed `--source` value. `key` names its directory under AUTORESEARCH_HOME."""

    kind: str  # "climbmix" | "stdlib" | "local"
    key: str
    spec: str  # the string the user gave, used in messages and in the suggested command
    path: str = ""  # local: the directory or glob


def parse_source(spec: str) -> SourceSpec:
    spec = (spec or "").strip()
    if spec == "climbmix":
        return SourceSpec("climbmix", "climbmix", spec)
    if spec == "stdlib":
        # the stdlib differs between Python versions: key it so they never mix
        return SourceSpec("stdlib", f"stdlib-py{sys.version_info[0]}{sys.version_info[1]}", spec)
    if spec.startswith("local:") and len(spec) > len("local:"):
        raw = spec[len("local:") :]
        path = os.path.abspath(os.path.expanduser(raw))
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(raw.rstrip("/*")).name)[:40]
        digest = hashlib.sha1(path.encode()).hexdigest()[:10]
        return SourceSpec("local", f"local-{name or 'data'}-{digest}", spec, path)
    raise ConfigError(f"unknown data source {spec!r}: use climbmix, stdlib or local:PATH")


def data_dir(home: Path, source: SourceSpec) -> Path:
    return Path(home) / "data" / source.key


def read_manifest(directory: Path) -> dict | None:
    """The manifest of a prepared data directory, or None when it is not (fully) prepared."""
    try:
        with open(Path(directory) / MANIFEST, encoding="utf-8") as f:
            manifest = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not manifest.get("train") or not manifest.get("val"):
        return None
    return manifest


def write_manifest(directory: Path, manifest: dict) -> None:
    tmp = Path(directory) / (MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, Path(directory) / MANIFEST)


def doc_hash(key: str | bytes) -> int:
    data = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def is_val(h: int) -> bool:
    return h % 100 < VAL_PERCENT


# ---------------------------------------------------------------- document enumeration


def stdlib_files() -> list[Path]:
    """The standard library's .py files, sorted, without third-party packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in root.rglob("*.py"):
        parts = p.relative_to(root).parts
        if "site-packages" in parts or "dist-packages" in parts:
            continue
        out.append(p)
    if not out:
        raise DataError(f"no standard-library .py files found under {root}")
    return sorted(out)


def _read_text_file(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def stdlib_docs() -> Iterator[tuple[str, str]]:
    """(split key, text) for each stdlib file; the split key is its path relative to the stdlib."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for p in stdlib_files():
        yield p.relative_to(root).as_posix(), _read_text_file(p)


def local_files(path: str) -> list[Path]:
    exts = (".parquet", ".jsonl", ".txt")
    p = Path(path)
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file() and f.suffix in exts]
    elif p.is_file():
        files = [p]
    elif glob.has_magic(path):
        files = [Path(f) for f in glob.glob(path, recursive=True) if Path(f).is_file()]
    else:
        raise DataError(f"local data path {path} does not exist")
    files = sorted(f for f in files if f.suffix in exts)
    if not files:
        raise DataError(f"no .parquet, .jsonl or .txt files under {path}")
    return files


def local_docs(path: str) -> Iterator[tuple[str, str]]:
    """(split key, text) for each document; the split key is the document's own text."""
    import pyarrow.parquet as pq

    for f in local_files(path):
        if f.suffix == ".txt":
            text = _read_text_file(f)
            yield text, text
        elif f.suffix == ".jsonl":
            with open(f, encoding="utf-8", errors="replace") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line)[TEXT_COLUMN]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise DataError(f"{f}:{lineno}: not a JSON object with a {TEXT_COLUMN!r} field") from None
                    if isinstance(text, str):
                        yield text, text
        else:
            try:
                pf = pq.ParquetFile(f)
                if TEXT_COLUMN not in pf.schema_arrow.names:
                    raise DataError(f"{f} has no {TEXT_COLUMN!r} column (columns: {pf.schema_arrow.names})")
                for batch in pf.iter_batches(columns=[TEXT_COLUMN], batch_size=4096):
                    for text in batch.column(0).to_pylist():
                        if text:
                            yield text, text
            except DataError:
                raise
            except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds
                raise DataError(f"{f} is not a readable parquet file: {exc}".splitlines()[0]) from None


def local_fingerprint(path: str) -> list:
    """Names, sizes and mtimes of the input files: a changed input re-prepares the source."""
    return [[str(f), f.stat().st_size, int(f.stat().st_mtime)] for f in local_files(path)]


# ---------------------------------------------------------------- writing shards


def _write_parquet(path: Path, texts: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({TEXT_COLUMN: pa.array(texts, type=pa.string())})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_DOCS, compression="zstd")
    os.replace(tmp, path)


def materialise(docs: Iterable[tuple[str, str]], directory: Path, max_chars: int | None = None) -> dict:
    """Split documents by hash into train/val, write parquet shards, return the stats.

    Train documents are written in hash order (a deterministic shuffle); val keeps at least one
    document (the one with the smallest hash when none lands in the val range). The manifest is
    not written here.
    """
    train: list[tuple[int, str]] = []
    val: list[tuple[int, str]] = []
    chars = 0
    for key, text in docs:
        if not text:
            continue
        h = doc_hash(key)
        (val if is_val(h) else train).append((h, text))
        chars += len(text)
        if max_chars is not None and chars >= max_chars:
            break
    if not val and len(train) >= 2:
        train.sort(key=lambda x: x[0])
        val.append(train.pop(0))
    if not train or not val:
        raise DataError(f"need at least 2 non-empty documents to make a train/val split, got {len(train) + len(val)}")
    train.sort(key=lambda x: x[0])
    val.sort(key=lambda x: x[0])
    directory.mkdir(parents=True, exist_ok=True)
    train_names: list[str] = []
    shard: list[str] = []
    shard_chars = 0
    for _, text in train:
        shard.append(text)
        shard_chars += len(text)
        if shard_chars >= SHARD_CHARS:
            train_names.append(f"train_{len(train_names):05d}.parquet")
            _write_parquet(directory / train_names[-1], shard)
            shard, shard_chars = [], 0
    if shard:
        train_names.append(f"train_{len(train_names):05d}.parquet")
        _write_parquet(directory / train_names[-1], shard)
    _write_parquet(directory / "val.parquet", [t for _, t in val])
    return {
        "train": train_names,
        "val": "val.parquet",
        "train_docs": len(train),
        "val_docs": len(val),
        "chars": chars,
    }
