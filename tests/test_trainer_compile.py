"""trainer/train.py's compile path, run on the CPU with Inductor (gcc builds the kernels).

On CUDA the script compiles the model and the AdamW / NorMuon update arithmetic. Here the same
definitions (tests/trainer_script.py) are compiled with Inductor on the CPU, under bf16 autocast
with bf16 embeddings, sliding windows and grouped-query attention, and dynamo's counters must show
no graph break and no recompilation over three steps, with results that match eager execution.

FlexAttention: PyTorch has no FlexAttention backward on the CPU ("FlexAttention does not support
backward on CPU"), so the flex model is compiled for the forward here (its block masks built once,
outside the graph, never rebuilt inside it), and the training step (forward, backward, optimizer)
is compiled with the SDPA attention. FlexAttention's backward is only exercised on a GPU
(test_trainer_gpu.py). Slow: Inductor takes a minute or two on 2 cores.
"""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from trainer_script import load_definitions

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not any(map(shutil.which, ("g++", "clang++", "c++"))), reason="Inductor needs a C++ compiler")]

SHAPE = dict(vocab_size=256, seq_len=256, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, head_dim=16, windows=(64, 256))


@pytest.fixture(scope="module")
def defs():
    return load_definitions("cpu")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def build(defs, backend):
    torch.manual_seed(0)
    with torch.device("meta"):
        model = defs.GPT(defs.GPTConfig(**SHAPE, backend=backend))
    model.to_empty(device="cpu")
    model.init_weights(torch.bfloat16)  # bf16 embeddings and rotary tables, as on CUDA
    for block in model.blocks:  # output projections start at zero: give attention and MLP a say
        torch.nn.init.normal_(block.attn.c_proj.weight, std=0.05)
        torch.nn.init.normal_(block.mlp.c_proj.weight, std=0.05)
    return model


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, SHAPE["vocab_size"], (2, SHAPE["seq_len"]), generator=g), \
        torch.randint(0, SHAPE["vocab_size"], (2, SHAPE["seq_len"]), generator=g)


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def graph_breaks():
    return sum(torch._dynamo.utils.counters["graph_break"].values())


def test_flex_model_compiles_once_with_its_masks_built_outside_the_graph(defs, monkeypatch):
    x, _ = batch()
    model = build(defs, "flex")
    assert set(model.masks) == set(SHAPE["windows"])  # one block mask per window, built by init_weights
    with torch.no_grad(), bf16():
        want = build(defs, "sdpa")(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # eager flex: "called without torch.compile"
            eager = model(x)
    torch._dynamo.utils.counters.clear()  # eager flex runs through dynamo itself: count from here
    calls = []
    real = defs.create_block_mask
    monkeypatch.setattr(defs, "create_block_mask", lambda *a, **k: calls.append(1) or real(*a, **k))
    compiled = torch.compile(model, dynamic=False, fullgraph=True)
    outs = []
    for step in range(3):
        with torch.no_grad(), bf16(), torch._dynamo.config.patch(error_on_recompile=step > 0):
            outs.append(compiled(x))
    assert calls == []  # no mask built during the compiled calls
    assert graph_breaks() == 0 and torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    for out in outs:
        torch.testing.assert_close(out, eager, rtol=0.02, atol=0.02)
    torch.testing.assert_close(eager, want, rtol=0.02, atol=0.02)


def train_step(defs, model, opt, x, y, step):
    defs.apply_schedules(opt, progress=step / 3, step=step)  # lr, momentum and weight decay change every step
    with bf16():
        loss = model(x, y)
    loss.backward()
    opt.step()
    model.zero_grad(set_to_none=True)
    return loss.detach()


def test_training_step_compiles_once_and_matches_eager(defs, monkeypatch):
    x, y = batch()
    eager_model, model = build(defs, "sdpa"), build(defs, "sdpa")  # the same weights (same seed)
    eager_opt, opt = defs.build_optimizer(eager_model, torch.float32), defs.build_optimizer(model, torch.float32)
    compiled = torch.compile(model, dynamic=False, fullgraph=True)
    for net in (eager_model, compiled):
        with bf16():
            loss = net(x, y)
        loss.backward()
        if net is eager_model:
            eager_loss = loss.detach()
    torch.testing.assert_close(loss.detach(), eager_loss, rtol=0.01, atol=0.01)
    for (name, p), q in zip(model.named_parameters(), eager_model.parameters()):
        cosine = torch.nn.functional.cosine_similarity(p.grad.float().flatten(), q.grad.float().flatten(), dim=0)
        assert cosine > 0.99 and p.grad.float().norm().item() == pytest.approx(q.grad.float().norm().item(), rel=0.05), name
        p.grad = q.grad.clone()  # from here on the same gradients: the optimizer arithmetic alone is compared

    defs.apply_schedules(eager_opt, progress=0.1, step=0)
    defs.apply_schedules(opt, progress=0.1, step=0)
    eager_opt.step()
    monkeypatch.setattr(defs, "adamw_update", torch.compile(defs.adamw_update, dynamic=False, fullgraph=True))
    monkeypatch.setattr(defs, "muon_update", torch.compile(defs.muon_update, dynamic=False, fullgraph=True))
    opt.step()
    for (name, p), q in zip(model.named_parameters(), eager_model.parameters()):
        tol = 0.02 if p.dtype == torch.bfloat16 else 1e-4  # bf16: the eager step rounds in bf16 between ops (an ulp or two)
        torch.testing.assert_close(p, q, rtol=tol, atol=tol, msg=name)
    model.zero_grad(set_to_none=True)

    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    adamw_kinds = {(tuple(p.shape), p.dtype) for g in opt.param_groups if g["kind"] == "adamw" for p in g["params"]}
    muon_kinds = {tuple(g["params"][0].shape) for g in opt.param_groups if g["kind"] == "muon"}
    assert graphs == 1 + len(adamw_kinds) + len(muon_kinds)  # the model, one update per parameter shape and dtype
    with torch._dynamo.config.patch(error_on_recompile=True):  # the schedules change lr, momentum, weight decay
        losses = [train_step(defs, compiled, opt, x, y, step) for step in (1, 2, 3)]
    assert graph_breaks() == 0 and torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    assert all(torch.isfinite(loss) for loss in losses) and losses[-1] < eager_loss
