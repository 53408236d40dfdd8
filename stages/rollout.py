"""Stage `rollout@rN`: MCTS over the training problems with round N's policy (and PPM).

Reads data/seeds/problems.parquet, the policy named by `rounds.rN.policy`, the PPM named by
`rounds.rN.ppm` (`none`: terminal-guided) and the per-problem status after the round named by
`rounds.rN.previous` (problems never solved get `rounds.rN.unsolved_rollouts`). The search uses
the `mcts` group with the round's own `rounds.rN.mcts` overrides (pipeline.search.rounds). Writes
data/rounds/rN/nodes.parquet, problem_status.parquet and rollout_stats.json.
"""

from __future__ import annotations

import argparse

import polars as pl
from tqdm import tqdm

from pipeline import layout
from pipeline.config import (
    CurriculumConfig,
    RayConfig,
    RolloutConfig,
    group,
    load_params,
)
from pipeline.executors import ExecutorError, WorkerSpec, make_executor
from pipeline.ids import fingerprint
from pipeline.io import write_json, write_parquet
from pipeline.models.base import ModelError, folder_signature
from pipeline.models.engines.vllm_engine import resolve_dtype
from pipeline.search.mcts import Problem
from pipeline.search.rollout import run_sharded
from pipeline.search.rounds import (
    round_config,
    search_config,
    training_problems,
)  # fmt: skip
from stages.common import errors_as_one_line, exit_without_teardown


def problem_status(
    nodes: pl.DataFrame, problems: list[Problem], previous: pl.DataFrame | None
) -> pl.DataFrame:
    """Per problem: solved this round, solved in any round so far, solved for the first time
    this round, rounds attempted. Problems an earlier round solved stay listed when this round
    does not search them (`skip_solved`), so that later rounds still know them as solved."""
    solved_now = set(nodes.filter(pl.col("correct").fill_null(False))["problem_id"].to_list())
    earlier = {} if previous is None else {
        row["problem_id"]: row for row in previous.iter_rows(named=True)
    }  # fmt: skip
    rows = []
    for problem in problems:
        before = earlier.get(problem.problem_id, {})
        rows.append({
            "problem_id": problem.problem_id,
            "solved": problem.problem_id in solved_now,
            "solved_ever": problem.problem_id in solved_now or bool(before.get("solved_ever", False)),
            "solved_first": problem.problem_id in solved_now and not before.get("solved_ever", False),
            "rounds_attempted": int(before.get("rounds_attempted", 0)) + 1,
        })  # fmt: skip
    searched = {problem.problem_id for problem in problems}
    for problem_id, row in earlier.items():
        if row.get("solved_ever") and problem_id not in searched:
            rows.append({
                "problem_id": problem_id, "solved": False, "solved_ever": True,
                "solved_first": False, "rounds_attempted": int(row.get("rounds_attempted", 0)),
            })  # fmt: skip
    return pl.DataFrame(rows, schema={"problem_id": pl.String, "solved": pl.Boolean,
                                      "solved_ever": pl.Boolean, "solved_first": pl.Boolean,
                                      "rounds_attempted": pl.Int32})  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--round", required=True, help="round key, e.g. r1")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    round_key = args.round
    round_ = layout.round_number(round_key)
    config = round_config(params, round_key)
    mcts_config = search_config(params, round_key)
    rollout_config = group(params, "rollout", RolloutConfig)
    ray_config = group(params, "ray", RayConfig)
    ppm_path = None if config.ppm == layout.NO_PPM else layout.ppm_dir(config.ppm)
    spec = WorkerSpec.from_params(params, layout.model_dir(config.policy), ppm_path)
    # Connects to the cluster (ray) before any work, so a bad address costs nothing.
    executor = make_executor(rollout_config.executor, spec, ray_config)

    out_dir = layout.round_dir(round_key)
    previous_status = pl.read_parquet(layout.round_dir(config.previous) / "problem_status.parquet")
    curriculum = group(params, "curriculum", CurriculumConfig)
    seeds = pl.read_parquet(layout.PROBLEMS)
    problems = training_problems(seeds, config, previous_status, curriculum)

    policy_path = layout.model_dir(config.policy)
    key = fingerprint({
        "round": round_key, "config": vars(config), "mcts": vars(mcts_config),
        "engine": [spec.engine_kind, spec.engine_options], "problems": [vars(p) for p in problems],
        # What `dtype: auto` means on this machine: shards made in another dtype are not reused.
        "auto_dtype": resolve_dtype("auto"), "ppm_scorer": spec.ppm_scorer,
        "policy": folder_signature(policy_path),
        "ppm": folder_signature(layout.ppm_dir(config.ppm)),
    })  # fmt: skip

    bar = tqdm(total=len(problems), desc=f"rollout {round_key}", unit="problem")

    finished = {"nodes": 0, "tokens": 0}  # of the shards searched so far in this run

    def on_progress(stats) -> None:
        # stats are the running shard's; the rate is over this run's whole search
        tokens = finished["tokens"] + stats.tokens
        bar.set_postfix(
            nodes=finished["nodes"] + stats.nodes,
            tok_s=f"{tokens / max(bar.format_dict['elapsed'], 1e-9):.0f}",
        )

    def on_shard(index: int, count: int, stats) -> None:
        finished["nodes"] += stats.nodes
        finished["tokens"] += stats.tokens
        bar.update(count)

    with executor:
        report = run_sharded(
            problems,
            executor=executor,
            config=mcts_config,
            round_=round_,
            work_dir=out_dir / ".shards",
            out_path=out_dir / "nodes.parquet",
            shard_size=rollout_config.shard_size,
            seed=mcts_config.seed,
            key=key,
            on_shard=on_shard,
            progress=on_progress,
        )
    bar.close()

    nodes = pl.read_parquet(out_dir / "nodes.parquet")
    status = problem_status(nodes, problems, previous_status)
    write_parquet(status, out_dir / "problem_status.parquet")
    stats = report.as_dict() | {
        "round": round_,
        "mode": "ppm_augmented" if ppm_path else "terminal_guided",
        "solved_ever": int(status["solved_ever"].sum()),
        "solved_new": int(status.filter(pl.col("solved") & pl.col("solved_first")).height),
    }
    write_json(out_dir / "rollout_stats.json", stats)
    print(f"{round_key}: solved {report.solved} of {report.problems} problems "
          f"({report.nodes} nodes, {report.tokens} tokens, {report.seconds:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    with errors_as_one_line(ExecutorError, ModelError):
        main()
    exit_without_teardown()
