"""Resolving source + profile to paths, and `ensure_prepared`: data then tokenizer, idempotently.

`ensure_prepared` is called before every run and on every node, so its "already done" path
only reads a manifest and stats a few files. Real work happens under a file lock per source
(`AUTORESEARCH_HOME/locks/<key>.lock`), so two processes preparing at once wait for each other
instead of colliding. Not covered: the download itself (prepare/download.py), document
enumeration (prepare/sources.py), BPE training (prepare/tokenizer.py).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from prepare import sources
from prepare.profiles import PROFILES, Profile, active_profile, active_source, autoresearch_home
from swarm.errors import ConfigError, DataError

DEFAULT_NUM_SHARDS = 10  # climbmix training shards, as the reference downloads by default


@dataclass(frozen=True)
class PreparedPaths:
    """Where one source + profile lives on disk."""

    home: Path
    source: str  # the spec string, e.g. "stdlib", "climbmix", "local:/data/x"
    profile: str
    data_dir: Path
    tokenizer_dir: Path
    train_files: tuple[Path, ...] = ()
    val_file: Path | None = None
    stats: dict = field(default_factory=dict, compare=False)  # what was done now (empty when nothing)

    @property
    def prepare_command(self) -> str:
        return f"autoresearch prepare --source {self.source} --profile {self.profile}"


def _profile(profile) -> Profile:
    if profile is None:
        return active_profile()
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}: use one of {', '.join(sorted(PROFILES))}")
    return PROFILES[profile]


def resolve(source: str | None = None, profile=None, home: Path | str | None = None):
    """(SourceSpec, Profile, PreparedPaths) with train/val files filled from the manifest if prepared."""
    prof = _profile(profile)
    src = sources.parse_source(source or active_source(profile=prof))
    home = Path(home).expanduser() if home else autoresearch_home()
    ddir = sources.data_dir(home, src)
    tdir = home / "tokenizer" / src.key / f"{prof.name}-{prof.vocab_size}"
    manifest = sources.read_manifest(ddir)
    train: tuple[Path, ...] = ()
    val = None
    if manifest:
        train = tuple(ddir / n for n in manifest["train"])
        val = ddir / manifest["val"]
    return src, prof, PreparedPaths(home, src.spec, prof.name, ddir, tdir, train, val)


def data_files(source: str | None = None, profile=None, home=None) -> PreparedPaths:
    """The prepared paths, or a DataError naming the command that prepares them."""
    _, _, paths = resolve(source, profile, home)
    if not paths.train_files or paths.val_file is None:
        raise DataError(f"no data prepared for source {paths.source!r} under {paths.data_dir}; "
                        f"run `{paths.prepare_command}`")
    for f in (*paths.train_files, paths.val_file):
        if not f.is_file():
            raise DataError(f"data shard {f} is missing; run `{paths.prepare_command}`")
    return paths


DATA_ID_FILE = "data_id.txt"  # in the tokenizer directory: the manifest id and the recipe it was trained with


def _tokenizer_id(paths: PreparedPaths, manifest: dict) -> str:
    from prepare.tokenizer import recipe

    return f"{manifest.get('id', '')} {recipe(paths.profile)}"


def _tokenizer_current(paths: PreparedPaths, manifest: dict | None) -> bool:
    """The tokenizer exists and was trained on the data the manifest describes now, the way this
    version trains it (its text amount and per-document cap)."""
    from prepare.tokenizer import tokenizer_files_exist

    if not manifest or not tokenizer_files_exist(paths.tokenizer_dir):
        return False
    try:
        return (paths.tokenizer_dir / DATA_ID_FILE).read_text().strip() == _tokenizer_id(paths, manifest)
    except FileNotFoundError:
        return False


def _is_done(src, paths: PreparedPaths, opts: dict) -> bool:
    manifest = sources.read_manifest(paths.data_dir)
    if not _tokenizer_current(paths, manifest):
        return False
    if not all(f.is_file() for f in (*paths.train_files, paths.val_file)):
        return False
    if src.kind == "climbmix":
        return len(manifest["train"]) >= int(opts.get("num_shards") or DEFAULT_NUM_SHARDS)
    if src.kind == "local":
        return manifest.get("fingerprint") == sources.local_fingerprint(src.path)
    return True


def ensure_prepared(source: str | None = None, profile=None, progress: bool = True, home=None,
                    **download_opts) -> PreparedPaths:
    """Prepare data and tokenizer of `source` for `profile` if missing; fast when already done.

    download_opts (climbmix): num_shards, base_url, workers, retries, backoff, timeout;
    (stdlib, local): max_chars caps the characters materialised (tests, quick demos).
    """
    src, prof, paths = resolve(source, profile, home)
    if _is_done(src, paths, download_opts):
        return paths
    from filelock import FileLock

    lock_dir = paths.home / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / f"{src.key}.lock")):
        src, prof, paths = resolve(source, prof, home)  # someone may have finished meanwhile
        if _is_done(src, paths, download_opts):
            return paths
        stats: dict = {}
        t0 = time.time()
        _prepare_data(src, paths, progress, download_opts, stats)
        stats["data_seconds"] = time.time() - t0
        src, prof, paths = resolve(source, prof, home)
        _prepare_tokenizer(paths, prof, progress, stats)
        stats["seconds"] = time.time() - t0
        return PreparedPaths(paths.home, paths.source, paths.profile, paths.data_dir, paths.tokenizer_dir,
                             paths.train_files, paths.val_file, stats)


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, flush=True)


def _prepare_data(src, paths: PreparedPaths, progress: bool, opts: dict, stats: dict) -> None:
    manifest = sources.read_manifest(paths.data_dir)
    if src.kind == "climbmix":
        from prepare import download

        n = int(opts.get("num_shards") or DEFAULT_NUM_SHARDS)
        if manifest and len(manifest["train"]) >= n and all(f.is_file() for f in (*paths.train_files, paths.val_file)):
            return
        dl_opts = {k: opts[k] for k in ("base_url", "workers", "retries", "backoff", "timeout") if opts.get(k) is not None}
        _say(progress, f"downloading {n} climbmix training shards + 1 validation shard to {paths.data_dir}")
        result = download.download_climbmix(paths.data_dir, num_shards=n, progress=progress, **dl_opts)
        paths.data_dir.mkdir(parents=True, exist_ok=True)
        # more shards of the same data keep the id: the tokenizer stays valid
        data_id = (manifest or {}).get("id") or uuid.uuid4().hex
        sources.write_manifest(paths.data_dir, {"source": "climbmix", "id": data_id, **result})
        stats.update(downloaded=result.get("downloaded", 0))
        return
    if src.kind == "local":
        fingerprint = sources.local_fingerprint(src.path)
        if manifest and manifest.get("fingerprint") == fingerprint:
            return
        docs = sources.local_docs(src.path)
    else:
        fingerprint = None
        if manifest:
            return
        docs = sources.stdlib_docs()
    _say(progress, f"materialising source {src.spec} into {paths.data_dir}")
    info = sources.materialise(docs, paths.data_dir, max_chars=opts.get("max_chars"))
    info.update(source=src.spec, id=uuid.uuid4().hex)
    if fingerprint is not None:
        info["fingerprint"] = fingerprint
    sources.write_manifest(paths.data_dir, info)
    stats.update(docs=info["train_docs"] + info["val_docs"], val_docs=info["val_docs"], chars=info["chars"])
    _say(progress, f"  {stats['docs']:,} documents ({info['val_docs']:,} val), {info['chars']:,} chars")


def iter_texts(files, doc_chars: int | None = None):
    """Every document of the given parquet shards, in order (DataError naming a bad shard)."""
    import sys

    import pyarrow.parquet as pq

    from prepare.dataloader import READ_EVENT

    for f in files:
        sys.audit(READ_EVENT, str(f))
        try:
            pf = pq.ParquetFile(f)
            for i in range(pf.num_row_groups):
                for text in pf.read_row_group(i, columns=[sources.TEXT_COLUMN]).column(0).to_pylist():
                    if text:
                        yield text if doc_chars is None else text[:doc_chars]
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"data shard {f} is unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                            "delete it and prepare again") from None


def _prepare_tokenizer(paths: PreparedPaths, prof: Profile, progress: bool, stats: dict) -> None:
    from prepare import tokenizer as tk

    manifest = sources.read_manifest(paths.data_dir)
    if _tokenizer_current(paths, manifest):
        return
    max_chars = tk.train_max_chars(prof.name)
    _say(progress, f"training a {prof.vocab_size}-token BPE tokenizer on up to {max_chars:,} chars of "
                   f"{paths.source} train text")
    samples = []
    for text in iter_texts([paths.val_file]):
        samples.append(text[:5000])
        if len(samples) >= 8:
            break
    info = tk.train_tokenizer(iter_texts(paths.train_files), prof.vocab_size, paths.tokenizer_dir,
                              max_chars=max_chars, samples=samples)
    (paths.tokenizer_dir / DATA_ID_FILE).write_text(_tokenizer_id(paths, manifest) + "\n")
    stats.update(tokenizer_seconds=info["seconds"], tokenizer_chars=info["train_chars"])
    # compression on the val samples: bytes per token
    tok = tk.Tokenizer.from_directory(paths.tokenizer_dir)
    n_bytes = sum(len(s.encode()) for s in samples)
    n_tokens = sum(len(ids) for ids in tok.encode(samples))
    stats["bytes_per_token"] = n_bytes / max(1, n_tokens)
    _say(progress, f"  tokenizer trained in {info['seconds']:.1f}s on {info['train_chars']:,} chars "
                   f"({stats['bytes_per_token']:.2f} bytes/token on val samples) -> {paths.tokenizer_dir}")
