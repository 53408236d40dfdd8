"""Evaluation in shards on an executor (pipeline.executors), the same on one machine or on Ray,
and its set-up from params, written once for the stage `evaluate@rN`, the warm start's round-0
report and `rstar eval`.

Held-out problems are cut into shards of ``evaluate.shard_size``; shard i samples and searches
with ``shard_seed(evaluate.seed, i)``, each shard returns its per-problem outcomes, and the
driver merges them in shard order into the metrics of
:func:`pipeline.evaluation.evaluate.evaluate`. So the metrics depend on the seed and the shard
size, never on the executor or on finishing order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.config import EvalConfig, MCTSConfig, ParamsError, RayConfig, group
from pipeline.evaluation.evaluate import held_out_problems, problem_outcomes, summarise
from pipeline.executors import Executor, WorkerSpec, make_executor
from pipeline.search.mcts import Problem
from pipeline.search.rollout import plan_shards
from pipeline.search.rounds import mcts_with_overrides


@dataclass(frozen=True)
class EvalJob:
    """One shard of held-out problems on a worker (engine, sandbox, PPM): per-problem outcomes.
    Picklable, so the same job runs in the stage or on a Ray actor."""

    search: MCTSConfig
    config: EvalConfig

    def __call__(self, worker, problems: Sequence[Problem], seed: int, progress=None) -> list[dict]:
        return problem_outcomes(
            worker.engine, worker.sandbox, problems, self.search, self.config, worker.scorer, seed
        )


def evaluate_sharded(
    executor: Executor, problems: Sequence[Problem], search: MCTSConfig, config: EvalConfig,
    levels: dict[str, str] | None = None, on_shard: Callable[[int], None] | None = None,
) -> dict:  # fmt: skip
    """:func:`evaluate` in shards of ``config.shard_size`` problems on an executor; shard i
    searches with seed ``shard_seed(config.seed, i)``, so every executor gives the same metrics."""
    shards = plan_shards(problems, config.shard_size, config.seed, key="evaluate.shard_size")
    results: dict[int, list[dict]] = {}
    for shard, outcomes in executor.run(EvalJob(search, config), shards):
        results[shard.index] = outcomes
        if on_shard is not None:
            on_shard(len(shard.problems))
    ordered = [outcome for index in sorted(results) for outcome in results[index]]
    return summarise(ordered, config, levels or {})


def round_eval_config(params: dict[str, Any], round_key: str) -> EvalConfig:
    """The `evaluate` group with round ``round_key``'s own overrides (`evaluate.rounds.rN`)."""
    config = group(params, "evaluate", EvalConfig)
    overrides = config.rounds.get(round_key, {})
    where = f"evaluate.rounds.{round_key}"
    if not isinstance(overrides, dict):
        raise ParamsError(f"{where} must be a mapping of evaluate keys")
    if "rounds" in overrides:
        raise ParamsError(f"{where}: unknown key(s) rounds")
    group({"evaluate": overrides}, "evaluate", EvalConfig, where=where)  # a bad key names itself
    return replace(config, **overrides)


def run_evaluation(
    params: dict[str, Any], config: EvalConfig, policy: Path, ppm: Path | None = None,
    label: str = "evaluate",
) -> dict:  # fmt: skip
    """Evaluate ``policy`` (and ``ppm``) as ``config`` says, with the `mcts` group and the
    evaluation's own overrides of it, on the executor it names. A bad cluster address or problem
    file fails here in one line, before any engine starts. A PPM that no method asks for (greedy
    only) is not loaded."""
    search = mcts_with_overrides(params, config.mcts, "evaluate.mcts")
    executor = make_executor(
        config.executor,
        WorkerSpec.from_params(params, policy, ppm if config.uses_ppm else None),
        group(params, "ray", RayConfig),
    )
    problems, levels = held_out_problems(config)
    with executor:
        with tqdm(total=len(problems), desc=label, unit="problem") as bar:
            return evaluate_sharded(executor, problems, search, config, levels, bar.update)
