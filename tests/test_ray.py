"""Rollouts and evaluation on a local Ray cluster: the same output as the local executor.

One two-CPU cluster per module; real actors with the transformers engine on the tiny model, the
real sandbox and a real PPM. A worker is killed with SIGKILL from outside while it runs a shard.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
import ray
import yaml

from pipeline.config import EvalConfig, MCTSConfig, RayConfig
from pipeline.evaluation.sharded import evaluate_sharded
from pipeline.executors import RayExecutor, WorkerSpec, make_executor
from pipeline.search.mcts import Problem
from pipeline.search.rollout import run_sharded

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PROBLEMS = [
    Problem(f"p{i}", f"Ann has {i + 3} pens and gets {i + 1} more. How many now?", str(2 * i + 4))
    for i in range(6)
]
CONFIG = MCTSConfig(rollouts=2, n_children=2, max_new_tokens=24, max_depth=3, temperature=1.0)
EVAL = EvalConfig(samples=2, mcts_rollouts=1, mcts_children=2, shard_size=2, seed=3)


@pytest.fixture(scope="module")
def spec(format_model_dir, tmp_path_factory) -> WorkerSpec:
    from pipeline.models.ppm import PPM

    ppm_dir = tmp_path_factory.mktemp("ppm") / "ppm"
    PPM.from_policy(format_model_dir, max_length=256).save(ppm_dir)
    return WorkerSpec("transformers", str(format_model_dir), {"batch_size": 16, "threads": 1},
                      {"workers": 1, "timeout_s": 5.0}, str(ppm_dir))  # fmt: skip


@pytest.fixture(scope="module")
def local(spec, tmp_path_factory):
    """The local executor's nodes and metrics: what every Ray run must reproduce."""
    folder = tmp_path_factory.mktemp("local")
    with make_executor("local", spec) as executor:
        rollout(executor, folder)
        metrics = evaluate_sharded(executor, PROBLEMS, CONFIG, EVAL)
    return pl.read_parquet(folder / "nodes.parquet"), metrics


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def executor(cluster, spec):
    messages: list[str] = []
    with RayExecutor(spec, RayConfig(num_actors=2, max_retries=1), log=messages.append) as pool:
        pool.messages = messages
        yield pool


def rollout(executor, folder: Path):
    return run_sharded(
        PROBLEMS, executor=executor, config=CONFIG, round_=1, work_dir=folder / "shards",
        out_path=folder / "nodes.parquet", shard_size=2, seed=11, key="k",
    )  # fmt: skip


def test_ray_rollout_writes_the_local_nodes(executor, local, tmp_path):
    report = rollout(executor, tmp_path)
    nodes = pl.read_parquet(tmp_path / "nodes.parquet")
    assert report.shards == 3 and report.shards_resumed == 0
    assert nodes.height > len(PROBLEMS) and nodes["ppm_score"].is_not_null().any()
    assert nodes.equals(local[0])


def test_ray_evaluation_gives_the_local_metrics(executor, local):
    metrics = evaluate_sharded(executor, PROBLEMS, CONFIG, EVAL)
    assert metrics == local[1]
    assert set(metrics["accuracy"]) == {
        "greedy", "pass_at_2", "maj_at_2", "sampled_pass_at_1", "ppm_best_of_2", "ppm_mcts",
    }  # fmt: skip
    assert sum(metrics["sampled_outcomes"].values()) == 2 * len(PROBLEMS)


def running_shard_pids() -> list[int]:
    """Ray titles an actor's process after the method it runs (`ray::ShardActor.run`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"ShardActor.run" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_a_worker_killed_mid_shard_is_retried_and_the_nodes_stay_equal(executor, local, tmp_path):
    killed: list[int] = []
    stop = threading.Event()

    def kill_the_first_busy_actor():
        while not stop.is_set() and not killed:
            for pid in running_shard_pids()[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_first_busy_actor)
    killer.start()
    try:
        report = rollout(executor, tmp_path)
    finally:
        stop.set()
        killer.join()
    assert killed, "no actor was seen running a shard"
    assert any("retrying on a new actor" in message for message in executor.messages)
    assert report.shards == 3
    assert pl.read_parquet(tmp_path / "nodes.parquet").equals(local[0])


def run_stage(stage: str, folder: Path, address: str) -> subprocess.CompletedProcess:
    """A stage in an empty folder whose params send it to ``address``: no data, no models."""
    params = yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text())
    params["rollout"]["executor"] = params["evaluate"]["executor"] = "ray"
    params["ray"]["address"] = address
    params["ray"]["connect_timeout_s"] = 5
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", "--round", "r1"], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


# Not `auto`: it finds whichever cluster this machine runs, such as this module's own.
@pytest.mark.parametrize(
    ("stage", "address"), [("rollout", "127.0.0.1:9"), ("evaluate", "127.0.0.1:9")]
)
def test_a_missing_cluster_is_one_line_before_any_work(tmp_path, stage, address):
    result = run_stage(stage, tmp_path, address)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: ray.address '{address}'"), result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


@pytest.mark.parametrize(("name", "values", "message"), [
    ("ray", {"num_gpus": -1}, "ray.num_gpus must be >= 0, got -1"),
    ("ray", {"adress": "auto"}, "unknown key(s) adress"),
    ("rollout", {"executor": "slurm"}, "rollout.executor must be one of 'local', 'ray', got 'slurm'"),
    ("evaluate", {"executor": "slurm"}, "evaluate.executor must be one of 'local', 'ray', got 'slurm'"),
])  # fmt: skip
def test_bad_executor_params_are_one_line_errors_naming_the_key(name, values, message):
    from pipeline.config import ParamsError, RolloutConfig, group

    cls = {"ray": RayConfig, "rollout": RolloutConfig, "evaluate": EvalConfig}[name]
    with pytest.raises(ParamsError) as error:
        group({name: values}, name, cls)
    assert message in str(error.value) and "\n" not in str(error.value)
