"""Evaluation in shards on an executor (pipeline.executors), the same on one machine or on Ray,
and its set-up from params, written once for the stage `evaluate@rN`, the warm start's round-0
report and `rstar eval`.

Held-out problems are cut into shards of ``evaluate.shard_size``; shard i samples and searches
with ``shard_seed(evaluate.seed, i)``, each shard returns its per-problem outcomes, and the
driver merges them in shard order into the metrics of
:func:`pipeline.evaluation.evaluate.evaluate`. So the metrics depend on the seed and the shard
size, never on the executor or on finishing order, and a killed evaluation resumes: given a
folder, each shard's outcomes are written there as it finishes, under a fingerprint of
everything that shapes them, and a rerun evaluates only the shards still missing.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.config import EvalConfig, MCTSConfig, ParamsError, RayConfig, group
from pipeline.evaluation.evaluate import (
    held_out_problems,
    problem_outcomes,
    seen_in_training,
    summarise,
)
from pipeline.executors import Executor, WorkerSpec, make_executor
from pipeline.ids import fingerprint
from pipeline.io import atomic_file
from pipeline.models.base import folder_signature
from pipeline.models.engines.vllm_engine import resolve_dtype
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
    shard_dir: Path | None = None,
) -> dict:  # fmt: skip
    """:func:`evaluate` in shards of ``config.shard_size`` problems on an executor; shard i
    searches with seed ``shard_seed(config.seed, i)``, so every executor gives the same metrics.
    With ``shard_dir``, shards found there are not evaluated again and new ones are written
    there as they finish (the caller names the folder by what shaped them)."""
    shards = plan_shards(problems, config.shard_size, config.seed, key="evaluate.shard_size")
    results: dict[int, list[dict]] = {}
    for shard in shards:
        if shard_dir is not None and _shard_file(shard_dir, shard.index).is_file():
            results[shard.index] = json.loads(_shard_file(shard_dir, shard.index).read_text())
            if on_shard is not None:
                on_shard(len(shard.problems))
    todo = [shard for shard in shards if shard.index not in results]
    for shard, outcomes in executor.run(EvalJob(search, config), todo):
        results[shard.index] = outcomes
        if shard_dir is not None:
            with atomic_file(_shard_file(shard_dir, shard.index)) as temporary:
                temporary.write_text(json.dumps(outcomes))
        if on_shard is not None:
            on_shard(len(shard.problems))
    ordered = [outcome for index in sorted(results) for outcome in results[index]]
    return summarise(ordered, config, levels or {})


def _shard_file(shard_dir: Path, index: int) -> Path:
    return shard_dir / f"shard-{index:05d}.json"


def resumable_shard_dir(
    folder: Path, config: EvalConfig, search: MCTSConfig, spec: WorkerSpec,
    problems: Sequence[Problem],
) -> Path:  # fmt: skip
    """The folder under ``folder`` for the shards of this exact evaluation: named by a
    fingerprint of the methods, the search, the engine, the problems and the models' contents.
    Folders of any other evaluation there are stale, and removed."""
    key = fingerprint({
        "config": vars(config), "search": vars(search), "problems": [vars(p) for p in problems],
        "engine": [spec.engine_kind, spec.engine_options], "auto_dtype": resolve_dtype("auto"),
        "sandbox": spec.sandbox, "ppm_scorer": spec.ppm_scorer,
        "policy": folder_signature(Path(spec.model_path)),
        "ppm": folder_signature(Path(spec.ppm_path)) if spec.ppm_path else None,
    })  # fmt: skip
    if folder.is_dir():
        for stale in folder.iterdir():
            if stale.is_dir() and stale.name != key:
                shutil.rmtree(stale)
    return folder / key


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
    label: str = "evaluate", resume_dir: Path | None = None,
) -> dict:  # fmt: skip
    """Evaluate ``policy`` (and ``ppm``) as ``config`` says, with the `mcts` group and the
    evaluation's own overrides of it, on the executor it names. A bad cluster address or problem
    file fails here in one line, before any engine starts. A PPM that no method asks for (greedy
    only) is not loaded. With ``resume_dir``, finished shards are kept there until the metrics
    are computed, so a killed run resumes where it stopped."""
    search = mcts_with_overrides(params, config.mcts, "evaluate.mcts")
    spec = WorkerSpec.from_params(
        params, policy, ppm if config.uses_ppm else None, config.engine_group(params)
    )
    executor = make_executor(config.executor, spec, group(params, "ray", RayConfig))
    problems, levels = held_out_problems(config)
    seen = seen_in_training(problems, config.source)
    if seen:
        print(f"warning: {len(seen)} of the {len(problems)} problems of {config.source} are "
              f"training seeds too (same question): their results are not held-out; "
              f"the metrics list them under seen_in_training", file=sys.stderr)  # fmt: skip
    shard_dir = None
    if resume_dir is not None:
        shard_dir = resumable_shard_dir(resume_dir, config, search, spec, problems)
        shard_dir.mkdir(parents=True, exist_ok=True)
    with executor:
        with tqdm(total=len(problems), desc=label, unit="problem") as bar:
            metrics = evaluate_sharded(
                executor, problems, search, config, levels, bar.update, shard_dir
            )
    if resume_dir is not None:
        shutil.rmtree(resume_dir)  # done: the metrics hold every outcome
    return metrics | {"seen_in_training": seen}
