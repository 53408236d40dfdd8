"""Where each stage's files live (docs/data-contracts.md: rounds under data/rounds/rN).

Policies and PPMs sit in sibling folders named by the round that trained them, so a stage can
name exactly the model it reads: data/models/policy/{base,warm_start,rN} and
data/models/ppm/{none,rN}. `none` is the explicit "no PPM" of terminal-guided rounds, and
data/rounds/r0 holds the state before round 1 (nothing solved yet).
"""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
SEEDS = DATA / "seeds"
PROBLEMS = SEEDS / "problems.parquet"
MODELS = DATA / "models"
NO_PPM = "none"


def round_dir(round_key: str) -> Path:
    return DATA / "rounds" / round_key


def round_number(round_key: str) -> int:
    """`r3` -> 3; a clear error for anything else."""
    if not (round_key.startswith("r") and round_key[1:].isdigit()):
        raise ValueError(f"round keys look like r1, r2, ...; got {round_key!r}")
    return int(round_key[1:])


def model_dir(name: str) -> Path:
    """A policy: `base`, `warm_start`, or `rN` (round N's SFT policy)."""
    if name not in ("base", "warm_start"):
        round_number(name)
    return MODELS / "policy" / name


def ppm_dir(name: str) -> Path:
    """A PPM: `rN` (round N's PPM) or `none`."""
    if name != NO_PPM:
        round_number(name)
    return MODELS / "ppm" / name


def eval_shards(round_key: str) -> Path:
    """A running evaluation's finished shards (hidden from DVC and git; removed when it ends)."""
    return DATA / "eval" / f".{round_key}.shards"
