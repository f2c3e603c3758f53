"""trainer/train.py on a GPU: what the CPU cannot show. Skipped without CUDA.

The script's definitions (tests/trainer_script.py) on the GPU at hand: which attention it selects
(FA3 on Hopper when it loads and passes its check, else FlexAttention) and that it agrees with
SDPA; one compiled training step (model and optimizer arithmetic) per backend, with no graph break
and no recompilation over three steps; bf16 activations, and a measured peak memory below the
meta-device estimate of the same micro-batch (which errs high); expandable segments switched on the
way the script does it (the variable set after `import torch`, before the first CUDA allocation).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import pytest
import torch

from trainer_script import load_definitions, meta_estimate

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def defs():
    return load_definitions("gpu")


def is_hopper():
    return torch.cuda.get_device_capability()[0] == 9


def backends(defs):
    found = ["flex"]
    if is_hopper():
        module, _ = defs.try_fa3(128, CUDA)
        if module is not None:
            defs.fa3 = module
            found.append("fa3")
    return found


def test_attention_selection_agrees_with_sdpa(defs):
    g = torch.Generator(device=CUDA).manual_seed(0)
    q, k, v = (torch.randn(2, 512, h, 128, device=CUDA, dtype=torch.bfloat16, generator=g) for h in (4, 2, 2))
    module, why_not = defs.try_fa3(128, CUDA) if is_hopper() else (None, "not a Hopper GPU")
    print(f"FA3: {'used' if module else 'not used: ' + why_not}")
    for window in (128, 512):
        want = defs.attention(q, k, v, window, "sdpa").float()
        masks = defs.attention_masks("flex", (window,), 512, CUDA)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flex = defs.attention(q, k, v, window, "flex", masks[window]).float()
        assert (flex - want).abs().max() < 0.05
        if module is not None:
            defs.fa3 = module
            assert (defs.attention(q, k, v, window, "fa3").float() - want).abs().max() < 0.05


@pytest.mark.parametrize("backend", ["flex", "fa3"])
def test_compiled_training_step(defs, backend, monkeypatch):
    if backend not in backends(defs):
        pytest.skip("FA3 is not available on this GPU")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    config = defs.GPTConfig(vocab_size=8192, seq_len=1024, n_layer=4, n_embd=256, n_head=4, n_kv_head=2, head_dim=64,
                            windows=(256, 256, 256, 1024), backend=backend)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = defs.GPT(config)
    model.to_empty(device=CUDA)
    model.init_weights(torch.bfloat16)
    opt = defs.build_optimizer(model, torch.bfloat16)
    compiled = torch.compile(model, dynamic=False)
    monkeypatch.setattr(defs, "adamw_update", torch.compile(defs.adamw_update, dynamic=False, fullgraph=True))
    monkeypatch.setattr(defs, "muon_update", torch.compile(defs.muon_update, dynamic=False, fullgraph=True))
    x = torch.randint(0, 8192, (8, 1024), device=CUDA)
    y = torch.roll(x, -1, dims=1)
    losses = []
    for step in range(4):
        with torch._dynamo.config.patch(error_on_recompile=step > 0):
            defs.apply_schedules(opt, progress=step / 4, step=step)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = compiled(x, y)
            loss.backward()
            opt.step()
            model.zero_grad(set_to_none=True)
            losses.append(loss.item())
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == 0
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_bf16_activations_and_memory_below_the_meta_estimate(defs):
    from prepare.profiles import PROFILES

    batch = 8
    prof = PROFILES["gpu"]
    config = defs.make_config(prof.vocab_size, "flex")
    with torch.device("meta"):
        model = defs.GPT(config)
    model.to_empty(device=CUDA)
    model.init_weights(torch.bfloat16)
    assert model.wte.weight.dtype == model.cos.dtype == torch.bfloat16
    assert all(e.weight.dtype == torch.bfloat16 for e in model.value_embeds.values())
    opt = defs.build_optimizer(model, torch.bfloat16)
    compiled = torch.compile(model, dynamic=False)
    x = torch.randint(0, prof.vocab_size, (batch, prof.max_seq_len), device=CUDA)
    for _ in range(2):  # the second step: optimizer state exists, compile is done
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = compiled(x, x)
        loss.backward()
        opt.step()
        model.zero_grad(set_to_none=True)
    measured = torch.cuda.max_memory_allocated()
    estimate = meta_estimate("gpu", batch_size=batch)
    print(f"peak {measured / 1e9:.2f} GB, meta estimate {estimate['peak_bytes'] / 1e9:.2f} GB")
    assert estimate["training_state_bytes"] < measured < estimate["peak_bytes"]


def test_expandable_segments_set_after_importing_torch_take_effect():
    # under the referee, torch is imported (to seed it) before train.py sets PYTORCH_ALLOC_CONF: the
    # allocator must still read the variable at its first CUDA allocation, in a fresh process
    from trainer_script import TRAIN_PY

    assert 'os.environ["PYTORCH_ALLOC_CONF"] = "expandable_segments:True"' in TRAIN_PY.read_text()
    code = ("import os, torch\n"
            "torch.manual_seed(0); torch.cuda.is_available()\n"  # what the referee's bootstrap and prepare do first
            "os.environ['PYTORCH_ALLOC_CONF'] = 'expandable_segments:True'\n"
            "x = torch.empty(256 << 20, dtype=torch.uint8, device='cuda')\n"
            "segments = torch.cuda.memory._snapshot()['segments']\n"
            "print('expandable', bool(segments) and all(s.get('is_expandable') for s in segments))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "expandable True" in out.stdout, out.stdout + out.stderr
