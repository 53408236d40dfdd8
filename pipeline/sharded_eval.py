"""Evaluation in shards on an executor (pipeline.executors), the same on one machine or on Ray.

Held-out problems are cut into shards of ``evaluate.shard_size``; shard i samples and searches
with ``shard_seed(evaluate.seed, i)``, each shard returns its per-problem outcomes, and the
driver merges them in shard order into the metrics of :func:`pipeline.evaluate.evaluate`. So the
metrics depend on the seed and the shard size, never on the executor or on finishing order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.config import MCTSConfig
from pipeline.evaluate import EvalConfig, problem_outcomes, summarise
from pipeline.executors import Executor
from pipeline.mcts import Problem
from pipeline.rollout import plan_shards


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
