"""Sharded rollouts on the real transformers engine and sandbox: backup rules and resume."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.config import MCTSConfig
from pipeline.execution.sandbox import Sandbox
from pipeline.models.engines import make_engine
from pipeline.rules.checks.sql_checks import backup_violations
from pipeline.search.mcts import MCTS, Problem
from pipeline.search.rollout import run_sharded
from tests.fakes import FixedScorer

PROBLEMS = [
    Problem(f"p{i}", f"Tom has {i + 2} apples and buys {i + 3} more. How many now?", str(2 * i + 5))
    for i in range(5)
]
CONFIG = MCTSConfig(rollouts=2, n_children=3, max_new_tokens=32, max_depth=3, temperature=1.0)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def engine(format_model_dir):
    with make_engine("transformers", str(format_model_dir), batch_size=16, threads=1) as engine:
        yield engine


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, timeout_s=5.0) as box:
        yield box


def run(engine, sandbox, work_dir, out_path, scorer=None, on_shard=None):
    return run_sharded(
        PROBLEMS, lambda: MCTS(engine, sandbox, CONFIG, scorer=scorer), round_=1, work_dir=work_dir,
        out_path=out_path, shard_size=2, seed=7, key="k", on_shard=on_shard,
    )  # fmt: skip


@pytest.mark.parametrize(
    "scorer", [None, FixedScorer(0.3)], ids=["terminal_guided", "ppm_augmented"]
)
def test_real_engine_trees_obey_the_backup_rules(engine, sandbox, tmp_path, scorer):
    report = run(engine, sandbox, tmp_path / "work", tmp_path / "nodes.parquet", scorer=scorer)
    nodes = pl.read_parquet(tmp_path / "nodes.parquet")
    assert report.shards == 3 and report.nodes == nodes.height > len(PROBLEMS)
    assert set(nodes["problem_id"]) == {problem.problem_id for problem in PROBLEMS}
    assert backup_violations(nodes.to_dicts()) == []
    assert nodes["node_id"].n_unique() == nodes.height
    if scorer is not None:
        assert nodes.filter(pl.col("ppm_score").is_not_null()).height > 0


def test_killed_rollout_resumes_to_the_same_nodes(engine, sandbox, tmp_path):
    run(engine, sandbox, tmp_path / "straight", tmp_path / "straight.parquet")

    def die_after_first_shard(index, count, stats):
        if index == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(
            engine,
            sandbox,
            tmp_path / "resumed",
            tmp_path / "resumed.parquet",
            on_shard=die_after_first_shard,
        )
    assert not (tmp_path / "resumed.parquet").exists()  # nothing half-written
    report = run(engine, sandbox, tmp_path / "resumed", tmp_path / "resumed.parquet")
    assert report.shards_resumed == 2  # shards 0 and 1 were on disk when it died
    straight = pl.read_parquet(tmp_path / "straight.parquet")
    resumed = pl.read_parquet(tmp_path / "resumed.parquet")
    assert straight.equals(resumed)


def test_changed_inputs_never_resume_stale_shards(engine, sandbox, tmp_path):
    run(engine, sandbox, tmp_path / "work", tmp_path / "a.parquet")
    report = run_sharded(
        PROBLEMS[:2], lambda: MCTS(engine, sandbox, CONFIG), round_=1, work_dir=tmp_path / "work",
        out_path=tmp_path / "b.parquet", shard_size=2, seed=7, key="other",
    )  # fmt: skip
    assert report.shards_resumed == 0
    assert not (tmp_path / "work" / "k").exists()
