"""PPM scoring speed: the torch path (pipeline.ppm.PPM.score) vs vLLM as a pooling model.

Measured (2 shared cores, other agents' jobs running; load averages before/after):

    run 1, defaults (8 calls of 48 texts, 384 texts, 84-495 tokens), load 5.4 -> 6.1:
      torch fp32 0.8 texts/s, torch bf16 1.1, vllm bf16 3.9 (start-up 7.4 s);
      vllm vs torch fp32: max |score diff| 0.081 (torch bf16: 0.092); speedup: 5.1x
    run 2, --depth 4 (4 calls of 48 texts, 192 texts, 84-311 tokens), load 6.0 -> 5.3:
      torch fp32 0.9 texts/s, torch bf16 1.4, vllm bf16 4.8 (start-up 7.6 s);
      vllm vs torch fp32: max |score diff| 0.065 (torch bf16: 0.092); speedup: 5.3x

So vLLM scores, behind the ``ppm_scorer`` param (pipeline.models.ppm_vllm). Mostly from its prefix
cache: siblings share all but their last step, and each call goes one step below the last.
Its start-up (about 7 s) is less than one torch call of 48 texts; a default-profile round
scores a few hundred texts, the paper's hundreds of thousands.

The PPM is SmolLM2-135M-Instruct (converted once from the packaged GGUF, as in
benchmarks/bench_engine.py) with a value head drawn at random and scaled so that raw values
spread over most of tanh's range (an untrained head gives values near 0, where any two
scorers agree). It is saved as a round's PPM stage saves it, and the vLLM path is the
pipeline's own scorer on that folder (pipeline.models.ppm_vllm.VLLMScorer: the weights exported
as a ``LlamaForSequenceClassification``, LAST pooling, ``tanh(v / 5)`` applied after), fed the
PPM tokenizer's ids, so both paths see the same tokens.

Texts and call sizes are those of a PPM-augmented rollout shard: ``--problems`` trees (the
default profile's ``rollout.shard_size``, 16) each expand one node per call into
``--children`` (``mcts.n_children``, 3) new steps, and each call scores all of them
(pipeline.search.mcts: one PPM call per expansion). The trajectory of each tree then goes one step
deeper, ``--depth`` calls in all (``mcts.max_depth``, 8). Steps are the generator's reference
code steps (pipeline.search.steps helpers; siblings are different steps), after the SFT prompt.
A warm-up call on other problems runs first on each path and is not timed.

Both paths run in this one process, torch first (vLLM, built in process, pins torch's thread
count for the rest of the process). Start-up of vLLM (engine build) is timed apart and left
out of the rates. Last line: `speedup: N.Nx` (vLLM over the current torch path, steady state).

    .venv/bin/python benchmarks/bench_ppm.py [--problems 16] [--children 3] [--depth 8]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from benchmarks.bench_engine import smollm2_folder  # noqa: E402
from pipeline.config import PPMScorerConfig  # noqa: E402
from pipeline.models.base import default_cache_dir  # noqa: E402
from pipeline.models.engines.vllm_engine import resolve_dtype  # noqa: E402
from pipeline.models.ppm import PPM  # noqa: E402
from pipeline.models.ppm_vllm import VLLMScorer  # noqa: E402
from pipeline.problems import load_problems  # noqa: E402
from pipeline.search import steps  # noqa: E402


def reference_steps(count: int) -> tuple[list[str], list[str]]:
    """(questions, a pool of code steps) from the generator's train problems."""
    frame = load_problems("generated", n=400, seed=0, levels=[1, 2, 3, 4, 5])
    frame = frame.filter(frame["split"] == "train").sort("problem_id")
    questions = frame["question"].to_list()[:count]
    pool = []
    for solution in frame["solution"].to_list():
        for text in steps.split_solution(solution):
            if steps.ANSWER not in text:  # searched steps: code, with their output when closing
                pool.append(text)
    return questions, pool


def shard_calls(questions: list[str], pool: list[str], children: int, depth: int, seed: int):
    """The PPM calls of one shard's rollout: per depth, every tree's new children."""
    rng = random.Random(seed)
    trajectories: list[list[str]] = [[] for _ in questions]
    calls = []
    for _ in range(depth):
        texts = []
        for question, trajectory in zip(questions, trajectories):
            prompt = steps.sft_prompt(question)
            siblings = rng.sample(pool, children)
            texts += [steps.generation_prefix(prompt, trajectory + [step]) for step in siblings]
            trajectory.append(siblings[0])  # the search goes on below one of them
        calls.append(texts)
    return calls


def calibrate(ppm: PPM, texts: list[str], spread: float = 2.5) -> None:
    """Scale the value head so raw values have std ``spread`` (scores use tanh's range)."""
    values = ppm.raw_values(texts)
    mean, std = statistics.fmean(values), statistics.pstdev(values)
    with torch.no_grad():
        ppm.value_head.weight.mul_(spread / std)
        ppm.value_head.bias.copy_(ppm.value_head.bias - mean * spread / std)


def run_calls(score, calls) -> tuple[list[float], float]:
    started = time.perf_counter()
    scores = [s for texts in calls for s in score(texts)]
    return scores, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--children", type=int, default=3)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--torch-batch", type=int, default=16)
    parser.add_argument(
        "--vllm-dtype", default="auto", help="auto: as the default profile resolves it"
    )
    args = parser.parse_args()

    questions, pool = reference_steps(2 * args.problems)
    # Warm-up: one call of other problems (kernels, allocator); it also calibrates the head.
    warm = shard_calls(questions[args.problems :], pool, args.children, 1, seed=1)
    calls = shard_calls(questions[: args.problems], pool, args.children, args.depth, seed=0)
    texts = [t for c in calls for t in c]

    torch.manual_seed(0)
    ppm = PPM.from_policy(smollm2_folder(), device="cpu", dtype=torch.float32)
    lengths = [len(ids) for ids in ppm.tokenizer(texts)["input_ids"]]
    print(f"{len(calls)} calls of {len(calls[0])} texts, {len(texts)} texts, "
          f"{min(lengths)}-{max(lengths)} tokens (mean {statistics.fmean(lengths):.0f}); "
          f"torch threads {torch.get_num_threads()}", flush=True)  # fmt: skip
    calibrate(ppm, [t for c in warm for t in c])
    folder = ppm.save(default_cache_dir() / "bench" / "ppm")  # what a round's PPM stage saves

    results = {}
    for name, dtype in (("torch fp32", torch.float32), ("torch bf16", torch.bfloat16)):
        ppm.to(dtype)
        ppm.value_head.float()  # the head stays fp32, as in vLLM (its pooling head dtype)
        score = lambda batch: ppm.score(batch, batch_size=args.torch_batch)  # noqa: E731
        run_calls(score, warm)
        scores, seconds = run_calls(score, calls)
        results[name] = (scores, seconds)
        print(f"{name:>12}: {len(texts) / seconds:6.1f} texts/s ({seconds:.1f} s), "
              f"batch {args.torch_batch}", flush=True)  # fmt: skip
    ppm.float()

    vllm_dtype = resolve_dtype(args.vllm_dtype)
    started = time.perf_counter()
    scorer = VLLMScorer(folder, PPMScorerConfig(kind="vllm", dtype=vllm_dtype))
    startup = time.perf_counter() - started
    vllm_score = scorer.score
    run_calls(vllm_score, warm)
    scores, seconds = run_calls(vllm_score, calls)
    name = f"vllm {vllm_dtype}"
    results[name] = (scores, seconds)
    print(f"{name:>12}: {len(texts) / seconds:6.1f} texts/s ({seconds:.1f} s), "
          f"start-up {startup:.1f} s", flush=True)  # fmt: skip

    reference = results["torch fp32"][0]
    for name, (scores, _) in list(results.items())[1:]:
        assert all(math.isfinite(s) for s in scores)
        diffs = [abs(a - b) for a, b in zip(scores, reference)]
        print(f"{name:>12} vs torch fp32: max |score diff| {max(diffs):.4f}, "
              f"mean {statistics.fmean(diffs):.4f}")  # fmt: skip
    vllm_s = results[name][1]
    print(
        f"vllm over torch bf16: {results['torch bf16'][1] / vllm_s:.1f}x; "
        f"start-up is {startup / vllm_s * len(texts):.0f} texts' worth of vLLM scoring"
    )
    scorer.close()
    print(f"speedup: {results['torch fp32'][1] / vllm_s:.1f}x")


if __name__ == "__main__":
    main()
