"""The fixed constants of each profile, and which profile and source are active.

`gpu` is the reference's setting; `cpu` is small enough that one training run finishes well
under a minute on 2 cores and still clearly learns. Agents never change these: they are the
rules of the game. Selected by AUTORESEARCH_PROFILE (default `gpu` when CUDA is present, else
`cpu`); the data source by AUTORESEARCH_SOURCE (`climbmix`, `stdlib` or `local:PATH`; default
`climbmix` on the gpu profile, else `stdlib`). Artifacts live under AUTORESEARCH_HOME
(default ~/.cache/autoresearch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class Profile:
    name: str
    max_seq_len: int  # context length of training and evaluation
    time_budget: float  # seconds of training, counted after warm-up / compile
    eval_tokens: int  # tokens evaluated by evaluate_bpb
    vocab_size: int  # BPE vocabulary size, special tokens included
    default_source: str


PROFILES: dict[str, Profile] = {
    "gpu": Profile("gpu", max_seq_len=2048, time_budget=300.0, eval_tokens=40 * 2**19, vocab_size=8192, default_source="climbmix"),
    "cpu": Profile("cpu", max_seq_len=256, time_budget=20.0, eval_tokens=2**16, vocab_size=2048, default_source="stdlib"),
}


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch, broken driver: a CPU machine for our purposes
        return False


def active_profile(env: Mapping[str, str] | None = None) -> Profile:
    env = os.environ if env is None else env
    name = env.get("AUTORESEARCH_PROFILE") or ("gpu" if _cuda_available() else "cpu")
    if name not in PROFILES:
        from swarm.errors import ConfigError

        raise ConfigError(f"AUTORESEARCH_PROFILE={name!r} is not one of {sorted(PROFILES)}")
    return PROFILES[name]


def active_source(env: Mapping[str, str] | None = None, profile: Profile | None = None) -> str:
    env = os.environ if env is None else env
    profile = profile or active_profile(env)
    return env.get("AUTORESEARCH_SOURCE") or profile.default_source


def autoresearch_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("AUTORESEARCH_HOME") or Path.home() / ".cache" / "autoresearch").expanduser()
