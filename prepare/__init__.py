"""The fixed harness: profile constants, data sources, tokenizer, dataloader and the metric.

Agents never edit this package. Importing it is light (no torch, no CUDA probing): the names
below resolve lazily on first access (PEP 562).

    PROFILE, MAX_SEQ_LEN, TIME_BUDGET, EVAL_TOKENS, VOCAB_SIZE   constants of the active profile
    Tokenizer, get_token_bytes, make_dataloader, evaluate_bpb, ensure_prepared
    hand_over   the trainer gives its model to the referee (prepare/referee.py, prepare/handover.py)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PROFILE", "MAX_SEQ_LEN", "TIME_BUDGET", "EVAL_TOKENS", "VOCAB_SIZE",
    "Tokenizer", "get_token_bytes", "make_dataloader", "evaluate_bpb", "ensure_prepared", "hand_over",
]

_CONSTANTS = {
    "PROFILE": "name",
    "MAX_SEQ_LEN": "max_seq_len",
    "TIME_BUDGET": "time_budget",
    "EVAL_TOKENS": "eval_tokens",
    "VOCAB_SIZE": "vocab_size",
}
_LAZY = {
    "Tokenizer": "prepare.tokenizer",
    "make_dataloader": "prepare.dataloader",
    "evaluate_bpb": "prepare.evaluate",
    "ensure_prepared": "prepare.core",
    "hand_over": "prepare.handover",
}


def get_token_bytes(device="cpu", source: str | None = None, profile=None):
    """int32 tensor [vocab] on `device`: UTF-8 byte length of each token, 0 for special tokens."""
    from prepare.tokenizer import Tokenizer

    return Tokenizer.load(source, profile).get_token_bytes(device)


def __getattr__(name: str) -> Any:
    if name in _CONSTANTS:
        from prepare.profiles import active_profile

        value = getattr(active_profile(), _CONSTANTS[name])
        globals()[name] = value  # the active profile is fixed for the life of the process
        return value
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prepare' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
