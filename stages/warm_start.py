"""Stage `warm_start`: round 0, SFT of the base model on reference solutions (docs/algorithm.md).

Reads data/seeds/problems.parquet (train split, rows with a `solution`) and data/models/policy/base;
params group `warm_start`. Training text: ``steps.sft_prompt(question) + "\\n" + solution``.
Writes, each atomically:

- data/models/policy/warm_start: the policy (weights, tokenizer with the step markers, model card);
- data/models/warm_start_metrics.json: training metrics and seconds.

Stage `evaluate_warm_start` evaluates the policy (round 0 of the results).

With `warm_start.enabled: false` (the `paper` profile bootstraps with a strong model instead)
the folder holds only a README saying so. Multi-GPU: ``accelerate launch -m stages.warm_start``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

from pipeline import layout
from pipeline.config import CurriculumConfig, ParamsError, WarmStartConfig, group, load_params
from pipeline.io import atomic_dir, write_json
from pipeline.models.base import ModelError
from pipeline.models.train.common import DataError, is_main_process, remove_stale_temps
from pipeline.models.train.sft import train_sft
from pipeline.search import steps
from pipeline.search.rounds import bootstrap_problem_ids
from stages.common import exit_without_teardown

METRICS = layout.MODELS / "warm_start_metrics.json"
DISABLED = (
    "Warm start disabled (`warm_start.enabled: false`): no policy here; round 1 uses another.\n"
)


def reference_examples(problems_path: Path, curriculum: CurriculumConfig) -> pl.DataFrame:
    """SFT rows (problem_id, prompt, response) from the bootstrap problems' reference solutions
    (pipeline.search.rounds.bootstrap_problem_ids: train problems of the bootstrap levels)."""
    frame = pl.read_parquet(
        problems_path, columns=["problem_id", "question", "split", "solution", "meta"]
    )
    chosen = bootstrap_problem_ids(frame, curriculum)
    frame = frame.filter(pl.col("problem_id").is_in(chosen)).sort("problem_id")
    prompts = [steps.sft_prompt(question) for question in frame["question"]]
    return frame.select(
        "problem_id",
        pl.Series("prompt", prompts, dtype=pl.String),
        pl.col("solution").alias("response"),
    )


def run(params: dict[str, Any]) -> dict[str, Any]:
    config = group(params, "warm_start", WarmStartConfig)
    out_dir = layout.model_dir("warm_start")
    if not config.enabled:
        remove_stale_temps(out_dir)
        with atomic_dir(out_dir) as tmp:
            (tmp / "README.md").write_text(DISABLED)
        return {"enabled": False}
    started = time.perf_counter()
    examples = reference_examples(layout.PROBLEMS, group(params, "curriculum", CurriculumConfig))
    metrics = train_sft(layout.model_dir("base"), examples, out_dir, config, source=layout.PROBLEMS)
    return metrics | {"enabled": True, "seconds": round(time.perf_counter() - started, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    args = parser.parse_args(argv)
    try:
        metrics = run(load_params(args.params))
    except (ParamsError, ModelError, DataError) as error:
        sys.exit(f"warm_start: {error}")
    if is_main_process():
        write_json(METRICS, metrics)
        if metrics.get("enabled"):
            print(f"warm_start: {metrics['train_examples']} examples, held-out loss "
                  f"{metrics.get('heldout_loss_before')} -> {metrics.get('heldout_loss_after')} "
                  f"({metrics['seconds']} s)")  # fmt: skip


if __name__ == "__main__":
    main()
    exit_without_teardown()
