"""`evaluate_bpb`: the fixed metric, validation bits per byte.

Runs EVAL_TOKENS tokens of the val split (of the tokenizer's source) at MAX_SEQ_LEN, both from
the tokenizer's profile (the active profile by default), in `EVAL_TOKENS // (batch_size *
MAX_SEQ_LEN)` steps (at least 1). The model is called as `model(x, y, reduction='none')` and must
return per-token losses in nats (any shape). bpb = sum of losses over targets that are real text
/ (ln 2 * UTF-8 bytes of those targets); special-token targets (byte length 0) are excluded, so
the number does not depend on the vocabulary size. Not covered: training, model modes/autocast
(the caller sets those).
"""

from __future__ import annotations

import math


def _model_device(model):
    import torch

    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def evaluate_bpb(model, tokenizer, batch_size: int, device=None) -> float:
    """Validation bits per byte of `model` (lower is better)."""
    import torch

    from prepare.dataloader import make_dataloader

    profile = tokenizer.profile
    if profile is None or isinstance(profile, str):
        from prepare.core import _profile

        profile = _profile(profile)
    T = profile.max_seq_len
    steps = max(1, profile.eval_tokens // (batch_size * T))
    device = torch.device(device) if device is not None else _model_device(model)
    token_bytes = tokenizer.get_token_bytes(device=device)
    loader = make_dataloader(tokenizer, batch_size, T, "val", device=device)
    nats = torch.zeros((), dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)
    n_bytes = torch.zeros((), dtype=torch.int64, device=device)
    try:
        with torch.no_grad():
            for _ in range(steps):
                x, y, _ = next(loader)
                loss = model(x, y, reduction="none").reshape(-1).to(nats.dtype)
                yb = token_bytes[y.reshape(-1)]
                real = yb > 0
                nats += torch.where(real, loss, torch.zeros_like(loss)).sum()
                n_bytes += yb.sum()
    finally:
        loader.close()
    total_bytes = int(n_bytes.item())
    if total_bytes == 0:
        from swarm.errors import DataError

        raise DataError("the validation batches contain no text bytes")
    return float(nats.item()) / (math.log(2) * total_bytes)
