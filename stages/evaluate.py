"""Stage `evaluate@rN`: round N's policy and PPM on held-out problems.

Greedy, pass@N, maj@N, PPM best-of-N and PPM-guided MCTS with a vote
(pipeline.evaluation.evaluate), each with its 95% interval, in shards on the configured executor
(pipeline.evaluation.sharded). The `evaluate` group applies, with the round's own overrides
(`evaluate.rounds.rN`). A killed run resumes at the first shard not yet finished (kept in
data/eval/.rN.shards/ until the end). Writes data/eval/rN.json, with which problems each method solved (`rstar results` compares rounds on
them); the round's summary stage turns its accuracies into DVC metrics.
"""

from __future__ import annotations

import time

from pipeline import layout
from pipeline.config import load_params
from pipeline.evaluation.sharded import round_eval_config, run_evaluation
from pipeline.executors import ExecutorError
from pipeline.io import write_json
from pipeline.models.base import ModelError
from pipeline.problems.sources import ProblemSourceError
from stages.common import errors_as_one_line, exit_without_teardown, round_arguments


def main() -> None:
    args = round_arguments(__doc__)
    params = load_params(args.params)
    config = round_eval_config(params, args.round)
    started = time.perf_counter()
    metrics = run_evaluation(
        params, config, layout.model_dir(args.round), layout.ppm_dir(args.round),
        label=f"evaluate {args.round}", resume_dir=layout.eval_shards(args.round),
    )  # fmt: skip
    metrics |= {
        "round": layout.round_number(args.round),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(layout.DATA / "eval" / f"{args.round}.json", metrics)
    print(
        f"{args.round}: "
        + ", ".join(f"{key} {value:.3f}" for key, value in metrics["accuracy"].items())
    )


if __name__ == "__main__":
    with errors_as_one_line(ExecutorError, ProblemSourceError, ModelError):
        main()
    exit_without_teardown()
