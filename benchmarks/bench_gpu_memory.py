"""Benchmark: the gpu-profile model of trainer/train.py on the meta device, without a GPU.

Builds the model the script builds on the gpu profile (its constants as they are in train.py),
with nothing allocated, and prints: the parameter count (and how many are embeddings), the FLOPs
per token (forward + backward, the MFU numerator), the activation memory of one micro-batch
(the tensors autograd saves in one forward, at DEVICE_BATCH_SIZE x MAX_SEQ_LEN, bf16 as under
CUDA autocast, attention and RMSNorm saving what the GPU kernels save), the training state
(weights, gradients, AdamW and Muon state), the estimated peak and whether it fits 80 GB.
The estimate follows the eager graph and errs high: torch.compile fuses element-wise chains and
saves less (the reference measured ~45 GB peak with this batch on an H100). See
tests/trainer_script.py (meta_estimate) for the details.

    python benchmarks/bench_gpu_memory.py [--batch B] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.trainer_script import meta_estimate  # noqa: E402

GPU_BYTES = 80e9  # an 80 GB GPU (H100 / A100 80GB)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=None, help="rows per micro-batch (default: train.py's DEVICE_BATCH_SIZE)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args()
    e = meta_estimate("gpu", batch_size=args.batch)
    fits = e["peak_bytes"] < GPU_BYTES
    if args.json:
        print(json.dumps({**e, "fits_80gb": fits}))
        return 0
    gb = 1e9
    print(f"gpu profile on the meta device: micro-batch {e['batch_size']} x {e['seq_len']} tokens, vocab {e['vocab_size']}")
    print(f"parameters:        {e['num_params']:,} ({e['num_params'] / 1e6:.1f}M; {e['embedding_params'] / 1e6:.1f}M in embeddings)")
    print(f"FLOPs per token:   {e['flops_per_token']:.4g} (forward + backward)")
    print(f"activations:       {e['activation_bytes'] / gb:.1f} GB (saved tensors of one micro-batch)")
    print(f"training state:    {e['training_state_bytes'] / gb:.2f} GB (weights, gradients, optimizer state)")
    print(f"estimated peak:    {e['peak_bytes'] / gb:.1f} GB (+ the float32 logits' gradient)")
    print(f"fits 80 GB:        {'yes' if fits else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
