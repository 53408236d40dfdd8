"""Rollouts in shards: problems are searched a shard at a time, each shard written as it finishes.

A killed run resumes at the first missing shard. Shards live under a folder named by a
fingerprint of everything that shapes the result (params, model and input hashes), so changed
inputs never mix with stale shards. Each shard's generation seed depends only on the base seed
and the shard index, so a resumed run writes the same nodes as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipeline.config import MCTSConfig
from pipeline.executors import Executor, LocalExecutor, Shard
from pipeline.io import write_parquet
from pipeline.search.mcts import MCTS, Problem, SearchStats, tree_rows
from pipeline.search.tree import NODES_SCHEMA


def shard_seed(base_seed: int, shard_index: int) -> int:
    return int(hashlib.sha1(f"{base_seed}:{shard_index}".encode()).hexdigest()[:8], 16)


@dataclass
class RolloutReport:
    problems: int = 0
    solved: int = 0
    nodes: int = 0
    tokens: int = 0
    code_runs: int = 0
    code_errors: int = 0
    generation_calls: int = 0
    shards: int = 0
    shards_resumed: int = 0
    seconds: float = 0.0
    per_shard: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {key: value for key, value in vars(self).items() if key != "per_shard"}


@dataclass(frozen=True)
class RolloutJob:
    """One shard's search on a worker (its engine, sandbox and PPM): the shard's node rows and
    search statistics. Picklable, so the same job runs in the stage or on a Ray actor."""

    config: MCTSConfig
    round_: int

    def __call__(self, worker, problems: Sequence[Problem], seed: int, progress=None):
        search = MCTS(worker.engine, worker.sandbox, self.config, scorer=worker.scorer)
        return _search_shard(search, problems, seed, self.round_, progress)


@dataclass(frozen=True)
class _PrebuiltSearch:
    """The job for callers that build their own search (``make_search``), run in-process."""

    make_search: Callable[[], MCTS]
    round_: int

    def __call__(self, worker, problems: Sequence[Problem], seed: int, progress=None):
        return _search_shard(self.make_search(), problems, seed, self.round_, progress)


def _search_shard(search: MCTS, problems, seed: int, round_: int, progress):
    trees = search.search(problems, seed=seed, progress=progress)
    frame = pl.DataFrame(tree_rows(trees, round_), schema=NODES_SCHEMA)
    return frame, search.stats


def plan_shards(
    problems: Sequence[Problem], shard_size: int, seed: int, key: str = "rollout.shard_size"
) -> list[Shard]:
    """Consecutive shards of ``shard_size`` problems; shard i's seed depends on (seed, i) only."""
    if shard_size < 1:
        raise ValueError(f"{key} must be at least 1, got {shard_size}")
    return [
        Shard(index, list(problems[start : start + shard_size]), shard_seed(seed, index))
        for index, start in enumerate(range(0, len(problems), shard_size))
    ]


def run_sharded(
    problems: Sequence[Problem],
    make_search: Callable[[], MCTS] | None = None,
    *,
    round_: int,
    work_dir: Path,
    out_path: Path,
    shard_size: int,
    seed: int,
    key: str,
    on_shard: Callable[[int, int, SearchStats], None] | None = None,
    progress: Callable[[SearchStats], None] | None = None,
    executor: Executor | None = None,
    config: MCTSConfig | None = None,
) -> RolloutReport:
    """Search ``problems`` shard by shard under ``work_dir/key`` and merge into ``out_path``.

    Either ``make_search`` (searched here) or an ``executor`` with the search ``config``. Shards
    already on disk are skipped; the others are written here, on the driver, as they arrive.
    """
    shards = plan_shards(problems, shard_size, seed)
    if (executor is None) == (make_search is None) or (executor is not None and config is None):
        raise TypeError("run_sharded takes make_search, or an executor with the search config")
    if executor is None:
        executor, job = LocalExecutor(lambda: None), _PrebuiltSearch(make_search, round_)
    else:
        job = RolloutJob(config, round_)
    started = time.perf_counter()
    shard_dir = work_dir / key
    _drop_stale_shards(work_dir, keep=key)
    shard_dir.mkdir(parents=True, exist_ok=True)
    report = RolloutReport(problems=len(problems))
    shard_paths = [shard_dir / f"shard-{shard.index:05d}.parquet" for shard in shards]
    todo = [shard for shard, path in zip(shards, shard_paths) if not path.exists()]
    report.shards_resumed = len(shards) - len(todo)
    for shard, (frame, stats) in executor.run(job, todo, progress):
        write_parquet(frame, shard_paths[shard.index])
        (shard_dir / f"shard-{shard.index:05d}.json").write_text(
            json.dumps(vars(stats), default=str)
        )
        if on_shard is not None:
            on_shard(shard.index, len(shard.problems), stats)
    report.shards = len(shard_paths)
    nodes = (
        pl.concat([pl.read_parquet(path) for path in shard_paths])
        if shard_paths
        else pl.DataFrame(schema=NODES_SCHEMA)
    )
    write_parquet(nodes, out_path)
    _summarise(report, nodes, shard_dir, len(shard_paths))
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _summarise(report: RolloutReport, nodes: pl.DataFrame, shard_dir: Path, shards: int) -> None:
    report.nodes = nodes.height
    report.tokens = int(nodes["tokens"].sum() or 0)
    report.solved = nodes.filter(pl.col("correct").fill_null(False))["problem_id"].n_unique()
    report.code_errors = int(nodes["is_error"].sum() or 0)
    for index in range(shards):
        stats_path = shard_dir / f"shard-{index:05d}.json"
        if stats_path.exists():
            stats = json.loads(stats_path.read_text())
            report.code_runs += stats.get("code_runs", 0)
            report.generation_calls += stats.get("generation_calls", 0)


def _drop_stale_shards(work_dir: Path, keep: str) -> None:
    if not work_dir.exists():
        return
    for child in work_dir.iterdir():
        if child.is_dir() and child.name != keep:
            shutil.rmtree(child)
