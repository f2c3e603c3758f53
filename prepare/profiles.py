"""The fixed constants of each profile, and which profile and source are active.

`gpu` is the reference's setting (sequence length, budget, evaluation tokens, vocabulary, and
its packing of documents into rows); `cpu` is small enough that one training run finishes well
under a minute on 2 cores and still clearly learns. Agents never change these: they are the
rules of the game. Selected by AUTORESEARCH_PROFILE (default `gpu` when CUDA is present, else
`cpu`); the data source by AUTORESEARCH_SOURCE (`climbmix`, `stdlib` or `local:PATH`; default
`climbmix` on the gpu profile, else `stdlib`). Artifacts live under AUTORESEARCH_HOME
(default ~/.cache/autoresearch).

The referee's limits are part of the profile too: the trainer must hand its model over within
time_budget + startup_allowance seconds of being started, and answer all evaluation batches
within eval_allowance seconds. Tests and quick demos may shorten them with AUTORESEARCH_TIME_BUDGET,
AUTORESEARCH_STARTUP_ALLOWANCE and AUTORESEARCH_EVAL_ALLOWANCE (seconds): the referee reads them in
its own process, which the trainer's code never runs in, so a trainer cannot change its limits.
Results are only comparable at equal budgets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
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
    # referee: seconds the trainer may spend, beyond time_budget, from its start until it hands its
    # model over (interpreter and torch import, data loader start, untimed warm-up / compile steps)
    startup_allowance: float = 60.0
    eval_allowance: float = 60.0  # referee: seconds the trainer may take to answer all evaluation batches
    # packing (prepare/dataloader.py): when no document fits a row's rest, the shortest one is cropped
    # and its remainder dropped, as the reference does; True: the oldest is cropped and its remainder
    # goes back as a document of its own (rows shorter than most documents, e.g. cpu with stdlib)
    keep_cropped_rest: bool = False


# Allowances. gpu: interpreter + torch import, data loader start and torch.compile with 10 untimed
# steps take well under 120 s, and so does evaluation (~21M tokens forward, recompiled for
# inference). cpu: measured on a shared 2-core machine, start-up took 7 s alone and up to ~21 s
# with two runs at once; evaluation 14 s alone and over 30 s with two at once under load. The cpu
# limits are loose because timing on a busy 2-core machine is; the gpu limits are the tight ones.
PROFILES: dict[str, Profile] = {
    "gpu": Profile("gpu", max_seq_len=2048, time_budget=300.0, eval_tokens=40 * 2**19, vocab_size=8192, default_source="climbmix",
                   startup_allowance=120.0, eval_allowance=120.0),
    "cpu": Profile("cpu", max_seq_len=256, time_budget=20.0, eval_tokens=2**16, vocab_size=2048, default_source="stdlib",
                   startup_allowance=60.0, eval_allowance=120.0, keep_cropped_rest=True),
}
OVERRIDES = {  # env variable -> Profile field (seconds; tests and quick demos)
    "AUTORESEARCH_TIME_BUDGET": "time_budget",
    "AUTORESEARCH_STARTUP_ALLOWANCE": "startup_allowance",
    "AUTORESEARCH_EVAL_ALLOWANCE": "eval_allowance",
}


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch, broken driver: a CPU machine for our purposes
        return False


def active_profile(env: Mapping[str, str] | None = None) -> Profile:
    """The profile named by AUTORESEARCH_PROFILE, with the time overrides of OVERRIDES applied."""
    env = os.environ if env is None else env
    name = env.get("AUTORESEARCH_PROFILE") or ("gpu" if _cuda_available() else "cpu")
    if name not in PROFILES:
        from swarm.errors import ConfigError

        raise ConfigError(f"AUTORESEARCH_PROFILE={name!r} is not one of {sorted(PROFILES)}")
    changes = {}
    for var, field_name in OVERRIDES.items():
        raw = env.get(var)
        if raw:
            try:
                value = float(raw)
            except ValueError:
                value = -1.0
            if not 0 < value < float("inf"):
                from swarm.errors import ConfigError

                raise ConfigError(f"{var}={raw!r} is not a positive number of seconds")
            changes[field_name] = value
    return replace(PROFILES[name], **changes) if changes else PROFILES[name]


def active_source(env: Mapping[str, str] | None = None, profile: Profile | None = None) -> str:
    env = os.environ if env is None else env
    profile = profile or active_profile(env)
    return env.get("AUTORESEARCH_SOURCE") or profile.default_source


def autoresearch_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("AUTORESEARCH_HOME") or Path.home() / ".cache" / "autoresearch").expanduser()
