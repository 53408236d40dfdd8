"""What policy SFT and PPM training share: the config, the loop, splits, batches, model cards.

One :class:`TrainConfig` serves the params groups ``warm_start``, ``train_policy`` and
``train_ppm`` (README.md: one dataclass per group). The loop runs as a plain single
process on CPU and, launched with ``accelerate launch``, data-parallel on several GPUs,
in bf16 autocast where ``bf16`` asks for it; the numbers it needs (steps, shards) are worked
out here, not inside accelerate, so a CPU run and a GPU run read the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from pipeline.config import TrainConfig
from pipeline.ids import hash_position
from pipeline.models.hardware import native_bf16
from pipeline.models.train.checkpoint import Checkpoint, random_state, restore_random_state


class DataError(ValueError):
    """Training data that breaks its contract; the message names the file or column."""


StepCallback = Callable[[int, float], None]


# --------------------------------------------------------------------------- files


def remove_stale_temps(out_dir: Path | str) -> list[Path]:
    """Delete temp folders a killed run left beside ``out_dir`` (``pipeline.io.atomic_dir``
    names them ``.NAME.tmp-PID`` and ``.NAME.old-PID``). Called when a stage starts."""
    out_dir = Path(out_dir)
    if not out_dir.parent.is_dir():
        return []
    stale = [
        path
        for pattern in (f".{out_dir.name}.tmp-*", f".{out_dir.name}.old-*")
        for path in out_dir.parent.glob(pattern)
    ]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def file_sha1(path: Path | str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha1").hexdigest()


def model_card(title: str, summary: str, provenance: dict[str, Any], config: TrainConfig,
               metrics: dict[str, Any]) -> str:  # fmt: skip
    """README.md of a trained folder: where its weights and data came from, and how it did."""
    lines = [
        "---",
        "library_name: transformers",
        "tags: [rstar-math, rstar-data]",
        "---",
        f"# {title}",
        "",
        summary,
        "",
        "## Provenance",
        "",
        *[f"- **{key}**: `{value}`" for key, value in provenance.items()],
        "",
        "## Training config",
        "",
        "```json",
        json.dumps(config.as_dict(), indent=2, sort_keys=True),
        "```",
        "",
        "## Metrics",
        "",
        "```json",
        json.dumps(metrics, indent=2, sort_keys=True, default=str),
        "```",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- splits and batches


def heldout_problems(problem_ids: Sequence[str], fraction: float) -> tuple[set[str], str | None]:
    """Problems held out of training, chosen by a hash of their id (stable across runs).

    The ``int(fraction * n)`` problems with the smallest ``hash_position("heldout:" + id)``
    (pipeline.ids) are held out. Returns the set and,
    when the split is skipped, the reason (fraction 0, or too few problems to hold one out).
    """
    unique = sorted(set(problem_ids), key=lambda pid: (hash_position(f"heldout:{pid}"), pid))
    if fraction <= 0:
        return set(), "heldout_fraction is 0"
    count = int(fraction * len(unique))
    if count == 0 or count >= len(unique):
        return set(), f"too few problems ({len(unique)}) for heldout_fraction {fraction}"
    return set(unique[:count]), None


def length_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Indices grouped into batches of similar length (little padding), batch order shuffled.

    Deterministic in (seed, epoch): the same data gives the same batches on every machine.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def shard(batches: list, process_index: int, num_processes: int) -> list:
    """This process's share; every process gets the same count (DDP needs matching steps)."""
    if num_processes == 1:
        return batches
    usable = len(batches) - len(batches) % num_processes
    return batches[:usable][process_index::num_processes]


# --------------------------------------------------------------------------- accelerate


def make_accelerator(config: TrainConfig):
    """A single process on CPU, or one process per GPU under ``accelerate launch``."""
    try:
        from accelerate import Accelerator
    except ImportError:
        raise RuntimeError(
            "training needs the `accelerate` package: pip install accelerate"
        ) from None
    # Precision is set by `autocast` below, not by accelerate: its state is one per process and
    # refuses a second run in another precision (a notebook, the tests).
    return Accelerator(mixed_precision="no")


def autocast_bf16(config: TrainConfig) -> bool:
    """Whether this run computes in bf16: ``bf16: auto`` asks the hardware."""
    return native_bf16() if config.bf16 == "auto" else bool(config.bf16)


def autocast(config: TrainConfig, accelerator):
    """The context of forward passes: bf16 autocast when the run computes in bf16 (the weights
    and their updates stay fp32), else nothing."""
    return torch.autocast(
        accelerator.device.type, dtype=torch.bfloat16, enabled=autocast_bf16(config)
    )


def is_main_process() -> bool:
    """True in a plain run and in rank 0 of ``accelerate launch``: the process that writes files."""
    try:
        from accelerate import PartialState
    except ImportError:
        return True
    return PartialState().is_main_process


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def enable_checkpointing(model) -> None:
    """Activation (gradient) checkpointing, under either name transformers has used."""
    enable = (
        getattr(model, "activation_checkpointing_enable", None)
        or model.gradient_checkpointing_enable
    )
    enable()
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False


# --------------------------------------------------------------------------- the loop


def optimizer_steps(micro_batches: int, config: TrainConfig) -> int:
    per_epoch = math.ceil(micro_batches / config.grad_accum)
    total = per_epoch * config.epochs
    return min(total, config.max_steps) if config.max_steps else total


def _optimizer(
    model: torch.nn.Module, config: TrainConfig, own_rate: dict[torch.nn.Parameter, float]
) -> torch.optim.Optimizer:
    """AdamW; biases and norm weights (1-d tensors) get no weight decay; each parameter in
    ``own_rate`` gets its own group with that learning rate and no weight decay."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad and parameter not in own_rate:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]  # fmt: skip
    groups += [{"params": [parameter], "lr": rate, "weight_decay": 0.0}
               for parameter, rate in own_rate.items()]  # fmt: skip
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def _schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    """Linear warm-up, then linear decay to 0 at the last step."""
    warmup = int(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_loop(
    model: torch.nn.Module,
    batches_for_epoch: Callable[[int], list[Any]],
    loss_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, torch.Tensor]],
    config: TrainConfig,
    accelerator,
    *,
    reduction: Literal["mean", "sum"],
    on_step: StepCallback | None = None,
    desc: str = "train",
    own_rate: dict[torch.nn.Parameter, float] | None = None,
    checkpoint: Checkpoint | None = None,
) -> tuple[torch.nn.Module, list[float]]:
    """Run the optimizer over the epochs; returns the prepared model and the loss of each step.

    ``batches_for_epoch(epoch)`` gives this process's micro-batches; ``loss_fn(model, batch)``
    returns (loss to optimise, loss to report) of one. With ``reduction="mean"`` the optimised
    loss of a step is the mean over its micro-batches (token-mean SFT loss); with ``"sum"`` it
    is their sum (the PPM loss is summed over the batch, docs/algorithm.md). The reported
    loss of a step is the mean of its micro-batches' reported losses over all processes.
    Gradients sync across processes only on a step's last micro-batch. ``own_rate`` maps
    parameters to their own learning rate (the warm-up and decay still apply). With a
    ``checkpoint``, the state is saved as often as it says and a saved state of the same run
    is resumed: its steps are skipped, the rest run as they would have.
    """
    total = optimizer_steps(len(batches_for_epoch(0)), config)
    optimizer = _optimizer(model, config, own_rate or {})
    scheduler = _schedule(optimizer, total, config.warmup_ratio)
    losses: list[float] = []
    resumed = checkpoint.load() if checkpoint is not None else None
    if resumed is not None:  # before `prepare`, so every process starts from the same state
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        losses = list(resumed["losses"])
        restore_random_state(resumed["random"])
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    bar = tqdm(total=total, initial=len(losses), desc=desc, unit="step",
               disable=not accelerator.is_main_process)  # fmt: skip
    started, done_before = time.perf_counter(), len(losses)
    step = 0
    for epoch in range(config.epochs):
        batches = batches_for_epoch(epoch)
        groups = [
            batches[i : i + config.grad_accum] for i in range(0, len(batches), config.grad_accum)
        ]
        for group in groups:
            if step >= total:
                break
            step += 1
            if step <= done_before:  # taken before the resume
                continue
            step_loss = 0.0
            for index, batch in enumerate(group):
                last = index == len(group) - 1
                with nullcontext() if last else accelerator.no_sync(model):
                    with autocast(config, accelerator):
                        loss, reported = loss_fn(model, batch)
                    if reduction == "mean":
                        loss = loss / len(group)
                    accelerator.backward(loss)
                step_loss += reported.detach().float() / len(group)
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            value = accelerator.reduce(
                torch.as_tensor(step_loss, device=accelerator.device), "mean"
            ).item()
            losses.append(value)
            bar.update(1)
            seconds_per_step = (time.perf_counter() - started) / (len(losses) - done_before)
            bar.set_postfix(loss=f"{value:.4f}", s_step=f"{seconds_per_step:.2f}")
            if on_step is not None:
                on_step(len(losses), value)
            if checkpoint is not None and step < total and checkpoint.due():
                _save_checkpoint(checkpoint, accelerator, model, optimizer, scheduler, losses)
    bar.close()
    model.eval()
    return model, losses


def _save_checkpoint(checkpoint: Checkpoint, accelerator, model, optimizer, scheduler,
                     losses: list[float]) -> None:  # fmt: skip
    # The main process alone, on its own clock: no collective call, so processes that disagree
    # on whether a save is due never wait for each other (data-parallel replicas are equal).
    if accelerator.is_main_process:
        checkpoint.save({
            "model": accelerator.unwrap_model(model).state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "losses": list(losses), "random": random_state(),
        })  # fmt: skip


def loss_summary(losses: list[float]) -> dict[str, float | None]:
    if not losses:
        return {"train_loss_first": None, "train_loss_last": None, "train_loss_mean": None}
    return {
        "train_loss_first": round(losses[0], 6),
        "train_loss_last": round(losses[-1], 6),
        "train_loss_mean": round(sum(losses) / len(losses), 6),
    }
