"""Shards/s of the rollout with the local executor against Ray on this machine (Ray's overhead).

The same shards (smoke model: the tiny random Llama after a short hot warm start, real sandbox,
transformers engine with one thread) run three ways: the local executor in this process, Ray
with one actor (the like-for-like comparison: the difference is Ray's cost) and Ray with one
actor per core. Startup (building engines and sandboxes) is timed apart from the shards.
Last lines: the cost per shard and the time N workers would need for a round of that many shards.

    .venv/bin/python benchmarks/bench_ray.py [--problems 24] [--shard-size 2]
        [--round-shards 1460 --cost-per-shard 120]   # estimate from your own one-GPU measurement
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_rollout import smoke_model  # noqa: E402

from pipeline.config import (
    MCTSConfig,  # noqa: E402
    RayConfig,  # noqa: E402
)
from pipeline.executors import LocalExecutor, RayExecutor, Worker, WorkerSpec  # noqa: E402
from pipeline.problems.sources import load_problems  # noqa: E402
from pipeline.search.mcts import Problem  # noqa: E402
from pipeline.search.rollout import RolloutJob, plan_shards  # noqa: E402


def timed(executor, shards, job) -> tuple[float, float]:
    """(seconds to the first shard's worker being ready, seconds for all shards after that)."""
    started = time.perf_counter()
    list(executor.run(job, shards[:1]))  # builds the worker(s) and runs one shard
    warm = time.perf_counter()
    list(executor.run(job, shards[1:]))
    return warm - started, time.perf_counter() - warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--shard-size", type=int, default=2)
    parser.add_argument(
        "--round-shards",
        type=int,
        default=1460,
        help="shards of the round to estimate (747k problems / 512)",
    )
    parser.add_argument(
        "--cost-per-shard",
        type=float,
        default=0.0,
        help="seconds per shard on one GPU (0: this machine's)",
    )
    args = parser.parse_args()

    import ray

    frame = load_problems("generated", n=args.problems, seed=7, levels=[1, 2])
    problems = [
        Problem(r["problem_id"], r["question"], r["answer"]) for r in frame.iter_rows(named=True)
    ]
    config = MCTSConfig(rollouts=2, n_children=3, max_new_tokens=32, max_depth=3, temperature=1.0)
    job = RolloutJob(config, 1)
    shards = plan_shards(problems, args.shard_size, seed=0)
    with tempfile.TemporaryDirectory() as scratch:
        spec = WorkerSpec("transformers", str(smoke_model(Path(scratch))), {"batch_size": 16, "threads": 1},
                          {"workers": 1, "timeout_s": 5.0})  # fmt: skip
        rows = []
        with LocalExecutor(lambda: Worker.build(spec)) as local:
            rows.append(("local", *timed(local, shards, job)))
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            logging_level="warning",
        )
        for actors in sorted({1, os.cpu_count() or 1}):
            with RayExecutor(spec, RayConfig(num_actors=actors)) as pool:
                rows.append((f"ray, {actors} actor(s)", *timed(pool, shards, job)))
        ray.shutdown()

    measured = len(shards) - 1
    print(
        f"{len(problems)} problems in {len(shards)} shards of {args.shard_size}; {os.cpu_count()} cores"
    )
    print(f"{'executor':<18} {'startup s':>10} {'shards/s':>9} {'s/shard':>8}")
    for name, startup, seconds in rows:
        print(f"{name:<18} {startup:>10.1f} {measured / seconds:>9.3f} {seconds / measured:>8.2f}")
    local_cost, ray_cost = rows[0][2] / measured, rows[1][2] / measured
    print(
        f"ray overhead per shard: {ray_cost - local_cost:+.2f} s ({(ray_cost / local_cost - 1) * 100:+.0f}%)"
    )
    cost = args.cost_per_shard or ray_cost
    for workers in (1, 8, 80):
        hours = math.ceil(args.round_shards / workers) * cost / 3600
        print(
            f"estimate: {args.round_shards} shards at {cost:.1f} s/shard on {workers} workers: {hours:.1f} h"
        )


if __name__ == "__main__":
    main()
