"""Stage `train_ppm@rN`: the process preference model of round N (docs/algorithm.md, 5b).

Reads data/rounds/rN/pairs.parquet and round N's SFT policy data/models/policy/rN (the PPM
starts from it, never from the previous PPM). Params group `train_ppm`. Writes, each atomically:

- data/models/ppm/rN: the PPM folder that ``pipeline.ppm.PPM.load`` reads (an empty pairs file
  gives an untrained PPM, and the metrics say so, so a tiny round does not break the DAG);
- data/rounds/rN/train_ppm_metrics.json: held-out pair accuracy and loss before and after.

Multi-GPU: ``accelerate launch -m stages.train_ppm --round rN``.
"""

from __future__ import annotations

import sys
from typing import Any

from pipeline import layout
from pipeline.config import ParamsError, TrainConfig, group, load_params
from pipeline.io import write_json
from pipeline.models.base import ModelError
from pipeline.models.train.common import DataError, is_main_process
from pipeline.models.train.ppm import train_ppm
from stages.common import exit_without_teardown, round_arguments


def run(params: dict[str, Any], round_key: str) -> dict[str, Any]:
    config = group(params, "train_ppm", TrainConfig)
    metrics = train_ppm(
        layout.model_dir(round_key),
        layout.round_dir(round_key) / "pairs.parquet",
        layout.ppm_dir(round_key),
        config,
    )
    return metrics | {"round": layout.round_number(round_key)}


def main(argv: list[str] | None = None) -> None:
    args = round_arguments(__doc__, argv)
    try:
        metrics = run(load_params(args.params), args.round)
    except (ParamsError, ModelError, DataError) as error:
        sys.exit(f"train_ppm: {error}")
    if is_main_process():
        write_json(layout.round_dir(args.round) / "train_ppm_metrics.json", metrics)
        print(f"train_ppm {args.round}: {metrics['train_pairs']} train pairs, held-out accuracy "
              f"{metrics.get('heldout_accuracy_before')} -> {metrics.get('heldout_accuracy_after')} "
              f"({metrics['seconds']} s)")  # fmt: skip


if __name__ == "__main__":
    main()
    exit_without_teardown()
