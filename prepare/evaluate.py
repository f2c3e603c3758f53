"""The fixed metric, validation bits per byte: the evaluation rows, one accumulation, `evaluate_bpb`.

The evaluation set is the first `EVAL_TOKENS // MAX_SEQ_LEN` rows of the val split as the
dataloader packs them (each row holds T+1 tokens: x = row[:-1], y = row[1:]), both constants from
the tokenizer's profile; the rows do not depend on the batch size they are evaluated in.
bpb = sum of losses (nats) over targets that are real text / (ln 2 * UTF-8 bytes of those
targets); special-token targets (byte length 0) are excluded, so the number does not depend on the
vocabulary size. `BpbSum` is that accumulation, shared by two callers: `evaluate_bpb` (a model in
this process, called as `model(x, y, reduction='none')`, returning per-token losses in nats, any
shape) and the referee (prepare/referee.py: the model lives in another process and returns logits;
the referee computes the losses itself with `token_nats`).
Not covered: training, model modes/autocast (the caller sets those), the referee's checks.
"""

from __future__ import annotations

import math


def model_device(model):
    """The device of the model's first parameter (cpu when it has none)."""
    import torch

    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def _resolved_profile(tokenizer):
    profile = tokenizer.profile
    if profile is None or isinstance(profile, str):
        from prepare.core import _profile

        profile = _profile(profile)
    return profile


def eval_row_count(profile) -> int:
    """How many rows of MAX_SEQ_LEN + 1 tokens the evaluation covers."""
    return max(1, profile.eval_tokens // profile.max_seq_len)


def eval_rows(tokenizer, chunk: int = 64):
    """int64 tensor [N, T+1] on the CPU: the evaluation rows of the tokenizer's val split."""
    import torch

    from prepare.dataloader import make_dataloader

    profile = _resolved_profile(tokenizer)
    n, T = eval_row_count(profile), profile.max_seq_len
    loader = make_dataloader(tokenizer, min(n, chunk), T, "val", device="cpu")
    parts, have = [], 0
    try:
        while have < n:
            x, y, _ = next(loader)
            parts.append(torch.cat([x, y[:, -1:]], dim=1))
            have += x.size(0)
    finally:
        loader.close()
    return torch.cat(parts)[:n].contiguous()


def token_nats(logits, y):
    """-ln p(target) for every target: logits [..., V'] (any float dtype), y [...] -> float32 [...]."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    return -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)


class BpbSum:
    """Sum of nats and of UTF-8 bytes over real-text targets; `bpb` is their ratio in bits."""

    def __init__(self, token_bytes):
        import torch

        self.token_bytes = token_bytes.long()
        device = self.token_bytes.device
        self.nats = torch.zeros((), dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)
        self.bytes = torch.zeros((), dtype=torch.int64, device=device)

    def add(self, nats, y) -> None:
        """Add per-token losses `nats` (any shape with y.numel() elements) for targets `y`."""
        import torch

        loss = nats.reshape(-1).to(self.nats.dtype)
        yb = self.token_bytes[y.reshape(-1)]
        self.nats += torch.where(yb > 0, loss, torch.zeros_like(loss)).sum()
        self.bytes += yb.sum()

    def bpb(self) -> float:
        total = int(self.bytes.item())
        if total == 0:
            from swarm.errors import DataError

            raise DataError("the validation batches contain no text bytes")
        return float(self.nats.item()) / (math.log(2) * total)


def evaluate_bpb(model, tokenizer, batch_size: int, device=None) -> float:
    """Validation bits per byte of `model` (lower is better), evaluated in this process."""
    import torch

    device = torch.device(device) if device is not None else model_device(model)
    rows = eval_rows(tokenizer)
    total = BpbSum(tokenizer.get_token_bytes(device=device))
    with torch.no_grad():
        for start in range(0, rows.size(0), batch_size):
            batch = rows[start : start + batch_size].to(device)
            x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
            total.add(model(x, y, reduction="none"), y)
    return total.bpb()
