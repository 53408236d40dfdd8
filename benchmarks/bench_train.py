"""Training speed: SFT of SmolLM2-135M in fp32 against bf16 autocast (`bf16: auto`).

The default profile's three training stages (warm start, policy, PPM) take `bf16: auto`: bf16
autocast where the hardware computes bf16 natively (pipeline.models.hardware), with the weights
and their updates kept in fp32. This script trains the same steps both ways in one process, on
the warm start's data (the default profile's bootstrap problems: reference solutions of level 1
and 2 train problems) at the default profile's batch size and length, and prints the seconds per
optimizer step (the first step of each run, allocator and kernel warm-up, is left out) and the
held-out loss each run reaches. Last line: `speedup: N.Nx` (fp32 time over bf16 time).

On a CPU without bf16 instructions `auto` stays fp32, and `--force-bf16` shows what bf16 would
cost there.

    .venv/bin/python benchmarks/bench_train.py [--steps 6] [--force-bf16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import yaml  # noqa: E402

from benchmarks.bench_engine import smollm2_folder  # noqa: E402
from pipeline.config import CurriculumConfig, TrainConfig  # noqa: E402
from pipeline.models.hardware import native_bf16  # noqa: E402
from pipeline.models.train.sft import train_sft  # noqa: E402
from pipeline.problems import load_problems  # noqa: E402
from stages.warm_start import reference_examples  # noqa: E402


def warm_start_examples(folder: Path):
    """The default profile's warm-start rows, built as the stage builds them."""
    profile = yaml.safe_load((REPO / "profiles" / "default.yaml").read_text())
    seeds = profile["seeds"]
    frame = load_problems("generated", n=seeds["n"], seed=seeds["seed"], levels=seeds["levels"])
    path = folder / "problems.parquet"
    frame.write_parquet(path)
    return reference_examples(path, CurriculumConfig(**profile["curriculum"])), profile


def timed_run(model: Path, examples, out: Path, config: TrainConfig) -> tuple[float, dict]:
    """Seconds per optimizer step after the first, and the run's metrics."""
    stamps: list[float] = []
    metrics = train_sft(
        model, examples, out, config, on_step=lambda *_: stamps.append(time.perf_counter())
    )
    per_step = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.fmean(per_step), metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run")
    parser.add_argument("--force-bf16", action="store_true",
                        help="autocast to bf16 even where the CPU lacks bf16 instructions")  # fmt: skip
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is left out)")

    model = smollm2_folder()
    with tempfile.TemporaryDirectory() as tmp:
        examples, profile = warm_start_examples(Path(tmp))
        settings = profile["warm_start"]
        base = TrainConfig(
            epochs=100, max_steps=args.steps, batch_size=settings["batch_size"],
            max_length=settings["max_length"], learning_rate=settings["learning_rate"],
            new_token_learning_rate=settings["new_token_learning_rate"], heldout_fraction=0.1,
        )  # fmt: skip
        bf16 = True if args.force_bf16 else "auto"
        print(f"{len(examples)} warm-start examples, batch {base.batch_size}, {args.steps} steps; "
              f"native bf16 here: {native_bf16()}", flush=True)  # fmt: skip
        results = {}
        for name, config in (("fp32", base), ("bf16", replace(base, bf16=bf16))):
            seconds, metrics = timed_run(model, examples, Path(tmp) / name, config)
            results[name] = seconds
            print(f"{name}: {seconds:.2f} s/step, held-out loss "
                  f"{metrics['heldout_loss_before']:.3f} -> {metrics['heldout_loss_after']:.3f}",
                  flush=True)  # fmt: skip
    print(f"speedup: {results['fp32'] / results['bf16']:.1f}x")


if __name__ == "__main__":
    main()
