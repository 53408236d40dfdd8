"""Stage `evaluate@rN`: round N's policy and PPM on held-out problems.

Greedy pass@1, pass@N, PPM best-of-N and PPM-guided MCTS with a vote (pipeline.evaluate).
Writes data/eval/rN.json, whose `accuracy` group DVC tracks as metrics.
"""

from __future__ import annotations

import time

from pipeline import layout
from pipeline.config import SandboxConfig, group, load_params
from pipeline.engines import make_engine
from pipeline.evaluate import EvalConfig, evaluate, held_out_problems
from pipeline.io import write_json
from pipeline.rounds import mcts_with_overrides
from pipeline.sandbox import Sandbox
from stages.common import params_errors_as_one_line, round_arguments


def main() -> None:
    args = round_arguments(__doc__)
    params = load_params(args.params)
    config = group(params, "evaluate", EvalConfig)
    search = mcts_with_overrides(params, config.mcts, "evaluate.mcts")
    sandbox_config = group(params, "sandbox", SandboxConfig)
    engine_options = dict(params.get("engine") or {})
    engine_kind = engine_options.pop("kind", "transformers")
    started = time.perf_counter()

    from pipeline.ppm import PPM

    problems, levels = held_out_problems(config)
    engine = make_engine(engine_kind, str(layout.model_dir(args.round)), **engine_options)
    scorer = PPM.load(layout.ppm_dir(args.round))
    with Sandbox(**vars(sandbox_config)) as sandbox:
        metrics = evaluate(engine, sandbox, problems, search, config, scorer=scorer, levels=levels)
    engine.close()
    metrics |= {"round": layout.round_number(args.round), "seconds": round(time.perf_counter() - started, 2)}
    write_json(layout.DATA / "eval" / f"{args.round}.json", metrics)
    print(f"{args.round}: " + ", ".join(f"{key} {value:.3f}" for key, value in metrics["accuracy"].items()))


if __name__ == "__main__":
    with params_errors_as_one_line():
        main()
