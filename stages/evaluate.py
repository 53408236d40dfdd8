"""Stage `evaluate@rN`: round N's policy and PPM on held-out problems.

Greedy, pass@N, maj@N, PPM best-of-N and PPM-guided MCTS with a vote (pipeline.evaluate), each
with its 95% interval, in shards on the configured executor (pipeline.sharded_eval). Writes
data/eval/rN.json; the round's summary stage turns its accuracies into DVC metrics.
"""

from __future__ import annotations

import time

from tqdm import tqdm

from pipeline import layout
from pipeline.config import SandboxConfig, group, load_params
from pipeline.evaluate import EvalConfig, held_out_problems
from pipeline.executors import ExecutorError, RayConfig, WorkerSpec, make_executor
from pipeline.io import write_json
from pipeline.problems import ProblemSourceError
from pipeline.rounds import mcts_with_overrides
from pipeline.sharded_eval import evaluate_sharded
from stages.common import errors_as_one_line, round_arguments


def main() -> None:
    args = round_arguments(__doc__)
    params = load_params(args.params)
    config = group(params, "evaluate", EvalConfig)
    search = mcts_with_overrides(params, config.mcts, "evaluate.mcts")
    sandbox_config = group(params, "sandbox", SandboxConfig)
    engine_options = dict(params.get("engine") or {})
    engine_kind = engine_options.pop("kind", "transformers")
    started = time.perf_counter()
    spec = WorkerSpec(engine_kind, str(layout.model_dir(args.round).resolve()), engine_options,
                      vars(sandbox_config), str(layout.ppm_dir(args.round).resolve()),
                      dict(params.get("ppm_scorer") or {}))  # fmt: skip
    # Checks the cluster address (ray) before any work, so a bad address costs nothing; the
    # engines start only when the executor is entered.
    executor = make_executor(config.executor, spec, group(params, "ray", RayConfig))
    problems, levels = held_out_problems(config)  # a bad file: one line, before any engine
    with executor:
        bar = tqdm(total=len(problems), desc=f"evaluate {args.round}", unit="problem")
        metrics = evaluate_sharded(executor, problems, search, config, levels, on_shard=bar.update)
        bar.close()
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
    with errors_as_one_line(ExecutorError, ProblemSourceError):
        main()
