"""trainer/train.py, tested the only way a script that trains at import can be: by running it.

Two real runs on the cpu profile with the stdlib source (prepared on first use, no network):
a normal run whose summary must beat a unigram model of the same validation batches, and a run
of a copy of the script with an absurd learning rate that must fail fast with a clear message.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swarm.summary import parse_summary

REPO = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                 "total_tokens_M", "num_steps", "num_params_M", "depth")

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(AUTORESEARCH_PROFILE="cpu", AUTORESEARCH_SOURCE="stdlib", PYTHONUNBUFFERED="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@pytest.fixture(scope="module")
def prepared():
    import prepare
    from prepare.profiles import PROFILES

    prepare.ensure_prepared(source="stdlib", profile=PROFILES["cpu"], progress=False)


def unigram_bpb() -> float:
    """Bits per byte of a unigram model (add-one smoothed, counted on train) on the very
    validation batches evaluate_bpb uses; computed here, independently of the trainer."""
    import torch

    from prepare.dataloader import make_dataloader
    from prepare.profiles import PROFILES
    from prepare.tokenizer import Tokenizer

    prof = PROFILES["cpu"]
    tok = Tokenizer.load("stdlib", prof)
    token_bytes = tok.get_token_bytes("cpu").long()
    B, T = 16, prof.max_seq_len

    counts = torch.ones(tok.get_vocab_size(), dtype=torch.float64)
    train = make_dataloader(tok, B, T, "train", "cpu")
    for _ in range(64):  # 256k training tokens
        x, _, _ = next(train)
        counts += torch.bincount(x.reshape(-1), minlength=counts.numel()).double()
    train.close()
    log2p = (counts / counts.sum()).log2()

    bits, n_bytes = 0.0, 0
    val = make_dataloader(tok, B, T, "val", "cpu")
    for _ in range(max(1, prof.eval_tokens // (B * T))):
        _, y, _ = next(val)
        yb = token_bytes[y.reshape(-1)]
        real = yb > 0
        bits -= log2p[y.reshape(-1)][real].sum().item()
        n_bytes += int(yb.sum())
    val.close()
    return bits / n_bytes


def run_trainer(root: Path, timeout: float = 240, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer.train"], cwd=root, env={**_env(), **env},
                          capture_output=True, text=True, timeout=timeout)


def test_cpu_training_run_learns_and_prints_the_summary(prepared):
    proc = run_trainer(REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = parse_summary(proc.stdout)
    missing = [k for k in CONTRACT_KEYS if k not in summary]
    assert not missing, f"summary lacks {missing}:\n{proc.stdout[-2000:]}"
    assert all(isinstance(summary[k], float) and math.isfinite(summary[k]) for k in CONTRACT_KEYS), summary
    assert summary["num_steps"] > 0
    assert summary["training_seconds"] >= 20.0  # the cpu profile's TIME_BUDGET, fully used
    assert summary["mfu_percent"] == 0.0  # no GPU peak to compare against on CPU
    assert summary["attention"] == "sdpa"  # which attention ran: PyTorch's SDPA on the CPU
    baseline = unigram_bpb()
    assert 0 < summary["val_bpb"] < baseline, f"val_bpb {summary['val_bpb']} vs unigram {baseline:.4f}"


def test_diverging_run_fails_fast_with_a_clear_message(prepared, tmp_path):
    for package in ("prepare", "trainer", "swarm"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    script = tmp_path / "trainer" / "train.py"
    text = script.read_text()
    # an absurd lr for every group, set after the profile block so that it always applies
    patched, n = re.subn(r"^(# -+\n# Model\n)", "MATRIX_LR = 1e4\nEMBEDDING_LR = 1e4\nUNEMBEDDING_LR = 1e4\n\\1",
                         text, count=1, flags=re.M)
    assert n == 1, "could not find the Model section header in train.py"
    script.write_text(patched)
    # how many steps it takes to blow up varies (the soft cap bounds the loss, so it often ends in a NaN
    # after 10-25 steps): a long budget, so that a slow, busy machine still gets there; it stops at once
    proc = run_trainer(tmp_path, timeout=400, AUTORESEARCH_TIME_BUDGET="240")
    assert proc.returncode != 0
    assert "FAIL: training diverged" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "---\nval_bpb" not in proc.stdout  # no summary for a failed run
