"""PPM training: pairwise preference loss on step pairs (docs/algorithm.md, "PPM loss").

The PPM of a round starts from that round's SFT policy, never from the previous PPM
(docs/algorithm.md, deviations). It is trained on the ``train`` split of the round's ``pairs`` table with
``-log sigmoid(v(prefix + chosen) - v(prefix + rejected))`` times the pair weight, summed over
the batch, on raw values (see :mod:`pipeline.models.ppm`). Held-out (``split == 'test'``) pair
accuracy and loss are measured before and after, so a report shows what training bought.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

from pipeline.models.base import folder_signature
from pipeline.models.ppm import PPM, pairwise_loss, score_from_value
from pipeline.models.train.checkpoint import Checkpoint
from pipeline.models.train.common import (
    DataError,
    StepCallback,
    TrainConfig,
    autocast,
    enable_checkpointing,
    file_sha1,
    length_batches,
    loss_summary,
    make_accelerator,
    model_card,
    remove_stale_temps,
    seed_everything,
    shard,
    train_loop,
)

PAIR_COLUMNS = ("prefix", "chosen", "rejected", "weight", "split")


@dataclass(frozen=True)
class Pair:
    chosen: str  # prefix + chosen step
    rejected: str  # prefix + rejected step
    weight: float


def read_pairs(path: Path | str) -> tuple[list[Pair], list[Pair]]:
    """(train, test) pairs of a ``pairs`` Parquet file; a missing column is a one-line error."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such pairs file (run the pairs stage first)")
    frame = pl.read_parquet(path)
    missing = [column for column in PAIR_COLUMNS if column not in frame.columns]
    if missing:
        raise DataError(f"{path}: pairs table lacks column(s) {', '.join(missing)}")
    unknown = set(frame["split"].unique().to_list()) - {"train", "test"}
    if unknown:
        raise DataError(
            f"{path}: split must be 'train' or 'test', found {sorted(map(str, unknown))}"
        )
    split: dict[str, list[Pair]] = {"train": [], "test": []}
    for row in frame.select(PAIR_COLUMNS).iter_rows(named=True):
        pair = Pair(
            row["prefix"] + row["chosen"], row["prefix"] + row["rejected"], float(row["weight"])
        )
        split[row["split"]].append(pair)
    return split["train"], split["test"]


def _values(
    model: torch.nn.Module, ppm: PPM, pairs: Sequence[Pair], device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw values of chosen and rejected texts of ``pairs``, in one forward pass."""
    batch = ppm.encode([p.chosen for p in pairs] + [p.rejected for p in pairs])
    values = model(**{k: v.to(device) for k, v in batch.items()})
    return values[: len(pairs)], values[len(pairs) :]


@torch.no_grad()
def evaluate_pairs(
    ppm: PPM, pairs: Sequence[Pair], accelerator, config: TrainConfig
) -> dict[str, float | None]:
    """Pair accuracy (score(chosen) > score(rejected); ties are wrong) and mean pair loss."""
    if not pairs:
        return {"accuracy": None, "loss": None}
    ppm.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # correct, loss, count
    mine = list(pairs)[accelerator.process_index :: accelerator.num_processes]
    for start in range(0, len(mine), config.batch_size):
        chunk = mine[start : start + config.batch_size]
        with autocast(config, accelerator):
            chosen, rejected = _values(ppm, ppm, chunk, accelerator.device)
        correct = score_from_value(chosen.float()) > score_from_value(rejected.float())
        totals += torch.stack([correct.sum().double(), pairwise_loss(chosen, rejected).sum().double(),
                               torch.tensor(float(len(chunk)), dtype=torch.float64, device=totals.device)])  # fmt: skip
    totals = accelerator.reduce(totals, "sum")
    return {
        "accuracy": round(float(totals[0] / totals[2]), 6),
        "loss": round(float(totals[1] / totals[2]), 6),
    }


def train_ppm(
    policy_dir: Path | str,
    pairs_path: Path | str,
    out_dir: Path | str,
    config: TrainConfig,
    *,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Train a PPM from the SFT policy in ``policy_dir`` on ``pairs_path``; save to ``out_dir``.

    With no train pairs the PPM is saved untrained (fresh head), so a tiny round still yields
    the folder the next round expects; the metrics say so. ``out_dir`` appears only when done;
    a run killed after ``config.checkpoint_minutes`` resumes from its checkpoint beside it.
    """
    started = time.perf_counter()
    policy_dir, pairs_path, out_dir = Path(policy_dir), Path(pairs_path), Path(out_dir)
    remove_stale_temps(out_dir)
    seed_everything(config.seed)
    accelerator = make_accelerator(config)
    train_pairs, test_pairs = read_pairs(pairs_path)
    metrics: dict[str, Any] = {
        "pairs": len(train_pairs) + len(test_pairs), "train_pairs": len(train_pairs),
        "test_pairs": len(test_pairs), "policy": str(policy_dir),
        "source": str(pairs_path), "source_sha1": file_sha1(pairs_path),
    }  # fmt: skip
    if not test_pairs:
        metrics["heldout_skipped"] = "no test pairs (split == 'test'): no held-out accuracy"

    ppm = PPM.from_policy(policy_dir, max_length=config.max_length, seed=config.seed,
                          device=str(accelerator.device), dtype=torch.float32)  # fmt: skip
    before = evaluate_pairs(ppm, test_pairs, accelerator, config)
    metrics |= {
        "heldout_accuracy_before": before["accuracy"],
        "heldout_loss_before": before["loss"],
    }

    checkpoint = None  # only a run with train pairs trains, and so may leave one
    if not train_pairs:
        metrics |= {"trained": False, "note": "no train pairs: the PPM is saved untrained (fresh value head)",
                    "heldout_accuracy_after": before["accuracy"], "heldout_loss_after": before["loss"]}  # fmt: skip
        losses: list[float] = []
    else:
        if config.gradient_checkpointing:
            enable_checkpointing(ppm.backbone)
        lengths = [len(p.chosen) + len(p.rejected) for p in train_pairs]

        def batches_for_epoch(epoch: int) -> list[list[Pair]]:
            batches = length_batches(lengths, config.batch_size, config.seed, epoch)
            return [[train_pairs[i] for i in batch]
                    for batch in shard(batches, accelerator.process_index, accelerator.num_processes)]  # fmt: skip

        def loss_fn(model: torch.nn.Module, batch: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
            """Weighted loss summed over the pairs (optimised); unweighted pair mean (reported)."""
            chosen, rejected = _values(model, ppm, batch, accelerator.device)
            weight = torch.tensor([p.weight for p in batch], device=chosen.device)
            per_pair = pairwise_loss(chosen.float(), rejected.float())
            return (per_pair * weight).sum(), per_pair.mean()

        checkpoint = Checkpoint.for_run(
            out_dir, config, policy=folder_signature(policy_dir), pairs=metrics["source_sha1"]
        )
        prepared, losses = train_loop(ppm, batches_for_epoch, loss_fn, config, accelerator,
                                      reduction="sum", on_step=on_step, desc="ppm",
                                      checkpoint=checkpoint)  # fmt: skip
        ppm = accelerator.unwrap_model(prepared)
        after = evaluate_pairs(ppm, test_pairs, accelerator, config)
        metrics |= {"heldout_accuracy_after": after["accuracy"], "heldout_loss_after": after["loss"],
                    "trained": True}  # fmt: skip
    metrics |= loss_summary(losses) | {"optimizer_steps": len(losses)}
    metrics["seconds"] = round(time.perf_counter() - started, 2)

    if accelerator.is_main_process:
        _save(ppm, out_dir, config, metrics)
        if checkpoint is not None:
            checkpoint.remove()
    accelerator.wait_for_everyone()
    return metrics


def _save(ppm: PPM, out_dir: Path, config: TrainConfig, metrics: dict[str, Any]) -> None:
    if getattr(ppm.backbone, "config", None) is not None:
        ppm.backbone.config.use_cache = True
    ppm.info |= {
        "pairs": metrics["source"],
        "pairs_sha1": metrics["source_sha1"],
        "policy": metrics["policy"],
    }
    provenance = {"SFT policy (start)": metrics["policy"], "pairs": metrics["source"],
                  "pairs sha1": metrics["source_sha1"]}  # fmt: skip
    card = model_card("rStar-Math process preference model (PPM)",
                      "Value head on the round's SFT policy, trained with the pairwise loss "
                      "-log sigmoid(v_chosen - v_rejected) on raw values; scores are tanh(v / 5) "
                      "(docs/algorithm.md). Load with pipeline.models.ppm.PPM.load(folder).",
                      provenance, config, metrics)  # fmt: skip
    ppm.save(out_dir, extra_files={"README.md": card})
