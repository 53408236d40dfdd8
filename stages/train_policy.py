"""Stage `train_policy@rN`: SFT of round N's policy on the round's SFT set (docs/algorithm.md, 4).

Reads data/rounds/rN/sft.parquet and the starting policy: the policy that searched round N
(`rounds.rN.policy`: the warm-started or base model in round 1, round N-1's policy after), or
data/models/policy/base with `train_policy.from_base: true`. Params group `train_policy`.
Writes, each atomically:

- data/models/policy/rN: the new policy (an empty SFT set copies the starting model unchanged,
  and the metrics say so, so a round that solved nothing still feeds the next one);
- data/rounds/rN/train_policy_metrics.json.

Multi-GPU: ``accelerate launch -m stages.train_policy --round rN``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import polars as pl

from pipeline import layout
from pipeline.config import ParamsError, TrainPolicyConfig, group, load_params
from pipeline.io import write_json
from pipeline.models.base import ModelError
from pipeline.models.train.common import DataError, is_main_process
from pipeline.models.train.sft import train_sft
from stages.common import exit_without_teardown, round_arguments


def start_policy(params: dict[str, Any], round_key: str, from_base: bool) -> Path:
    """The folder round ``round_key``'s SFT starts from (see the module docstring)."""
    if from_base:
        return layout.model_dir("base")
    entry = (params.get("rounds") or {}).get(round_key) or {}
    number = layout.round_number(round_key)
    default = "base" if number == 1 else f"r{number - 1}"
    return layout.model_dir(str(entry.get("policy") or default))


def run(params: dict[str, Any], round_key: str) -> dict[str, Any]:
    config = group(params, "train_policy", TrainPolicyConfig)
    sft_path = layout.round_dir(round_key) / "sft.parquet"
    if not sft_path.is_file():
        raise DataError(f"{sft_path}: no such SFT set (run stage sft@{round_key} first)")
    start = start_policy(params, round_key, config.from_base)
    examples = pl.read_parquet(sft_path)
    metrics = train_sft(start, examples, layout.model_dir(round_key), config, source=sft_path)
    return metrics | {"round": layout.round_number(round_key)}


def main(argv: list[str] | None = None) -> None:
    args = round_arguments(__doc__, argv)
    try:
        metrics = run(load_params(args.params), args.round)
    except (ParamsError, ModelError, DataError) as error:
        sys.exit(f"train_policy: {error}")
    if is_main_process():
        write_json(layout.round_dir(args.round) / "train_policy_metrics.json", metrics)
        print(f"train_policy {args.round}: {metrics.get('train_examples', 0)} examples from "
              f"{metrics['start_model']}, held-out loss {metrics.get('heldout_loss_before')} -> "
              f"{metrics.get('heldout_loss_after')} ({metrics['seconds']} s)")  # fmt: skip


if __name__ == "__main__":
    main()
    exit_without_teardown()
