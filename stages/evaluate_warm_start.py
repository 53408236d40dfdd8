"""Stage `evaluate_warm_start`: round 0's held-out evaluation, the warm-started policy alone.

The same evaluation as `evaluate@rN` (greedy, and with `warm_start.eval_samples` > 0 pass@N,
maj@N and sampled pass@1; no PPM exists yet), on `warm_start.eval_problems` problems of the
`evaluate` group's source and split, so that a validation run reports round 0 on validation
too. A stage of its own so that switching the split re-runs this evaluation, not the training;
resumable as `evaluate@rN` is.
Writes data/eval/r0.json (as data/eval/rN.json; only `round` and `problems: 0` when the warm
start is disabled or `eval_problems` is 0) and data/metrics/r0.json, round 0's row of
`dvc metrics show` (its `seconds` add the training's).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from typing import Any

from pipeline import layout
from pipeline.config import EvalConfig, ParamsError, WarmStartConfig, group, load_params
from pipeline.evaluation.evaluate import interval_columns
from pipeline.evaluation.sharded import run_evaluation
from pipeline.executors import ExecutorError
from pipeline.io import write_json
from pipeline.models.base import ModelError
from pipeline.problems.sources import ProblemSourceError
from stages.common import errors_as_one_line, exit_without_teardown

TRAINING = layout.MODELS / "warm_start_metrics.json"
EVALUATION = layout.DATA / "eval" / "r0.json"
SUMMARY = layout.DATA / "metrics" / "r0.json"


def warm_start_eval_config(params: dict[str, Any]) -> EvalConfig:
    """The `evaluate` group, sized by `warm_start.eval_problems` and `.eval_samples`, without
    the methods that need a PPM. Its per-round overrides (`evaluate.rounds`) are the rounds'."""
    warm_start = group(params, "warm_start", WarmStartConfig)
    return replace(
        group(params, "evaluate", EvalConfig),
        problems=warm_start.eval_problems,
        samples=warm_start.eval_samples,
        mcts_rollouts=0,
        mcts_runs=0,
        rounds={},
    )


def read_training_metrics() -> dict[str, Any]:
    if not TRAINING.is_file():
        raise ParamsError(f"{TRAINING}: no warm start metrics (run `dvc repro warm_start` first)")
    return json.loads(TRAINING.read_text())


def evaluate_warm_start(
    params: dict[str, Any], config: EvalConfig, training: dict[str, Any]
) -> dict[str, Any]:
    """Round 0's evaluation, or only `problems: 0` when there is nothing to evaluate."""
    if not training.get("enabled") or config.problems == 0:
        return {"round": 0, "problems": 0}
    started = time.perf_counter()
    metrics = run_evaluation(
        params, config, layout.model_dir("warm_start"), label="evaluate r0",
        resume_dir=layout.eval_shards("r0"),
    )  # fmt: skip
    return metrics | {"round": 0, "seconds": round(time.perf_counter() - started, 2)}


def warm_start_summary(training: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """Round 0's row of `dvc metrics show`: held-out accuracy with 95% intervals, and seconds."""
    seconds = training.get("seconds", 0.0) + evaluation.get("seconds", 0.0)
    return {
        "round": 0,
        "enabled": training.get("enabled", False),
        "eval_problems": evaluation.get("problems", 0),
        **interval_columns(evaluation),
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    config = warm_start_eval_config(params)  # a wrong parameter fails before anything is read
    training = read_training_metrics()
    evaluation = evaluate_warm_start(params, config, training)
    write_json(EVALUATION, evaluation)
    write_json(SUMMARY, warm_start_summary(training, evaluation))
    if evaluation.get("accuracy"):
        print(
            "r0: "
            + ", ".join(f"{key} {value:.3f}" for key, value in evaluation["accuracy"].items())
        )


if __name__ == "__main__":
    with errors_as_one_line(ExecutorError, ProblemSourceError, ModelError):
        main()
    exit_without_teardown()
