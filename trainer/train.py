"""Train a small GPT for a fixed wall-clock budget, then hand the model to the referee.

This is the one file the research agents edit. It reads top to bottom: hyperparameters, model,
optimizer, schedules, setup, training loop, hand-over. Everything above "Setup" only defines
things (tests load that part on its own); training starts there. The rules of the game (sequence
length, time budget, data, tokenizer, the evaluation itself) live in `prepare` and are not
editable: the referee (`python -m prepare.referee`, which `autoresearch train` and the swarm run)
starts this script, seeds it, keeps the clock, evaluates the handed-over model (token ids ->
logits) on the validation split itself and prints the summary block.
Run from the repository root: `autoresearch train` (or `python -m prepare.referee`).
"""

import gc
import math
import os
import re
import resource
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from prepare import MAX_SEQ_LEN, PROFILE, TIME_BUDGET, Tokenizer, hand_over, make_dataloader

# ---------------------------------------------------------------------------------------------
# Hyperparameters (gpu profile; the cpu profile overrides some just below)
# ---------------------------------------------------------------------------------------------

# model shape
DEPTH = 8  # number of transformer blocks
ASPECT_RATIO = 64  # model width = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM
HEAD_DIM = 128  # channels per attention head
N_KV_HEAD = 4  # key/value heads (grouped-query attention); the largest divisor of the query heads not above this is used
WINDOW_PATTERN = "SSSL"  # per-layer attention span, repeated over the layers: S = short window, L = full context; the last layer is always L
SHORT_WINDOW = 1024  # tokens an "S" layer attends to (itself included)
LOGIT_SOFTCAP = 15.0  # logits = c * tanh(logits / c)
ROPE_BASE = 10000.0  # rotary embedding base frequency
X0_INIT = 0.1  # initial weight of the input embedding x0 mixed back in before every block

# batch
TOTAL_BATCH_SIZE = 2**19  # tokens per optimizer step (gradient accumulation fills it up)
DEVICE_BATCH_SIZE = 128  # sequences per forward/backward pass

# optimizer: AdamW for embeddings, lm head and scalars; Muon for the 2-D matrices of the blocks
EMBEDDING_LR = 0.6  # token and value embeddings (AdamW)
UNEMBEDDING_LR = 0.004  # lm head (AdamW)
MATRIX_LR = 0.04  # transformer matrices (Muon)
SCALAR_LR = 0.5  # per-layer x0 scalars (AdamW); the residual scalars use RESID_LR_FRAC of it
RESID_LR_FRAC = 0.01  # lr of the residual scalars as a fraction of SCALAR_LR (they multiply the whole stream)
ADAM_BETAS = (0.8, 0.95)  # AdamW beta1, beta2
X0_BETAS = (0.96, 0.95)  # AdamW beta1, beta2 of the x0 scalars
WEIGHT_DECAY = 0.2  # cautious weight decay of the Muon matrices at the start, decayed linearly to 0 over training (AdamW groups use none)
MUON_MOMENTUM = 0.95  # Nesterov momentum of Muon after its warmup
MUON_MOMENTUM_START = 0.85  # ... and at step 0
MUON_MOMENTUM_WARMUP_STEPS = 300  # steps of linear momentum warmup
MUON_BETA2 = 0.95  # decay of NorMuon's second moment (one per row or column, along the larger side)

# learning-rate schedule, by progress = training time / TIME_BUDGET
WARMUP_RATIO = 0.0  # fraction of the budget spent ramping the lr up from 0
WARMDOWN_RATIO = 0.5  # fraction of the budget at the end spent decaying the lr linearly ...
FINAL_LR_FRAC = 0.0  # ... down to this fraction of the peak

if PROFILE == "cpu":  # 2 cores, 20 s: a small, fast model and small batches, so that it takes ~100 steps
    DEPTH = 4
    ASPECT_RATIO = 16
    HEAD_DIM = 32
    N_KV_HEAD = 1
    SHORT_WINDOW = 128
    TOTAL_BATCH_SIZE = 2**12
    DEVICE_BATCH_SIZE = 16
    MATRIX_LR = 0.08
    UNEMBEDDING_LR = 0.008
    MUON_MOMENTUM_WARMUP_STEPS = 20

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


@dataclass
class GPTConfig:
    vocab_size: int
    seq_len: int
    n_layer: int
    n_embd: int
    n_head: int
    n_kv_head: int
    head_dim: int
    windows: tuple  # attention span of each layer, in tokens (itself included)
    backend: str  # "fa3", "flex" or "sdpa"


def make_config(vocab_size, backend):
    model_dim = -(-DEPTH * ASPECT_RATIO // HEAD_DIM) * HEAD_DIM  # round up to a multiple of HEAD_DIM
    n_head = model_dim // HEAD_DIM
    n_kv_head = max(d for d in range(1, min(N_KV_HEAD, n_head) + 1) if n_head % d == 0)
    pattern = WINDOW_PATTERN.upper()
    assert pattern and set(pattern) <= {"S", "L"}, f"WINDOW_PATTERN must be made of S and L, not {WINDOW_PATTERN!r}"
    windows = [min(SHORT_WINDOW, MAX_SEQ_LEN) if pattern[i % len(pattern)] == "S" else MAX_SEQ_LEN for i in range(DEPTH)]
    windows[-1] = MAX_SEQ_LEN
    return GPTConfig(vocab_size, MAX_SEQ_LEN, DEPTH, model_dim, n_head, n_kv_head, HEAD_DIM, tuple(windows), backend)


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary(x, cos, sin):
    # x: (B, T, H, D); rotate the two halves of each head as pairs
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def sliding_window_mask(window, T, device):
    i = torch.arange(T, device=device)
    diff = i[:, None] - i[None, :]
    return (diff >= 0) & (diff < window)  # True = may attend


def attention_masks(backend, windows, T, device):
    # window -> mask for sequences of T tokens, built outside any compiled code and handed to the
    # attention: FlexAttention block masks, or SDPA boolean masks (full windows need none; FA3 none)
    def causal_window(window):
        return lambda b, h, q_idx, kv_idx: (q_idx >= kv_idx) & (q_idx - kv_idx < window)

    if backend == "flex":
        return {w: create_block_mask(causal_window(min(w, T)), B=None, H=None, Q_LEN=T, KV_LEN=T, device=device) for w in set(windows)}
    if backend == "sdpa":
        return {w: sliding_window_mask(w, T, device) for w in set(windows) if w < T}
    return {}


def fa3_attention(module, q, k, v, window):
    # FlashAttention-3: window_size=(left, right) lets query i see keys i-left .. i+right; -1 = unlimited
    left = -1 if window >= q.size(1) else window - 1
    y = module.flash_attn_func(q, k, v, causal=True, window_size=(left, 0))
    return y[0] if isinstance(y, tuple) else y  # some builds return (out, lse)


def attention(q, k, v, window, backend, mask=None):
    # q: (B, T, H, D); k, v: (B, T, Hkv, D). Causal, limited to the last `window` tokens; mask: from attention_masks
    if backend == "fa3":
        return fa3_attention(fa3, q, k, v, window)
    T = q.size(1)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if backend == "flex":
        y = flex_attention(q, k, v, block_mask=mask, enable_gqa=True)
    elif window >= T:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=sliding_window_mask(window, T, q.device) if mask is None else mask, enable_gqa=True)
    return y.transpose(1, 2)


def load_fa3():
    # an installed flash_attn_interface, else the Hopper build from the HF `kernels` hub (or its local cache)
    try:
        import flash_attn_interface

        return flash_attn_interface
    except ImportError:
        from kernels import get_kernel

        return get_kernel("varunneal/flash-attention-3").flash_attn_interface


def try_fa3(head_dim, device):
    # (module, "") when FA3 loads, one tiny windowed GQA call agrees with SDPA and its backward runs, else (None, why not)
    try:
        module = load_fa3()
        g = torch.Generator(device=device).manual_seed(0)  # its own generator: the training's random stream stays as seeded
        q, k, v = (torch.randn(1, 64, h, head_dim, device=device, dtype=torch.bfloat16, generator=g, requires_grad=True) for h in (4, 2, 2))
        y = fa3_attention(module, q, k, v, 16)
        error = (y.float() - attention(q.detach(), k.detach(), v.detach(), 16, "sdpa").float()).abs().max().item()
        if not error < 0.05:
            raise RuntimeError(f"its output differs from SDPA by {error:.3g}")
        y.float().sum().backward()  # training needs the backward too (a build may leave it out)
        if not all(t.grad is not None and bool(torch.isfinite(t.grad).all()) for t in (q, k, v)):
            raise RuntimeError("its backward gives no finite gradients")
        return module, ""
    except Exception as exc:  # any failure (missing, wrong build, wrong signature): fall back
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return None, f"{type(exc).__name__}: {first_line}"[:200]


def has_value_embedding(layer, n_layer):
    return layer % 2 == (n_layer - 1) % 2  # alternating layers, the last one included


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.window, self.backend = config.windows[layer], config.backend
        self.c_q = nn.Linear(config.n_embd, config.n_head * config.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_kv_head * config.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_kv_head * config.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_head * config.head_dim, config.n_embd, bias=False)
        # input-dependent gate (one per kv head) mixing the value embedding into the values
        self.ve_gate_channels = min(32, config.n_embd)
        self.ve_gate = nn.Linear(self.ve_gate_channels, config.n_kv_head, bias=False) if has_value_embedding(layer, config.n_layer) else None

    def forward(self, x, ve, cos, sin, mask):
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        if ve is not None:
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., : self.ve_gate_channels]))  # (B, T, Hkv), 1 at init
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_kv_head, self.head_dim)
        dtype = q.dtype  # bf16 under autocast
        q, k = apply_rotary(norm(q), cos, sin), apply_rotary(norm(k), cos, sin)  # QK-norm, then rotary
        y = attention(q.to(dtype), k.to(dtype), v.to(dtype), self.window, self.backend, mask)
        return self.c_proj(y.reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU^2


class Block(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer)
        self.mlp = MLP(config)

    def forward(self, x, ve, cos, sin, mask):
        x = x + self.attn(norm(x), ve, cos, sin, mask)
        x = x + self.mlp(norm(x))
        return x


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        kv_dim = config.n_kv_head * config.head_dim
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.value_embeds = nn.ModuleDict(
            {str(i): nn.Embedding(config.vocab_size, kv_dim) for i in range(config.n_layer) if has_value_embedding(i, config.n_layer)}
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # untied from wte
        self.resid_lambdas = nn.Parameter(torch.empty(config.n_layer))  # x = r_i * x + a_i * x0 before block i
        self.x0_lambdas = nn.Parameter(torch.empty(config.n_layer))
        self.register_buffer("cos", torch.empty(1, 2 * config.seq_len, 1, config.head_dim // 2), persistent=False)
        self.register_buffer("sin", torch.empty(1, 2 * config.seq_len, 1, config.head_dim // 2), persistent=False)
        self.masks = {}  # window -> attention mask for sequences of seq_len tokens (init_weights builds them)

    @torch.no_grad()
    def init_weights(self, dtype=torch.float32):
        # dtype: of the activations (bf16 on CUDA): embeddings, value embeddings and rotary tables are kept in it
        c, device = self.config, self.cos.device
        inv_freq = 1.0 / ROPE_BASE ** (torch.arange(0, c.head_dim, 2, dtype=torch.float32, device=device) / c.head_dim)
        angles = torch.outer(torch.arange(2 * c.seq_len, dtype=torch.float32, device=device), inv_freq)  # room for longer sequences
        self.cos = angles.cos()[None, :, None, :].to(dtype)
        self.sin = angles.sin()[None, :, None, :].to(dtype)
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(X0_INIT)
        bound = 3**0.5 * c.n_embd**-0.5  # uniform with std 1/sqrt(width)
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for ve in self.value_embeds.values():
            nn.init.uniform_(ve.weight, -bound, bound)  # on the scale of the values they are added to
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)  # every block starts as the identity
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)
        self.wte.to(dtype)
        self.value_embeds.to(dtype)
        self.masks = attention_masks(c.backend, c.windows, c.seq_len, device)

    def forward(self, idx, targets=None, reduction="mean"):
        B, T = idx.shape
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        masks = self.masks if T == self.config.seq_len else attention_masks(self.config.backend, self.config.windows, T, idx.device)
        x = x0 = norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, cos, sin, masks.get(block.attn.window))
        logits = self.lm_head(norm(x)).float()
        logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1, reduction=reduction)
        return loss.view(B, T) if reduction == "none" else loss

    def flops_per_token(self):
        # 6 flops per matmul weight per token (forward + backward); embedding lookups excluded
        c = self.config
        lookups = self.wte.weight.numel() + sum(e.weight.numel() for e in self.value_embeds.values())
        matmul_params = sum(p.numel() for p in self.parameters()) - lookups - self.resid_lambdas.numel() - self.x0_lambdas.numel()
        attn = 12 * c.n_head * c.head_dim * sum(min(w, c.seq_len) for w in c.windows)  # QK^T and AV, windowed
        return 6 * matmul_params + attn


# ---------------------------------------------------------------------------------------------
# Optimizer: MuonAdamW
# ---------------------------------------------------------------------------------------------

# Polar Express (Amsel et al., 2025): per-iteration coefficients (a, b, c) of the odd quintic
# X <- a X + b (X X^T) X + c (X X^T)^2 X that drives every singular value of X towards 1.
polar_express_coeffs = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def orthogonalize(G, dtype):
    # G: (N, rows, cols), a stack of same-shape matrices -> nearest semi-orthogonal matrices
    X = G.to(dtype)
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT  # iterate on the smaller Gram matrix
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)  # spectral norm <= 1
    for a, b, c in polar_express_coeffs:
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return (X.mT if tall else X).to(G.dtype)


# The update arithmetic. Hyperparameters arrive as 0-D float32 CPU tensors, so that the compiled
# versions (on CUDA) never recompile when a schedule changes them.


def adamw_update(p, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, wd):
    p.mul_(1 - lr * wd)  # decoupled weight decay
    exp_avg.lerp_(grad, (1 - beta1).to(exp_avg.dtype))
    exp_avg_sq.lerp_(grad.square(), (1 - beta2).to(exp_avg_sq.dtype))
    denom = (exp_avg_sq / (1 - beta2**step)).sqrt() + eps  # bias-corrected
    p.sub_(exp_avg / denom * (lr / (1 - beta1**step)))


def muon_update(params, grads, momentum_buffer, second_moment, momentum, lr, wd, beta2, red_dim, dtype):
    # params, grads: (N, rows, cols) stacks; second_moment: one entry per row (red_dim -1) or column (red_dim -2)
    momentum_buffer.lerp_(grads, (1 - momentum).to(grads.dtype))
    update = orthogonalize(grads.lerp_(momentum_buffer, momentum.to(grads.dtype)), dtype)  # Nesterov
    # NorMuon: divide each row (or column) by its running RMS, then restore the update's overall norm
    mean_sq = update.float().square().mean(dim=red_dim, keepdim=True)
    second_moment.lerp_(mean_sq.to(second_moment.dtype), (1 - beta2).to(second_moment.dtype))
    scale = second_moment.float().clamp_min(1e-10).rsqrt()
    size_before = mean_sq.sum(dim=(-2, -1), keepdim=True)  # squared norms, up to the same factor
    size_after = (mean_sq * scale.square()).sum(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    update = update * (scale * (size_before / size_after).sqrt()).to(update.dtype)
    agree = (update * params) >= 0  # cautious: decay only where the update shrinks the weight anyway
    params.sub_(lr * update + lr * wd * params * agree)


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer, two update rules chosen per param group by group["kind"].

    "adamw": AdamW (bias-corrected, decoupled weight decay).
    "muon": all params of a group share one shape; Nesterov momentum, Polar Express
    orthogonalisation, NorMuon variance normalisation along the larger side, cautious weight decay.
    Every group's lr is group["initial_lr"] * group["lr_mult"]; the loop sets lr_mult, and
    Muon's momentum and weight_decay.
    """

    def __init__(self, groups, muon_dtype=torch.float32):
        super().__init__(groups, dict(lr_mult=1.0))
        for g in self.param_groups:
            g["initial_lr"] = g["lr"]
        self.muon_dtype = muon_dtype
        self.hp = {name: torch.zeros((), dtype=torch.float32) for name in ("step", "lr", "beta1", "beta2", "eps", "wd", "momentum")}

    def _scalars(self, **values):
        for name, value in values.items():
            self.hp[name].fill_(value)
        return [self.hp[name] for name in values]

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            group["lr"] = group["initial_lr"] * group["lr_mult"]
            if group["kind"] == "adamw":
                self._adamw(group)
            else:
                self._muon(group)

    def _adamw(self, group):
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            (beta1, beta2), eps = group["betas"], group["eps"]
            hp = self._scalars(step=state["step"], lr=group["lr"], beta1=beta1, beta2=beta2, eps=eps, wd=group["weight_decay"])
            adamw_update(p, p.grad, state["exp_avg"], state["exp_avg_sq"], *hp)

    def _muon(self, group):
        params = group["params"]
        state = self.state[params[0]]  # the group's state lives with its first param
        rows, cols = params[0].shape
        red_dim = -1 if rows >= cols else -2  # normalise along the larger side: per row (tall, square) or per column (wide)
        if not state:
            state["momentum_buffer"] = torch.zeros(len(params), rows, cols, dtype=params[0].dtype, device=params[0].device)
            state["second_moment"] = torch.zeros(len(params), rows if red_dim == -1 else 1, cols if red_dim == -2 else 1,
                                                 dtype=params[0].dtype, device=params[0].device)
        stacked = torch.stack(params)
        lr = group["lr"] * max(1.0, rows / cols) ** 0.5
        hp = self._scalars(momentum=group["momentum"], lr=lr, wd=group["weight_decay"], beta2=group["beta2"])
        muon_update(stacked, torch.stack([p.grad for p in params]), state["momentum_buffer"], state["second_moment"],
                    *hp, red_dim, self.muon_dtype)
        torch._foreach_copy_(params, list(stacked.unbind(0)))


def build_optimizer(model, muon_dtype):
    dim_scale = (model.config.n_embd / 768) ** -0.5  # AdamW lrs were tuned at width 768
    matrices = [p for p in model.blocks.parameters()]
    assert all(p.ndim == 2 for p in matrices), "every block parameter is expected to be a matrix for Muon"
    adam = dict(kind="adamw", eps=1e-10, weight_decay=0.0)
    groups = [
        dict(params=[model.wte.weight], lr=EMBEDDING_LR * dim_scale, betas=ADAM_BETAS, **adam),
        dict(params=[e.weight for e in model.value_embeds.values()], lr=EMBEDDING_LR * dim_scale, betas=ADAM_BETAS, **adam),
        dict(params=[model.lm_head.weight], lr=UNEMBEDDING_LR * dim_scale, betas=ADAM_BETAS, **adam),
        dict(params=[model.resid_lambdas], lr=SCALAR_LR * RESID_LR_FRAC, betas=ADAM_BETAS, **adam),
        dict(params=[model.x0_lambdas], lr=SCALAR_LR, betas=X0_BETAS, **adam),
    ]
    for shape in sorted({tuple(p.shape) for p in matrices}):
        same = [p for p in matrices if tuple(p.shape) == shape]
        groups.append(dict(kind="muon", params=same, lr=MATRIX_LR, momentum=MUON_MOMENTUM_START, beta2=MUON_BETA2, weight_decay=WEIGHT_DECAY))
    return MuonAdamW([g for g in groups if g["params"]], muon_dtype=muon_dtype)


# ---------------------------------------------------------------------------------------------
# Schedules, and the GPU's peak for MFU
# ---------------------------------------------------------------------------------------------


def lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return (progress + 1e-8) / WARMUP_RATIO
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    frac = min(1.0, (1.0 - progress) / max(WARMDOWN_RATIO, 1e-8))
    return FINAL_LR_FRAC + (1.0 - FINAL_LR_FRAC) * frac


def muon_momentum(step):
    frac = min(1.0, step / max(1, MUON_MOMENTUM_WARMUP_STEPS))
    return (1 - frac) * MUON_MOMENTUM_START + frac * MUON_MOMENTUM


def muon_weight_decay(progress):
    return WEIGHT_DECAY * (1.0 - min(progress, 1.0))


def apply_schedules(optimizer, progress, step):
    # the lr multiplier of every group, Muon's momentum and weight decay; returns the lr multiplier
    lrm = lr_multiplier(progress)
    for group in optimizer.param_groups:
        group["lr_mult"] = lrm
        if group["kind"] == "muon":
            group["momentum"] = muon_momentum(step)
            group["weight_decay"] = muon_weight_decay(progress)
    return lrm


def peak_bf16_flops(device_name):
    # dense bf16 tensor-core peak (FLOP/s) by device name, most specific first; None for a GPU not listed
    peaks = (
        (r"H100.*NVL", 835e12), (r"H100.*PCIe", 756e12), (r"H100", 989.5e12),
        (r"H200.*NVL", 835e12), (r"H200", 989.5e12), (r"\bH20\b", 148e12),
        (r"\bB200\b", 2250e12), (r"A100", 312e12), (r"L40S", 362e12),
    )
    return next((flops for pattern, flops in peaks if re.search(pattern, device_name, re.IGNORECASE)), None)


# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------

# the referee has seeded random, numpy and torch (AUTORESEARCH_SEED) before this script started
if "PYTORCH_ALLOC_CONF" not in os.environ and "PYTORCH_CUDA_ALLOC_CONF" not in os.environ:
    os.environ["PYTORCH_ALLOC_CONF"] = "expandable_segments:True"  # less fragmentation; read when CUDA allocates first
if os.environ.get("OMP_NUM_THREADS"):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if device.type == "cuda":
    torch.set_float32_matmul_precision("high")
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16)
else:
    from contextlib import nullcontext

    autocast = nullcontext()  # float32 on CPU: bf16 autocast measured slower there

fa3 = None
backend = "sdpa"
if device.type == "cuda":
    backend = "flex"
    if torch.cuda.get_device_capability()[0] == 9:  # Hopper: FlashAttention-3 when it loads and works
        fa3, why_not = try_fa3(HEAD_DIM, device)
        if fa3 is not None:
            backend = "fa3"
        else:
            print(f"attention: FA3 not used ({why_not}); falling back to FlexAttention")

tokenizer = Tokenizer.load()
vocab_size = tokenizer.get_vocab_size()
config = make_config(vocab_size, backend)

with torch.device("meta"):
    model = GPT(config)
model.to_empty(device=device)
model.init_weights(torch.bfloat16 if device.type == "cuda" else torch.float32)
num_params = sum(p.numel() for p in model.parameters())
flops_per_token = model.flops_per_token()
optimizer = build_optimizer(model, muon_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
if device.type == "cuda":
    model = torch.compile(model, dynamic=False)
    adamw_update = torch.compile(adamw_update, dynamic=False, fullgraph=True)
    muon_update = torch.compile(muon_update, dynamic=False, fullgraph=True)

tokens_per_micro_step = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
assert TOTAL_BATCH_SIZE % tokens_per_micro_step == 0, (
    f"TOTAL_BATCH_SIZE ({TOTAL_BATCH_SIZE}) must be a multiple of DEVICE_BATCH_SIZE * MAX_SEQ_LEN "
    f"({DEVICE_BATCH_SIZE} * {MAX_SEQ_LEN} = {tokens_per_micro_step})"
)
grad_accum_steps = TOTAL_BATCH_SIZE // tokens_per_micro_step
train_loader = make_dataloader(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train", device)
x, y, epoch = next(train_loader)

print(f"profile {PROFILE} | device {device.type} | attention {backend} | vocab {vocab_size}")
print(f"model: depth {DEPTH}, width {config.n_embd}, heads {config.n_head} (kv {config.n_kv_head}) x {HEAD_DIM}, windows {list(config.windows)}")
print(f"params {num_params / 1e6:.2f}M | batch {TOTAL_BATCH_SIZE} tokens = {grad_accum_steps} x {DEVICE_BATCH_SIZE} x {MAX_SEQ_LEN}")


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# Training loop: TIME_BUDGET seconds of training, not counting the first (compile) steps
# ---------------------------------------------------------------------------------------------

untimed_steps = 10 if device.type == "cuda" else 2  # warm-up / compile steps kept off the clock
max_loss = 3 * math.log(vocab_size)  # a loss above this (or NaN) means training diverged
training_time = 0.0
step = 0
smooth_loss = 0.0
next_log = 0.0
while True:
    sync()
    t0 = time.time()
    lrm = apply_schedules(optimizer, min(training_time / TIME_BUDGET, 1.0), step)
    for _ in range(grad_accum_steps):
        with autocast:
            loss = model(x, y)
        (loss / grad_accum_steps).backward()
        x, y, epoch = next(train_loader)  # prefetch while the GPU works
    optimizer.step()
    model.zero_grad(set_to_none=True)
    loss_value = loss.item()  # last micro-batch's loss; also waits for the step to finish
    sync()
    dt = time.time() - t0

    if not math.isfinite(loss_value) or loss_value > max_loss:
        print(f"FAIL: training diverged at step {step}: loss {loss_value} (limit {max_loss:.1f}); lower the learning rates")
        sys.exit(1)

    step += 1
    if step > untimed_steps:
        training_time += dt
    smooth_loss = 0.9 * smooth_loss + 0.1 * loss_value
    debiased = smooth_loss / (1 - 0.9**step)
    if step == 1:
        gc.collect()
        gc.freeze()  # the objects alive now never need scanning again
        gc.disable()  # a collection pause mid-run costs more than the garbage
    elif step % 5000 == 0:
        gc.collect()
    progress = training_time / TIME_BUDGET
    if step <= untimed_steps or progress >= next_log or progress >= 1.0:
        next_log = progress + 0.1
        tok_per_s = TOTAL_BATCH_SIZE / dt
        remaining = max(0.0, TIME_BUDGET - training_time)
        print(f"step {step:05d} | loss {debiased:.4f} | lrm {lrm:.2f} | {dt * 1000:.0f} ms | {tok_per_s:,.0f} tok/s | epoch {epoch} | remaining {remaining:.1f}s", flush=True)
    if training_time >= TIME_BUDGET:
        break

# ---------------------------------------------------------------------------------------------
# Hand-over: the referee evaluates the model (token ids -> logits) and prints the summary
# ---------------------------------------------------------------------------------------------

timed_steps = max(1, step - untimed_steps)
tokens_per_second = TOTAL_BATCH_SIZE * timed_steps / max(training_time, 1e-9)
mfu = 0.0
if device.type == "cuda":
    peak_mem_mb = torch.cuda.max_memory_allocated() / 2**20
    name = torch.cuda.get_device_name()
    peak_flops = peak_bf16_flops(name)
    if peak_flops:
        mfu = 100 * flops_per_token * tokens_per_second / peak_flops
    else:
        print(f"MFU: no bf16 peak known for {name!r}; mfu_percent is reported as 0")
else:
    peak_mem_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # CPU: peak resident memory

print(f"training done: {step} steps, {training_time:.1f}s of training, {tokens_per_second:,.0f} tok/s, attention {backend}", flush=True)
stats = dict(
    training_seconds=training_time,
    peak_vram_mb=peak_mem_mb,
    mfu_percent=mfu,
    total_tokens_M=step * TOTAL_BATCH_SIZE / 1e6,
    num_steps=step,
    num_params_M=num_params / 1e6,
    depth=DEPTH,
    attention=backend,
)
hand_over(model, stats, batch_size=DEVICE_BATCH_SIZE, autocast=autocast)
