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

from pipeline.io import write_parquet
from pipeline.mcts import MCTS, Problem, SearchStats, tree_rows
from pipeline.tree import NODE_COLUMNS

NODES_SCHEMA = {
    "problem_id": pl.String, "round": pl.Int32, "node_id": pl.String, "parent_id": pl.String,
    "depth": pl.Int32, "child_index": pl.Int32, "step_text": pl.String, "code": pl.String,
    "observation": pl.String, "is_error": pl.Boolean, "is_terminal": pl.Boolean,
    "terminal_kind": pl.String, "final_answer": pl.String, "correct": pl.Boolean,
    "visits": pl.Int64, "value_sum": pl.Float64, "q": pl.Float64, "ppm_score": pl.Float64,
    "tokens": pl.Int64,
}  # fmt: skip
assert tuple(NODES_SCHEMA) == NODE_COLUMNS


def fingerprint(parts: dict) -> str:
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha1(payload).hexdigest()[:16]


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


def run_sharded(
    problems: Sequence[Problem],
    make_search: Callable[[], MCTS],
    *,
    round_: int,
    work_dir: Path,
    out_path: Path,
    shard_size: int,
    seed: int,
    key: str,
    on_shard: Callable[[int, int, SearchStats], None] | None = None,
    progress: Callable[[SearchStats], None] | None = None,
) -> RolloutReport:
    """Search ``problems`` shard by shard under ``work_dir/key`` and merge into ``out_path``."""
    if shard_size < 1:
        raise ValueError(f"rollout.shard_size must be at least 1, got {shard_size}")
    started = time.perf_counter()
    shard_dir = work_dir / key
    _drop_stale_shards(work_dir, keep=key)
    shard_dir.mkdir(parents=True, exist_ok=True)
    report = RolloutReport(problems=len(problems))
    shard_paths = []
    for index, start in enumerate(range(0, len(problems), shard_size)):
        path = shard_dir / f"shard-{index:05d}.parquet"
        shard_paths.append(path)
        if path.exists():
            report.shards_resumed += 1
            continue
        search = make_search()
        trees = search.search(
            problems[start : start + shard_size], seed=shard_seed(seed, index), progress=progress
        )
        frame = pl.DataFrame(tree_rows(trees, round_), schema=NODES_SCHEMA)
        write_parquet(frame, path)
        stats = vars(search.stats)
        (shard_dir / f"shard-{index:05d}.json").write_text(json.dumps(stats, default=str))
        if on_shard is not None:
            on_shard(index, len(trees), search.stats)
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
