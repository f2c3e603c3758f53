"""trainer/train.py's definitions without its training run, for tests and benchmarks.

train.py is a script: the part above its "Setup" section only defines things (hyperparameters,
the model, the optimizer, the schedules, the GPU peak table); from "Setup" on it trains.
`load_definitions(profile)` executes that first part, with the constants of the given profile, in a
fresh module, so a test builds the very model and optimizer the script builds. `meta_estimate`
builds a profile's model on the meta device and estimates its size, FLOPs and the memory of one
micro-batch without allocating anything (benchmarks/bench_gpu_memory.py prints it).
"""

from __future__ import annotations

import re
import sys
import types
from contextlib import contextmanager
from pathlib import Path

TRAIN_PY = Path(__file__).resolve().parents[1] / "trainer" / "train.py"
SETUP_HEADER = re.compile(r"^# -+\n# Setup\b", re.M)
_MISSING = object()
_loaded = 0  # definitions loaded so far: each load is a module of its own


@contextmanager
def profile_constants(profile_name: str):
    """`from prepare import PROFILE, MAX_SEQ_LEN, TIME_BUDGET, ...` gives this profile's values meanwhile."""
    import prepare
    from prepare.profiles import PROFILES

    prof = PROFILES[profile_name]
    values = {"PROFILE": prof.name, "MAX_SEQ_LEN": prof.max_seq_len, "TIME_BUDGET": prof.time_budget,
              "EVAL_TOKENS": prof.eval_tokens, "VOCAB_SIZE": prof.vocab_size}
    saved = {k: prepare.__dict__.get(k, _MISSING) for k in values}
    prepare.__dict__.update(values)
    try:
        yield prof
    finally:
        for k, v in saved.items():
            if v is _MISSING:
                prepare.__dict__.pop(k, None)
            else:
                prepare.__dict__[k] = v


def definitions_source(path: Path = TRAIN_PY) -> str:
    text = path.read_text()
    m = SETUP_HEADER.search(text)
    assert m, f"no '# Setup' section header in {path}"
    return text[: m.start()]


def load_definitions(profile: str = "cpu", path: Path = TRAIN_PY) -> types.ModuleType:
    """A module holding everything train.py defines before its Setup section, for `profile`."""
    global _loaded
    _loaded += 1
    module = types.ModuleType(f"train_definitions_{profile}_{_loaded}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module  # dataclasses and torch.compile look their module up
    with profile_constants(profile):
        exec(compile(definitions_source(path), str(path), "exec"), module.__dict__)
    return module


class MetaFA3:
    """FlashAttention-3 as far as memory goes: an autograd function that saves q, k, v, out and the
    float32 log-sum-exp for its backward, as the real kernel does (no T x T matrix)."""

    @staticmethod
    def flash_attn_func(q, k, v, causal=True, window_size=(-1, -1)):
        import torch

        class Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, q, k, v):
                out = torch.empty_like(q)
                lse = torch.empty(q.size(0), q.size(2), q.size(1), dtype=torch.float32, device=q.device)
                ctx.save_for_backward(q, k, v, out, lse)
                return out

            @staticmethod
            def backward(ctx, grad):
                q, k, v, _, _ = ctx.saved_tensors
                return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

        return Fn.apply(q, k, v)


def fused_rms_norm(x):
    """F.rms_norm as a fused CUDA kernel (and Inductor) keeps it: the input and a float32 rstd per row;
    the composite version that runs on the meta device saves float32 copies instead."""
    import torch

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x, torch.empty(x.shape[:-1] + (1,), dtype=torch.float32, device=x.device))
            return torch.empty_like(x)

        @staticmethod
        def backward(ctx, grad):
            return torch.empty_like(grad)

    return Fn.apply(x)


def meta_estimate(profile: str = "gpu", batch_size: int | None = None, vocab_size: int | None = None) -> dict:
    """Parameters, FLOPs per token and memory of `profile`'s model (bytes), all on the meta device.

    Activations: the tensors autograd saves in one forward of a micro-batch of `batch_size` rows
    (default DEVICE_BATCH_SIZE) of MAX_SEQ_LEN tokens, with the model in bf16 as under CUDA autocast
    (logits in float32, as the script makes them), FA3's and a fused RMSNorm's saved tensors; counted
    once per storage. Otherwise the eager graph: torch.compile fuses element-wise chains (the softcap
    and the loss above all) and saves less, so this errs high. Training state:
    float32 weights (bf16 embeddings), their gradients, AdamW's two moments and Muon's momentum.
    """
    import torch

    from prepare.profiles import PROFILES

    defs = load_definitions(profile)
    prof = PROFILES[profile]
    vocab = vocab_size or prof.vocab_size
    B, T = batch_size or defs.DEVICE_BATCH_SIZE, prof.max_seq_len
    config = defs.make_config(vocab, "fa3")
    defs.fa3, defs.norm = MetaFA3, fused_rms_norm  # the kernels as the GPU runs them, memory-wise
    with torch.device("meta"):
        model = defs.GPT(config)
    model.init_weights(torch.bfloat16)  # embeddings, value embeddings and rotary tables in bf16, as on CUDA

    def nbytes(ps):
        return sum(p.numel() * p.element_size() for p in ps)

    params = list(model.parameters())
    embeddings = [model.wte.weight] + [e.weight for e in model.value_embeds.values()]
    matrices = list(model.blocks.parameters())
    adam = [p for p in params if all(p is not m for m in matrices)]
    weights = nbytes(params)
    state = weights + weights + 2 * nbytes(adam) + nbytes(matrices)  # + grads, AdamW moments, Muon momentum

    model.to(torch.bfloat16)  # matmuls and their outputs in bf16, as under autocast
    weight_storages = {p.untyped_storage()._cdata for p in model.parameters()}  # weights are not activations
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage._cdata not in weight_storages:
            saved.setdefault(storage._cdata, storage.nbytes())
        return t

    idx = torch.zeros(B, T, dtype=torch.long, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(idx, idx)
    assert loss.device.type == "meta"
    activations = sum(saved.values())
    logits = B * T * vocab * 4  # the float32 gradient of the logits, alive at the start of the backward
    return {
        "profile": profile, "batch_size": B, "seq_len": T, "vocab_size": vocab,
        "num_params": sum(p.numel() for p in params),
        "embedding_params": sum(p.numel() for p in embeddings),
        "flops_per_token": model.flops_per_token(),
        "activation_bytes": activations,
        "training_state_bytes": state,
        "peak_bytes": activations + state + logits,
    }
