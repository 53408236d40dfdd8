"""Sharded MCTS rollouts on the real vLLM engine and sandbox: the step markers stop
generation, trees obey the backup rules, and a killed-and-resumed rollout equals an
uninterrupted one (the engine is shared by both runs, so its prefix cache is warm for the
second: a call's samples must depend only on its prompts and seed)."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.config import MCTSConfig
from pipeline.execution.sandbox import Sandbox
from pipeline.models.engines import make_engine
from pipeline.rules.checks.sql_checks import backup_violations
from pipeline.search.mcts import MCTS, Problem
from pipeline.search.rollout import run_sharded

pytest.importorskip("vllm", reason="the vllm engine tests need vLLM (make setup installs it)")

PROBLEMS = [Problem(f"p{i}", f"Tom has {i + 2} apples and buys {i + 3} more. How many now?", str(2 * i + 5)) for i in range(5)]  # fmt: skip
CONFIG = MCTSConfig(rollouts=2, n_children=3, max_new_tokens=32, max_depth=3, temperature=1.0)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def engine(format_model_dir):
    options = {"dtype": "float32", "max_model_len": 1024, "kv_cache_gib": 0.25}
    with make_engine("vllm", str(format_model_dir), **options) as engine:
        yield engine


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, timeout_s=5.0) as box:
        yield box


def run(engine, sandbox, work_dir, out_path, on_shard=None):
    return run_sharded(
        PROBLEMS, lambda: MCTS(engine, sandbox, CONFIG), round_=1, work_dir=work_dir,
        out_path=out_path, shard_size=2, seed=7, key="k", on_shard=on_shard,
    )  # fmt: skip


def test_killed_rollout_resumes_to_the_same_nodes_and_trees_are_sound(engine, sandbox, tmp_path):
    report = run(engine, sandbox, tmp_path / "straight", tmp_path / "straight.parquet")
    straight = pl.read_parquet(tmp_path / "straight.parquet")
    assert report.shards == 3 and report.nodes == straight.height > len(PROBLEMS)
    assert backup_violations(straight.to_dicts()) == []
    # The warm-started model ends steps with its markers, which must stop generation.
    assert straight["step_text"].str.contains("<end_of_step>|<end_of_code>|<end_of_answer>").any()

    def die_after_first_shard(index, count, stats):
        if index == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(engine, sandbox, tmp_path / "resumed", tmp_path / "resumed.parquet",
            on_shard=die_after_first_shard)  # fmt: skip
    report = run(engine, sandbox, tmp_path / "resumed", tmp_path / "resumed.parquet")
    assert report.shards_resumed == 2
    assert straight.equals(pl.read_parquet(tmp_path / "resumed.parquet"))


def test_evaluation_on_vllm_scores_every_problem_and_repeats_itself(engine, sandbox):
    # The smoke profile evaluates on the transformers engine (evaluate.engine): this is the
    # default profile's path, greedy and sampled methods on the real vLLM engine.
    from pipeline.config import EvalConfig
    from pipeline.evaluation.evaluate import problem_outcomes

    config = EvalConfig(samples=2, mcts_rollouts=0, temperature=1.0)
    first = problem_outcomes(engine, sandbox, PROBLEMS[:3], CONFIG, config, None, seed=3)
    again = problem_outcomes(engine, sandbox, PROBLEMS[:3], CONFIG, config, None, seed=3)
    assert [outcome["problem_id"] for outcome in first] == ["p0", "p1", "p2"]
    assert all(len(outcome["samples"]) == 2 for outcome in first)
    assert first == again
