"""Nodes/s of the batched search vs the same search run one problem at a time.

Both use the same engine (transformers, CPU), the same model and the same sandbox, in one
process. The model is the smoke model: a tiny random Llama with SmolLM2's tokenizer, given a
short hot warm start on generated reference solutions so that its steps end in step markers
and the trees grow past their roots. Last line: `speedup: N.Nx` (target: at least 3x).

    .venv/bin/python benchmarks/bench_rollout.py [--problems 16] [--rollouts 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline import steps  # noqa: E402
from pipeline.engines import make_engine  # noqa: E402
from pipeline.mcts import MCTS, MCTSConfig, Problem  # noqa: E402
from pipeline.models import build_tiny_model, find_smollm2_gguf  # noqa: E402
from pipeline.problems import load_problems  # noqa: E402
from pipeline.sandbox import Sandbox  # noqa: E402
from pipeline.train.common import TrainConfig  # noqa: E402
from pipeline.train.sft import train_sft  # noqa: E402


def smoke_model(folder: Path) -> Path:
    tiny = build_tiny_model(folder / "tiny", find_smollm2_gguf())
    problems = load_problems("generated", n=48, seed=1, levels=[1, 2])
    examples = [(steps.sft_prompt(q), s) for q, s in zip(problems["question"], problems["solution"])]
    config = TrainConfig(epochs=4, learning_rate=1e-2, batch_size=8, max_length=192, warmup_ratio=0.0)
    train_sft(tiny, examples, folder / "format", config)
    return folder / "format"


def timed_search(search_factory, batches: list[list[Problem]]) -> tuple[int, float]:
    nodes, started = 0, time.perf_counter()
    for index, batch in enumerate(batches):
        search = search_factory()
        search.search(batch, seed=index)
        nodes += search.stats.nodes
    return nodes, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--rollouts", type=int, default=2)
    args = parser.parse_args()

    frame = load_problems("generated", n=args.problems, seed=7, levels=[1, 2])
    problems = [Problem(r["problem_id"], r["question"], r["answer"]) for r in frame.iter_rows(named=True)]
    config = MCTSConfig(rollouts=args.rollouts, n_children=4, max_new_tokens=32, max_depth=4, temperature=1.0)
    with tempfile.TemporaryDirectory() as scratch:
        model = smoke_model(Path(scratch))
        engine = make_engine("transformers", str(model), batch_size=64)
        with Sandbox(workers=2, timeout_s=5) as sandbox:
            factory = lambda: MCTS(engine, sandbox, config)  # noqa: E731
            timed_search(factory, [problems[:2]])  # warm caches before timing
            one_nodes, one_seconds = timed_search(factory, [[problem] for problem in problems])
            all_nodes, all_seconds = timed_search(factory, [problems])
    one_rate, all_rate = one_nodes / one_seconds, all_nodes / all_seconds
    print(f"{'mode':<22}{'nodes':>8}{'seconds':>10}{'nodes/s':>10}")
    print(f"{'one problem at a time':<22}{one_nodes:>8}{one_seconds:>10.1f}{one_rate:>10.1f}")
    print(f"{'all problems batched':<22}{all_nodes:>8}{all_seconds:>10.1f}{all_rate:>10.1f}")
    print(f"speedup: {all_rate / one_rate:.1f}x")


if __name__ == "__main__":
    main()
