"""Training steps with glibc's default allocator thresholds against `keep_freed_memory`.

Every stage calls pipeline.memory.keep_freed_memory when it starts (stages/__init__.py): freed
blocks stay in the process instead of going back to the kernel, so a step's large tensors (the
logits over a 49k vocabulary, their gradient, the activations) reuse pages instead of faulting
in fresh zeroed ones. This script times SFT steps (forward, backward, AdamW) of a random Llama
with SmolLM2's vocabulary, first with the defaults, then, in the same process, with the raised
thresholds: the baseline must run first, as the thresholds cannot be put back to glibc's
adaptive default. The first steps of each run (warm-up) are left out.
`--size tiny` is the smoke profile's model and warm-start batch; `--size smollm2` is
SmolLM2-135M's shape at the default profile's policy batch (8 x 320 tokens), in bf16 autocast.
Last line: `speedup: N.Nx` (default seconds per step over ours).

    .venv/bin/python benchmarks/bench_memory.py [--size tiny|smollm2] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from pipeline.memory import keep_freed_memory  # noqa: E402
from pipeline.models.train.sft import IGNORE, ResponseLoss  # noqa: E402

VOCAB = 49152 + 7  # SmolLM2's tokenizer and the seven step markers
SIZES = {  # model shape, batch (rows, tokens, labelled tokens a row), bf16 autocast
    "tiny": (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, intermediate_size=128), (4, 150, 75), False),
    "smollm2": (dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, intermediate_size=1536), (8, 320, 200), True),
}  # fmt: skip


def seconds_per_step(size: str, steps: int, warmup: int) -> float:
    shape, (rows, tokens, labelled), bf16 = SIZES[size]
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, tie_word_embeddings=True, **shape)
    model = LlamaForCausalLM(config)
    loss = ResponseLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    input_ids = torch.randint(0, VOCAB, (rows, tokens))
    labels = input_ids.clone()
    labels[:, : tokens - labelled] = IGNORE
    mask = torch.ones_like(input_ids)
    times = []
    for step in range(warmup + steps):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss_sum, count = loss(input_ids, mask, labels)
        (loss_sum / count).backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (tiny 20, smollm2 3)")
    args = parser.parse_args()
    steps = args.steps or (20 if args.size == "tiny" else 3)
    warmup = 3 if args.size == "tiny" else 1
    print(
        f"{args.size}: {steps} timed steps after {warmup} warm-up, {torch.get_num_threads()} threads"
    )
    default = seconds_per_step(args.size, steps, warmup)
    print(f"glibc defaults:     {default:.3f} s/step")
    if not keep_freed_memory():
        sys.exit("keep_freed_memory: this C library has no mmap/trim thresholds (not glibc)")
    ours = seconds_per_step(args.size, steps, warmup)
    print(f"keep_freed_memory:  {ours:.3f} s/step")
    print(f"speedup: {default / ours:.1f}x")


if __name__ == "__main__":
    main()
