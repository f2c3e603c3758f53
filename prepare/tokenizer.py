"""The BPE tokenizer: training with rustbpe, saving, loading as a tiktoken Encoding, byte table.

Training: GPT-4-style split pattern with numbers split into runs of 1-2 digits, byte-level BPE
trained by rustbpe on the train split's documents in order, each cut to its first `TRAIN_DOC_CHARS`
characters, until `TRAIN_MAX_CHARS[profile]` characters have been given (the document that
reaches the limit is given whole), then 4 special tokens (BOS first) so that the total vocabulary
is exactly the profile's vocab_size. On the gpu profile these are the reference's amounts
(karpathy/autoresearch: 1e9 characters, 10,000 per document), so that climbmix gives the same
tokenizer and val_bpb figures stay comparable with the reference's. Saved as `tokenizer.pkl`
(pattern, mergeable ranks, specials) and `token_bytes.npy` (UTF-8 byte length of every token,
0 for specials), under AUTORESEARCH_HOME/tokenizer/<source key>/<profile>-<vocab>/.

Not covered: where the text comes from (prepare/core.py feeds it), batching, evaluation.
"""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from swarm.errors import DataError

SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
BOS = "<|bos|>"
SPECIAL_TOKENS = (BOS, "<|reserved_1|>", "<|reserved_2|>", "<|reserved_3|>")
TRAIN_MAX_CHARS = {"gpu": 1_000_000_000, "cpu": 100_000_000}  # others: the cpu value; gpu: the reference's
TRAIN_DOC_CHARS = 10_000  # each document is cut to this many chars for training (the reference's cap)
TOKENIZER_FILE = "tokenizer.pkl"
TOKEN_BYTES_FILE = "token_bytes.npy"
ROUND_TRIP_SAMPLES = ("héllo wörld — ünïcödé ✓ 日本語のテキスト 🚀🎉 12345 6789\n\tdef f(x): return x**2\r\n",)


def train_max_chars(profile_name: str) -> int:
    return TRAIN_MAX_CHARS.get(profile_name, TRAIN_MAX_CHARS["cpu"])


def recipe(profile_name: str) -> str:
    """How a profile's tokenizer is trained, as one line: a tokenizer trained another way (an older
    version of these rules) is trained again instead of being reused."""
    return f"max_chars={train_max_chars(profile_name)} doc_chars={TRAIN_DOC_CHARS}"


def _capped(texts: Iterable[str], max_chars: int, doc_chars: int, stats: dict) -> Iterator[str]:
    total = 0
    for text in texts:
        text = text[:doc_chars]
        if not text:
            continue
        total += len(text)
        stats["chars"] = total
        stats["docs"] = stats.get("docs", 0) + 1
        yield text
        if total >= max_chars:
            return


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path, max_chars: int,
                    samples: Sequence[str] = ()) -> dict:
    """Train, check the round trip on `samples` (plus a fixed unicode string), save. Returns stats."""
    import rustbpe

    n_special = len(SPECIAL_TOKENS)
    if vocab_size < 256 + n_special + 1:
        raise DataError(f"vocab_size {vocab_size} is too small: it must exceed {256 + n_special}")
    t0 = time.time()
    stats: dict = {"chars": 0, "docs": 0}
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(_capped(texts, max_chars, TRAIN_DOC_CHARS, stats), vocab_size - n_special,
                            pattern=SPLIT_PATTERN)
    ranks = {bytes(b): int(r) for b, r in bpe.get_mergeable_ranks()}
    want = vocab_size - n_special - 256
    got = len(ranks) - 256
    if got < want:
        raise DataError(
            f"the training text ({stats['chars']:,} chars in {stats['docs']} docs) only yields {got} BPE merges "
            f"of the {want} needed for vocab_size {vocab_size}: use more data or a smaller vocabulary"
        )
    specials = {tok: len(ranks) + i for i, tok in enumerate(SPECIAL_TOKENS)}
    state = {"pattern": bpe.get_pattern(), "mergeable_ranks": ranks, "special_tokens": specials}
    enc = _build_encoding(state, name=out_dir.name)
    for text in list(samples) + list(ROUND_TRIP_SAMPLES):
        ids = enc.encode_ordinary(text)
        if enc.decode(ids) != text:
            raise DataError(f"tokenizer round trip failed on a sample of {len(text)} chars")
    token_bytes = _token_bytes(enc, specials)
    if sum(int(token_bytes[i]) for i in enc.encode_ordinary(ROUND_TRIP_SAMPLES[0])) != len(ROUND_TRIP_SAMPLES[0].encode()):
        raise DataError("token byte table is inconsistent with the tokenizer")
    out_dir.mkdir(parents=True, exist_ok=True)
    import numpy as np

    _atomic_write(out_dir / TOKEN_BYTES_FILE, lambda f: np.save(f, token_bytes))
    _atomic_write(out_dir / TOKENIZER_FILE, lambda f: pickle.dump(state, f))
    return {"train_chars": stats["chars"], "train_docs": stats["docs"], "seconds": time.time() - t0,
            "vocab_size": vocab_size}


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _build_encoding(state: dict, name: str):
    import tiktoken

    return tiktoken.Encoding(name=name, pat_str=state["pattern"], mergeable_ranks=state["mergeable_ranks"],
                             special_tokens=state["special_tokens"])


def _token_bytes(enc, specials: dict):
    import numpy as np

    table = np.zeros(enc.n_vocab, dtype=np.int32)
    special_ids = set(specials.values())
    for i in range(enc.n_vocab):
        if i not in special_ids:
            table[i] = len(enc.decode_single_token_bytes(i))
    return table


def tokenizer_files_exist(directory: Path) -> bool:
    return (Path(directory) / TOKENIZER_FILE).is_file() and (Path(directory) / TOKEN_BYTES_FILE).is_file()


class Tokenizer:
    """A trained tokenizer: tiktoken for speed, plus the source and profile it belongs to."""

    def __init__(self, enc, directory: Path, source: str = "", profile=None, home=None):
        self.enc = enc
        self.home = home  # the AUTORESEARCH_HOME it was loaded from (None: the default)
        self.directory = Path(directory)
        self.source = source  # the source spec string (e.g. "stdlib"); the dataloader reads its data
        self.profile = profile  # prepare.profiles.Profile
        self.bos_token_id = enc.encode_single_token(BOS)

    @classmethod
    def load(cls, source: str | None = None, profile=None, home=None) -> "Tokenizer":
        """The prepared tokenizer of `source` and `profile` (defaults: the active ones)."""
        from prepare.core import resolve

        src, prof, paths = resolve(source, profile, home)
        return cls.from_directory(paths.tokenizer_dir, source=src.spec, profile=prof,
                                  hint=paths.prepare_command, home=home)

    @classmethod
    def from_directory(cls, directory: Path, source: str = "", profile=None, hint: str = "",
                       home=None) -> "Tokenizer":
        path = Path(directory) / TOKENIZER_FILE
        try:
            with open(path, "rb") as f:
                state = pickle.load(f)
        except FileNotFoundError:
            raise DataError(f"no tokenizer at {path}; run `{hint or 'autoresearch prepare'}`") from None
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign pickle
            raise DataError(f"tokenizer file {path} is corrupt ({type(exc).__name__}); delete it and re-run "
                            f"`{hint or 'autoresearch prepare'}`") from None
        return cls(_build_encoding(state, name=Path(directory).name), directory, source, profile, home)

    def get_vocab_size(self) -> int:
        return self.enc.n_vocab

    def get_bos_token_id(self) -> int:
        return self.bos_token_id

    def get_special_tokens(self) -> list[str]:
        return list(SPECIAL_TOKENS)

    def _prepend_id(self, prepend) -> int | None:
        if prepend is None:
            return None
        if isinstance(prepend, str):
            return self.enc.encode_single_token(prepend)
        return int(prepend)

    def encode(self, text, prepend=None, num_threads: int = 8):
        """Encode a string (-> list of ids) or a list of strings (-> list of lists, threaded).

        Special-token strings inside the text are encoded as ordinary text, never as specials.
        `prepend` (a token id or a special-token string such as "<|bos|>") starts every result.
        """
        pre = self._prepend_id(prepend)
        if isinstance(text, str):
            ids = self.enc.encode_ordinary(text)
            return [pre] + ids if pre is not None else ids
        if isinstance(text, (list, tuple)):
            out = self.enc.encode_ordinary_batch(list(text), num_threads=num_threads)
            if pre is not None:
                for ids in out:
                    ids.insert(0, pre)
            return out
        raise TypeError(f"encode expects a str or a list of str, got {type(text).__name__}")

    __call__ = encode

    def decode(self, ids) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self.enc.decode(list(ids))

    def token_bytes_array(self):
        import numpy as np

        path = self.directory / TOKEN_BYTES_FILE
        try:
            table = np.load(path)
        except FileNotFoundError:
            raise DataError(f"no token byte table at {path}; re-run `autoresearch prepare`") from None
        if table.shape != (self.get_vocab_size(),):
            raise DataError(f"token byte table {path} has shape {table.shape}, expected ({self.get_vocab_size()},)")
        return table

    def get_token_bytes(self, device="cpu"):
        import torch

        return torch.from_numpy(self.token_bytes_array().astype("int32")).to(device)

    def __repr__(self) -> str:
        prof = getattr(self.profile, "name", self.profile)
        return f"Tokenizer(source={self.source!r}, profile={prof!r}, vocab={self.get_vocab_size()})"
