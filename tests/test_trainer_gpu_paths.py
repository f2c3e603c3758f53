"""trainer/train.py's GPU paths, checked on the CPU as far as they can be (no GPU, no data needed).

The script's definitions (model, optimizer, schedules) are loaded without running it
(tests/trainer_script.py). Covered: FA3 with a fake module that follows the documented window
semantics (and one returning (out, lse)) against SDPA, FA3's start-up check and its fallback on
any failure, the gpu-profile model on the meta device (size, FLOPs per token, memory of one
micro-batch with the reference's batch), NorMuon along the larger side, the weight-decay
schedule, the scalar groups, the value-embedding init, the MFU peak table, the comparability of
the evaluation with the reference's. The compile path is in test_trainer_compile.py; the checks
that need CUDA are in test_trainer_gpu.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainer_script import MetaFA3, load_definitions, meta_estimate


@pytest.fixture(scope="module")
def defs():
    return load_definitions("cpu")


def small_model(defs, backend="sdpa", dtype=torch.float32, **shape):
    cfg = dict(vocab_size=128, seq_len=64, n_layer=4, n_embd=64, n_head=4, n_kv_head=2, head_dim=16, windows=(16, 16, 16, 64))
    cfg.update(shape)
    with torch.device("meta"):
        model = defs.GPT(defs.GPTConfig(**cfg, backend=backend))
    model.to_empty(device="cpu")
    model.init_weights(dtype)
    return model


# ---- FlashAttention-3 -------------------------------------------------------------------------


def documented_fa3(q, k, v, causal=False, window_size=(-1, -1)):
    """flash_attn_func as documented: query i sees keys j with i - left <= j <= i + right (-1:
    unlimited on that side; causal: right = 0); grouped-query heads share kv heads; plain float32 math."""
    B, T, H, D = q.shape
    left, right = window_size
    right = 0 if causal else right
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = torch.ones(T, T, dtype=torch.bool)
    if left >= 0:
        allowed &= j >= i - left
    if right >= 0:
        allowed &= j <= i + right
    kf = k.float().repeat_interleave(H // k.size(2), dim=2)
    vf = v.float().repeat_interleave(H // v.size(2), dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q.float(), kf) / math.sqrt(D)
    p = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    out = torch.einsum("bhij,bjhd->bihd", p, vf)
    lse = scores.masked_fill(~allowed, float("-inf")).logsumexp(-1)
    return out.to(q.dtype), lse


class FakeFA3:
    @staticmethod
    def flash_attn_func(q, k, v, causal=False, window_size=(-1, -1)):
        return documented_fa3(q, k, v, causal, window_size)[0]


class FakeFA3WithLse:
    @staticmethod
    def flash_attn_func(q, k, v, causal=False, window_size=(-1, -1)):
        return documented_fa3(q, k, v, causal, window_size)  # (out, lse), as some builds return


class FakeFA3IgnoringWindow:
    @staticmethod
    def flash_attn_func(q, k, v, causal=False, window_size=(-1, -1)):
        return documented_fa3(q, k, v, causal, (-1, -1))[0]


class FakeFA3OldSignature:
    @staticmethod
    def flash_attn_func(q, k, v, softmax_scale=None, causal=False):
        return documented_fa3(q, k, v, causal)[0]


class FakeFA3WithoutBackward:
    """Right forward, no backward: a build compiled without its backward kernels."""

    @staticmethod
    def flash_attn_func(q, k, v, causal=False, window_size=(-1, -1)):
        class Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, q, k, v):
                return documented_fa3(q, k, v, causal, window_size)[0]

            @staticmethod
            def backward(ctx, grad):
                raise RuntimeError("FlashAttention backward is disabled in this build")

        return Fn.apply(q, k, v)


@pytest.mark.parametrize("module", [FakeFA3, FakeFA3WithLse], ids=["out", "out_lse"])
@pytest.mark.parametrize("window", [1, 5, 16, 47, 48, 100])
def test_fa3_with_documented_window_semantics_equals_sdpa(defs, module, window):
    g = torch.Generator().manual_seed(window)
    q, k, v = (torch.randn(2, 48, h, 16, generator=g) for h in (4, 2, 2))  # grouped-query: 4 heads on 2 kv heads
    defs.fa3 = module
    try:
        got = defs.attention(q, k, v, window, "fa3")
    finally:
        defs.fa3 = None
    want = defs.attention(q, k, v, window, "sdpa")
    assert got.shape == want.shape == q.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_fa3_start_up_check_accepts_a_working_module(defs, monkeypatch):
    for module in (FakeFA3, FakeFA3WithLse):
        monkeypatch.setattr(defs, "load_fa3", lambda m=module: m)
        assert defs.try_fa3(16, torch.device("cpu")) == (module, "")


@pytest.mark.parametrize("loader, reason", [
    (lambda: FakeFA3IgnoringWindow, "differs from SDPA"),
    (lambda: FakeFA3OldSignature, "TypeError"),
    (lambda: FakeFA3WithoutBackward, "backward is disabled"),
    (lambda: (_ for _ in ()).throw(OSError("no such file: libflash.so")), "OSError: no such file"),
    (lambda: (_ for _ in ()).throw(ImportError("No module named 'kernels'")), "ImportError"),
])
def test_fa3_start_up_check_falls_back_on_any_failure_with_a_reason(defs, monkeypatch, loader, reason):
    monkeypatch.setattr(defs, "load_fa3", loader)
    module, why_not = defs.try_fa3(16, torch.device("cpu"))
    assert module is None and reason in why_not and "\n" not in why_not


def test_fa3_start_up_check_leaves_the_seeded_random_stream_alone(defs, monkeypatch):
    monkeypatch.setattr(defs, "load_fa3", lambda: FakeFA3)
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    defs.try_fa3(16, torch.device("cpu"))
    assert torch.equal(torch.rand(4), expected)


# ---- the gpu-profile model on the meta device ---------------------------------------------------


@pytest.fixture(scope="module")
def gpu_defs():
    return load_definitions("gpu")


def test_gpu_profile_model_size_and_flops_on_the_meta_device(gpu_defs):
    from torch.utils.flop_counter import FlopCounterMode

    from prepare.profiles import PROFILES

    prof = PROFILES["gpu"]
    c = gpu_defs.make_config(prof.vocab_size, "fa3")
    gpu_defs.fa3 = MetaFA3  # attention as an opaque kernel: the counter sees the matmuls only
    with torch.device("meta"):
        model = gpu_defs.GPT(c)
    # the parameter count, from the architecture
    kv, n_ve = c.n_kv_head * c.head_dim, (c.n_layer + 1) // 2
    per_block = c.n_embd * c.n_head * c.head_dim * 2 + c.n_embd * kv * 2 + 8 * c.n_embd**2
    expected = 2 * c.vocab_size * c.n_embd + n_ve * (c.vocab_size * kv + 32 * c.n_kv_head) + c.n_layer * (per_block + 2)
    assert sum(p.numel() for p in model.parameters()) == expected
    # FLOPs per token: the matmuls as torch counts them (forward x 3), plus the windowed attention
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, c.seq_len, dtype=torch.long, device="meta"))
    counts = counter.get_flop_counts()["Global"]
    assert counts and all("mm" in str(op) for op in counts), counts
    matmul = sum(counts.values())
    attention = 12 * c.n_head * c.head_dim * sum(c.windows)
    assert model.flops_per_token() == 3 * matmul // c.seq_len + attention
    # the reference's arithmetic: ~40% MFU at 953 steps of 2^19 tokens in 300 s on an H100 (989.5 TFLOP/s)
    assert 0.35 < model.flops_per_token() * 953 * 2**19 / 300 / gpu_defs.peak_bf16_flops("NVIDIA H100 80GB HBM3") < 0.45


def test_gpu_profile_micro_batch_fits_80_gb_with_the_reference_batch(gpu_defs):
    assert gpu_defs.DEVICE_BATCH_SIZE == 128 and gpu_defs.TOTAL_BATCH_SIZE == 2**19  # the reference's batch
    full = meta_estimate("gpu", batch_size=128)
    half = meta_estimate("gpu", batch_size=64)
    assert full["activation_bytes"] == pytest.approx(2 * half["activation_bytes"], rel=0.01)  # activations scale with the batch
    assert full["activation_bytes"] > 20 * full["training_state_bytes"]  # at this batch the activations dominate
    assert full["peak_bytes"] < 80e9


# ---- the optimizer ------------------------------------------------------------------------------


def test_normuon_second_moment_runs_along_the_larger_side(defs):
    model = small_model(defs)
    opt = defs.build_optimizer(model, torch.float32)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    shapes = []
    for group in (g for g in opt.param_groups if g["kind"] == "muon"):
        rows, cols = group["params"][0].shape
        moment = opt.state[group["params"][0]]["second_moment"]
        assert moment.shape == ((len(group["params"]), rows, 1) if rows >= cols else (len(group["params"]), 1, cols))
        shapes.append("tall" if rows > cols else "wide" if rows < cols else "square")
    assert {"tall", "wide", "square"} <= set(shapes)


def test_normuon_equalises_the_columns_of_a_wide_matrix(defs):
    torch.manual_seed(0)
    rows, cols = 16, 64
    w = torch.nn.Parameter(torch.randn(rows, cols))
    grad = torch.randn(rows, cols) * torch.logspace(-1, 1, cols)  # columns on very different scales
    w.grad = grad.clone()
    opt = defs.MuonAdamW([dict(kind="muon", params=[w], lr=1.0, momentum=0.95, beta2=0.95, weight_decay=0.0)])
    before = w.detach().clone()
    opt.step()
    update = before - w.detach()
    ortho = defs.orthogonalize(grad[None], torch.float32)[0]  # what plain Muon would apply

    def spread(norms):
        return (norms.max() / norms.min()).item()

    assert spread(ortho.norm(dim=1)) < 1.3  # its rows are nearly equal: per-row normalisation would do little ...
    assert spread(ortho.norm(dim=0)) > 10  # ... while its columns are far apart
    assert spread(update.norm(dim=0)) < 1.01  # NorMuon evens out the columns
    assert update.norm() == pytest.approx(ortho.norm().item(), rel=1e-3)  # and keeps the overall size


def test_muon_weight_decay_decays_linearly_to_zero(defs):
    wd = defs.WEIGHT_DECAY
    assert wd > 0
    assert [defs.muon_weight_decay(p) for p in (0.0, 0.25, 0.5, 1.0, 1.5)] == pytest.approx([wd, 0.75 * wd, 0.5 * wd, 0.0, 0.0])
    model = small_model(defs)
    opt = defs.build_optimizer(model, torch.float32)
    matrix = model.blocks[0].mlp.c_fc.weight
    for progress, shrink in ((0.0, True), (1.0, False)):
        defs.apply_schedules(opt, progress, step=1000)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)  # no gradient: only the weight decay can move the matrix
        before = matrix.detach().clone()
        opt.step()
        assert torch.equal(matrix, before) != shrink
        if shrink:
            assert matrix.detach().norm() < before.norm()
    for group in opt.param_groups:
        assert group["lr_mult"] == defs.lr_multiplier(1.0)
        assert group["weight_decay"] == 0.0
        if group["kind"] == "muon":
            assert group["momentum"] == defs.MUON_MOMENTUM


def test_scalars_have_groups_of_their_own(defs):
    model = small_model(defs)
    opt = defs.build_optimizer(model, torch.float32)
    owner = {}
    for group in opt.param_groups:
        for p in group["params"]:
            assert id(p) not in owner, "a parameter in two groups"
            owner[id(p)] = group
    assert set(owner) == {id(p) for p in model.parameters()}
    resid, x0 = owner[id(model.resid_lambdas)], owner[id(model.x0_lambdas)]
    assert resid["params"] == [model.resid_lambdas] and x0["params"] == [model.x0_lambdas]
    assert resid["lr"] == pytest.approx(defs.SCALAR_LR * defs.RESID_LR_FRAC) and resid["lr"] == pytest.approx(x0["lr"] / 100)
    assert resid["betas"] == defs.ADAM_BETAS and x0["betas"] == (0.96, 0.95)
    assert resid["kind"] == x0["kind"] == "adamw" and resid["weight_decay"] == x0["weight_decay"] == 0.0


def test_value_embeddings_start_on_the_scale_of_the_values(defs):
    model = small_model(defs, n_embd=256, n_head=16, vocab_size=512)
    bound = math.sqrt(3) / math.sqrt(256)
    for ve in model.value_embeds.values():
        assert ve.weight.abs().max() <= bound
        assert ve.weight.std().item() == pytest.approx(1 / math.sqrt(256), rel=0.05)  # uniform +-bound: std bound/sqrt(3)


def test_cuda_activation_dtype_covers_embeddings_and_rotary_tables(defs):
    model = small_model(defs, dtype=torch.bfloat16)
    assert model.wte.weight.dtype == model.cos.dtype == model.sin.dtype == torch.bfloat16
    assert all(e.weight.dtype == torch.bfloat16 for e in model.value_embeds.values())
    assert model.lm_head.weight.dtype == model.blocks[0].attn.c_q.weight.dtype == torch.float32  # matrices stay float32
    assert model.resid_lambdas.dtype == torch.float32


# ---- MFU ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.5), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835),
    ("NVIDIA H200", 989.5), ("NVIDIA H20", 148), ("NVIDIA B200", 2250),
    ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A100 80GB PCIe", 312), ("NVIDIA L40S", 362),
])
def test_mfu_peak_of_known_gpus(defs, name, tflops):
    assert defs.peak_bf16_flops(name) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("name", ["NVIDIA GeForce RTX 4090", "Tesla T4", "NVIDIA GB200", "AMD Instinct MI300X"])
def test_mfu_peak_of_an_unknown_gpu_is_none_not_the_h100s(defs, name):
    assert defs.peak_bf16_flops(name) is None


# ---- evaluation comparable with the reference's ---------------------------------------------------


def test_gpu_evaluation_uses_the_reference_token_count_and_batch(gpu_defs):
    from prepare.evaluate import eval_row_count
    from prepare.profiles import PROFILES
    from prepare.referee import _eval_batch_size

    prof = PROFILES["gpu"]
    rows = eval_row_count(prof)
    assert rows * prof.max_seq_len == 40 * 2**19  # the reference's EVAL_TOKENS
    assert _eval_batch_size(gpu_defs.DEVICE_BATCH_SIZE, rows, prof.max_seq_len, prof.vocab_size, "cuda") == 128
    assert rows % 128 == 0  # whole batches: no padded rows
    assert not prof.keep_cropped_rest  # the reference's packing, hence its rows
