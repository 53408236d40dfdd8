"""A killed evaluation resumes: finished shards are kept and only the missing ones run again.

The real transformers engine on the tiny format model, the real sandbox and grader.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.config import EvalConfig, MCTSConfig
from pipeline.evaluation.sharded import evaluate_sharded, resumable_shard_dir
from pipeline.executors import WorkerSpec, make_executor
from pipeline.search.mcts import Problem

pytestmark = pytest.mark.slow

PROBLEMS = [
    Problem(f"p{i}", f"Ann has {i + 3} pens and gets {i + 1} more. How many now?", str(2 * i + 4))
    for i in range(6)
]
SEARCH = MCTSConfig(max_new_tokens=24, max_depth=3)
CONFIG = EvalConfig(samples=2, mcts_rollouts=0, temperature=1.0, shard_size=2, seed=3)


class Killed(Exception):
    """What stops the run in the middle, as a SIGKILL or Ctrl-C would."""


class RecordingExecutor:
    """The local executor, recording the shards it is asked to run; it can die after some."""

    def __init__(self, executor, die_after: int | None = None) -> None:
        self.executor, self.die_after, self.ran = executor, die_after, []

    def run(self, job, shards, progress=None):
        for shard, outcomes in self.executor.run(job, shards, progress):
            if self.die_after is not None and len(self.ran) == self.die_after:
                raise Killed
            self.ran.append(shard.index)
            yield shard, outcomes


@pytest.fixture(scope="module")
def spec(format_model_dir) -> WorkerSpec:
    return WorkerSpec("transformers", str(format_model_dir), {"batch_size": 16, "threads": 1},
                      {"workers": 1, "timeout_s": 5.0})  # fmt: skip


def test_a_killed_evaluation_resumes_with_the_same_metrics(spec, tmp_path: Path):
    with make_executor("local", spec) as local:
        whole = evaluate_sharded(local, PROBLEMS, SEARCH, CONFIG)

        dying = RecordingExecutor(local, die_after=1)
        with pytest.raises(Killed):
            evaluate_sharded(dying, PROBLEMS, SEARCH, CONFIG, shard_dir=tmp_path)
        assert sorted(path.name for path in tmp_path.iterdir()) == ["shard-00000.json"]

        resumed = RecordingExecutor(local)
        metrics = evaluate_sharded(resumed, PROBLEMS, SEARCH, CONFIG, shard_dir=tmp_path)
    assert resumed.ran == [1, 2]  # shard 0 was read back, not evaluated again
    assert metrics == whole
    assert len(list(tmp_path.glob("shard-*.json"))) == 3


def test_shards_of_another_evaluation_are_never_resumed(spec, format_model_dir, tmp_path: Path):
    first = resumable_shard_dir(tmp_path, CONFIG, SEARCH, spec, PROBLEMS)
    first.mkdir()
    assert resumable_shard_dir(tmp_path, CONFIG, SEARCH, spec, PROBLEMS) == first
    # Another sampling temperature, or the same folder name holding other weights.
    hotter = EvalConfig(**{**vars(CONFIG), "temperature": 1.5})
    assert resumable_shard_dir(tmp_path, hotter, SEARCH, spec, PROBLEMS) != first
    assert not first.exists()  # stale: removed
    other_model = tmp_path.parent / "other_model"
    shutil.copytree(format_model_dir, other_model)
    (other_model / "config.json").write_text((other_model / "config.json").read_text() + " ")
    moved = WorkerSpec(**{**vars(spec), "model_path": str(other_model)})
    assert resumable_shard_dir(tmp_path, CONFIG, SEARCH, moved, PROBLEMS) != first
