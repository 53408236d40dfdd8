"""Generation speed of the MCTS search on the vllm engine vs the transformers engine.

The real search (pipeline.search.mcts) with the real sandbox, SmolLM2-135M-Instruct (converted once
from the packaged GGUF into a cache folder) and 24 train problems of the default profile, with
its search settings but one rollout per problem and ``--depth`` steps at most. Both engines run
in this one process, transformers first (vLLM, built in process, pins torch's thread count for
the rest of the process). vLLM takes its options from the default profile's ``engine`` block;
the transformers engine runs in the dtype ``auto`` resolves to on this machine (bf16 where the
CPU has bf16 instructions, else fp32), its faster one, so the ratio is not flattered.

Start-up is timed apart and left out of the rates. The two engines draw different samples,
so their trees differ; the figure compared is generated tokens per second of search.
Last line: `speedup: N.Nx` (vLLM over transformers; target: at least 3x).

    .venv/bin/python benchmarks/bench_engine.py [--problems 24] [--depth 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.config import MCTSConfig  # noqa: E402
from pipeline.execution.sandbox import Sandbox  # noqa: E402
from pipeline.models.base import convert_gguf, default_cache_dir, find_smollm2_gguf  # noqa: E402
from pipeline.models.engines import make_engine  # noqa: E402
from pipeline.models.engines.vllm_engine import resolve_dtype  # noqa: E402
from pipeline.problems.sources import load_problems  # noqa: E402
from pipeline.search.mcts import MCTS, Problem  # noqa: E402


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as an HF folder, converted once (about 35 s) and kept."""
    folder = default_cache_dir() / "bench" / "smollm2"
    if not (folder / "config.json").is_file():
        convert_gguf(find_smollm2_gguf(), folder)
    return folder


def default_profile() -> dict:
    return yaml.safe_load((REPO / "profiles" / "default.yaml").read_text())


def training_problems(profile: dict, count: int) -> list[Problem]:
    seeds = profile["seeds"]
    frame = load_problems("generated", n=seeds["n"], seed=seeds["seed"], levels=seeds["levels"])
    frame = frame.filter(frame["split"] == "train").sort("problem_id").head(count)
    return [
        Problem(row["problem_id"], row["question"], row["answer"], rollouts=1)
        for row in frame.iter_rows(named=True)
    ]


def measure(name: str, build, problems, config, sandbox) -> dict:
    started = time.perf_counter()
    engine = build()
    startup = time.perf_counter() - started
    search = MCTS(engine, sandbox, config)
    started = time.perf_counter()
    search.search(problems, seed=0)
    seconds = time.perf_counter() - started
    engine.close()
    stats = search.stats
    result = {
        "name": name, "startup_s": startup, "search_s": seconds, "nodes": stats.nodes,
        "tokens": stats.tokens, "calls": stats.generation_calls,
        "nodes_per_s": stats.nodes / seconds, "tokens_per_s": stats.tokens / seconds,
    }  # fmt: skip
    print(
        f"{name:>12}: start-up {startup:5.1f} s, search {seconds:6.1f} s, {stats.nodes} nodes "
        f"({result['nodes_per_s']:.2f}/s), {stats.tokens} tokens "
        f"({result['tokens_per_s']:.0f} tok/s), {stats.generation_calls} calls",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--depth", type=int, default=4)
    args = parser.parse_args()
    if args.depth < 4:
        parser.error("--depth must be at least 4: deeper prefixes are where caching pays")

    profile = default_profile()
    model = str(smollm2_folder())
    problems = training_problems(profile, args.problems)
    search = dict(profile["mcts"]) | {"rollouts": 1, "max_depth": args.depth}
    # The base model has never seen the step markers as tokens; few-shot shows them as text.
    config = MCTSConfig(**search, prompt_style="few_shot")
    vllm_options = {k: v for k, v in profile["engine"].items() if k != "kind"}
    print(f"{len(problems)} problems, depth {args.depth}, {config.n_children} children, "
          f"{config.max_new_tokens} new tokens a step; vllm {vllm_options}", flush=True)  # fmt: skip

    sandbox_options = profile["sandbox"]
    with Sandbox(**sandbox_options) as sandbox:
        hf = measure(
            "transformers",
            lambda: make_engine("transformers", model, dtype=resolve_dtype("auto"), batch_size=32),
            problems, config, sandbox,
        )  # fmt: skip
        vllm = measure(
            "vllm", lambda: make_engine("vllm", model, **vllm_options), problems, config, sandbox
        )
    print(f"nodes/s ratio: {vllm['nodes_per_s'] / hf['nodes_per_s']:.1f}x")
    print(f"speedup: {vllm['tokens_per_s'] / hf['tokens_per_s']:.1f}x")


if __name__ == "__main__":
    main()
