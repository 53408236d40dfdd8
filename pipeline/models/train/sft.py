"""Policy SFT: fine-tune a causal LM on prompt + response, loss on the response only.

docs/algorithm.md (training) and the warm start of round 0: the training text of an ``sft``
row is ``prompt + "\\n" + response`` followed by the tokenizer's EOS, so the policy learns to
stop after ``<end_of_answer>``. Prompt tokens get label -100. The seven step markers of
docs/algorithm.md become special tokens of the tokenizer the first time a model is trained
(never twice), so ``<end_of_step>`` is one token the engine can stop on.

Decoding note for engines: the markers are *special* tokens, so decode generated ids with
``skip_special_tokens=False`` or they disappear from the text.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
import torch.nn.functional as F

from pipeline.io import atomic_dir
from pipeline.models.base import ModelError, folder_signature, load_causal_lm
from pipeline.models.train.checkpoint import Checkpoint
from pipeline.models.train.common import (
    DataError,
    StepCallback,
    TrainConfig,
    autocast,
    enable_checkpointing,
    file_sha1,
    heldout_problems,
    length_batches,
    loss_summary,
    make_accelerator,
    model_card,
    remove_stale_temps,
    seed_everything,
    shard,
    train_loop,
)
from pipeline.search.steps import MARKERS

IGNORE = -100
SFTData = Sequence[tuple[str, str]] | pl.DataFrame


@dataclass(frozen=True)
class Example:
    """One SFT row; ``problem_id`` decides its side of the held-out split."""

    problem_id: str
    prompt: str
    response: str


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def as_examples(data: SFTData) -> list[Example]:
    """Rows of an ``sft`` frame (or (prompt, response) pairs, keyed by prompt) as examples."""
    if isinstance(data, pl.DataFrame):
        missing = {"prompt", "response"} - set(data.columns)
        if missing:
            raise DataError(f"SFT data lacks column(s) {', '.join(sorted(missing))}")
        ids = (
            data["problem_id"].to_list()
            if "problem_id" in data.columns
            else data["prompt"].to_list()
        )
        return [Example(str(pid), p, r) for pid, p, r in zip(ids, data["prompt"], data["response"])]
    return [Example(hashlib.sha1(prompt.encode()).hexdigest()[:16], prompt, response)
            for prompt, response in data]  # fmt: skip


# --------------------------------------------------------------------------- tokens


def add_step_markers(tokenizer, model) -> list[str]:
    """Make the step markers special tokens (only those missing) and grow the embeddings.

    New rows are initialised at the mean of the old embeddings (transformers' mean resizing).
    Returns the markers added; an already-trained tokenizer gets none, so nothing duplicates.
    """
    present = tokenizer.get_added_vocab()
    missing = [marker for marker in MARKERS if marker not in present]
    if missing:
        tokenizer.add_special_tokens(
            {"extra_special_tokens": missing}, replace_extra_special_tokens=False
        )
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return missing


def learn_new_rows_only(model, first_new_row: int) -> list[torch.nn.Parameter]:
    """The embedding matrices (input and output, once if tied), set to learn only the rows from
    ``first_new_row`` on: the gradient of every older row is zeroed.

    Fresh marker rows start at the mean embedding, where the model never predicts them; at the
    base learning rate they barely move in a short warm start. The caller gives these matrices
    their own, larger rate, which old rows must not feel (the softmax sends every output row a
    gradient at every step), hence the freeze.
    """

    def zero_old_rows(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:first_new_row] = 0
        return grad

    matrices: list[torch.nn.Parameter] = []
    for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
        weight = getattr(layer, "weight", None)
        if weight is not None and weight.requires_grad and all(weight is not m for m in matrices):
            weight.register_hook(zero_old_rows)
            matrices.append(weight)
    return matrices


def encode(tokenizer, example: Example, max_length: int) -> Encoded | None:
    """Token ids and labels of ``prompt + "\\n" + response + EOS``; None if no response fits.

    The text is tokenized whole, as the engine will see it; the prompt boundary is where the
    tokens of ``prompt + "\\n"`` stop agreeing with it. Long examples lose their tail.
    """
    full = tokenizer(example.prompt + "\n" + example.response).input_ids
    prompt = tokenizer(example.prompt + "\n").input_ids
    boundary = 0
    while boundary < min(len(prompt), len(full)) and prompt[boundary] == full[boundary]:
        boundary += 1
    ids = full + [tokenizer.eos_token_id]
    if boundary >= min(len(ids), max_length):
        return None
    labels = [IGNORE] * boundary + ids[boundary:]
    return Encoded(ids[:max_length], labels[:max_length], truncated=len(ids) > max_length)


def collate(rows: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; padding is masked out of attention and labels."""
    width = max(len(row.input_ids) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


# --------------------------------------------------------------------------- loss


class ResponseLoss(torch.nn.Module):
    """Causal-LM cross-entropy over the labelled (response) tokens only.

    The LM head runs on the hidden states of labelled positions alone: with a 49k-token
    vocabulary the logits dominate a CPU step, and prompt and padding logits are never needed.
    Equal to ``model(..., labels=labels).loss`` for models whose logits are ``lm_head(hidden)``
    (Llama, Qwen, Mistral; not models with logit soft-capping). Returns (loss sum, token count).
    """

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model.base_model(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE
        logits = self.model.get_output_embeddings()(hidden[:, :-1][keep])
        loss_sum = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
        return loss_sum, keep.sum()


@torch.no_grad()
def mean_loss(
    wrapper: ResponseLoss, batches: list[dict], accelerator, config: TrainConfig
) -> float | None:
    """Token-mean loss over ``batches`` (this process's share), reduced over processes."""
    wrapper.eval()
    totals = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
    for batch in batches:
        with autocast(config, accelerator):
            loss_sum, count = wrapper(**{k: v.to(accelerator.device) for k, v in batch.items()})
        totals += torch.stack([loss_sum.double(), count.double()])
    totals = accelerator.reduce(totals, "sum")
    return round(float(totals[0] / totals[1]), 6) if totals[1] > 0 else None


# --------------------------------------------------------------------------- training


def split_examples(
    rows: list[Example], heldout: SFTData | None, fraction: float
) -> tuple[list[Example], list[Example], str | None]:
    """(train, held-out, why the split was skipped): explicit ``heldout`` rows, or a share of
    the problems chosen by hash of ``problem_id`` (never both sides of one problem)."""
    if heldout is not None:
        return rows, as_examples(heldout), None
    held, skipped = heldout_problems([row.problem_id for row in rows], fraction)
    train = [row for row in rows if row.problem_id not in held]
    return train, [row for row in rows if row.problem_id in held], skipped


def train_sft(
    model_dir: Path | str,
    examples: SFTData,
    out_dir: Path | str,
    config: TrainConfig,
    *,
    heldout: SFTData | None = None,
    source: Path | str | None = None,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Fine-tune the causal LM in ``model_dir`` on ``examples``; write it to ``out_dir``.

    ``heldout`` gives the held-out examples explicitly; without it, ``config.heldout_fraction``
    of the problems are held out by hash of ``problem_id``. ``source`` (the Parquet file the
    examples came from) is recorded with its sha1 in the model card. With no usable examples
    the starting model is copied unchanged, so a round with an empty SFT set still has a policy.
    ``out_dir`` appears only when the run finishes (written beside it, then renamed); a run
    killed after ``config.checkpoint_minutes`` resumes from its checkpoint beside it.
    """
    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    remove_stale_temps(out_dir)
    seed_everything(config.seed)
    accelerator = make_accelerator(config)
    rows = as_examples(examples)
    metrics: dict[str, Any] = {"examples": len(rows), "start_model": str(model_dir)}
    if source is not None:
        metrics |= {"source": str(source), "source_sha1": file_sha1(source)}
    train_rows, held_rows, skipped = split_examples(rows, heldout, config.heldout_fraction)
    metrics |= {"heldout_problems": len({row.problem_id for row in held_rows}),
                "heldout_examples": len(held_rows)}  # fmt: skip
    if skipped:
        metrics["heldout_skipped"] = skipped
    if not train_rows:  # nothing to learn: do not even load the model
        return _copy_unchanged(model_dir, out_dir, accelerator, metrics, started)

    model, tokenizer = load_causal_lm(model_dir)
    if tokenizer.eos_token_id is None:
        raise ModelError(
            f"{model_dir}: the tokenizer has no EOS token; SFT appends EOS to every response"
        )
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    markers_before = set(tokenizer.get_added_vocab())
    metrics["markers_added"] = add_step_markers(tokenizer, model)
    own_rate = {}
    if metrics["markers_added"] and config.new_token_learning_rate > config.learning_rate:
        # new ids follow the old vocabulary (and its padding rows, if any)
        first_new = min(tokenizer.convert_tokens_to_ids(metrics["markers_added"]))
        matrices = learn_new_rows_only(model, first_new)
        own_rate = dict.fromkeys(matrices, config.new_token_learning_rate)
    encoded = [e for e in (encode(tokenizer, row, config.max_length) for row in train_rows) if e]
    held = [e for e in (encode(tokenizer, row, config.max_length) for row in held_rows) if e]
    metrics |= {"train_examples": len(encoded), "dropped_too_long": len(train_rows) - len(encoded),
                "truncated": sum(e.truncated for e in encoded),
                "response_tokens": sum(sum(t != IGNORE for t in e.labels) for e in encoded)}  # fmt: skip
    if not encoded:
        return _copy_unchanged(model_dir, out_dir, accelerator, metrics, started)
    if config.gradient_checkpointing:
        enable_checkpointing(model)

    wrapper = ResponseLoss(model).to(accelerator.device)
    held_batches = _batches(held, pad_id, config, 0, accelerator, equal_shards=False)
    metrics["heldout_loss_before"] = mean_loss(wrapper, held_batches, accelerator, config)
    lengths = [len(e.input_ids) for e in encoded]

    def batches_for_epoch(epoch: int) -> list[dict]:
        return _batches(
            encoded, pad_id, config, epoch, accelerator, equal_shards=True, lengths=lengths
        )

    def loss_fn(model_: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        loss_sum, count = model_(**{k: v.to(accelerator.device) for k, v in batch.items()})
        loss = loss_sum / count.clamp(min=1)
        return loss, loss

    checkpoint = Checkpoint.for_run(
        out_dir, config, start=folder_signature(model_dir),
        train=[vars(row) for row in train_rows], heldout=[vars(row) for row in held_rows],
    )  # fmt: skip
    prepared, losses = train_loop(wrapper, batches_for_epoch, loss_fn, config, accelerator,
                                  reduction="mean", on_step=on_step, desc="sft",
                                  own_rate=own_rate, checkpoint=checkpoint)  # fmt: skip
    wrapper = accelerator.unwrap_model(prepared)
    metrics["heldout_loss_after"] = mean_loss(wrapper, held_batches, accelerator, config)
    metrics |= loss_summary(losses) | {"optimizer_steps": len(losses), "trained": True}
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    if accelerator.is_main_process:
        _save_policy(wrapper.model, tokenizer, out_dir, config, metrics, model_dir, markers_before)
        if checkpoint is not None:
            checkpoint.remove()
    accelerator.wait_for_everyone()
    return metrics


def _batches(rows: list[Encoded], pad_id: int, config: TrainConfig, epoch: int, accelerator, *,
             equal_shards: bool, lengths: list[int] | None = None) -> list[dict]:  # fmt: skip
    """This process's length-bucketed batches of ``rows`` for ``epoch``."""
    lengths = lengths or [len(row.input_ids) for row in rows]
    batches = length_batches(lengths, config.batch_size, config.seed, epoch)
    if equal_shards:  # training: every process must take the same number of steps
        batches = shard(batches, accelerator.process_index, accelerator.num_processes)
    else:  # evaluation: every row counts once, shares may differ
        batches = batches[accelerator.process_index :: accelerator.num_processes]
    return [collate([rows[i] for i in batch], pad_id) for batch in batches]


def _copy_unchanged(model_dir: Path, out_dir: Path, accelerator, metrics: dict[str, Any],
                    started: float) -> dict[str, Any]:  # fmt: skip
    """No usable SFT rows: the output is the starting model, byte for byte (the metrics say so)."""
    if accelerator.is_main_process:
        with atomic_dir(out_dir) as tmp:
            shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
    accelerator.wait_for_everyone()
    note = "no usable SFT examples: the starting model is copied unchanged"
    return metrics | {
        "trained": False,
        "note": note,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _save_policy(model, tokenizer, out_dir: Path, config: TrainConfig, metrics: dict[str, Any],
                 model_dir: Path, markers_before: set[str]) -> None:  # fmt: skip
    """Weights, tokenizer, generation config and model card.

    The weights stay fp32 even after bf16 autocast: the next round fine-tunes them, and
    rounding to bf16 at each hand-off moves a weight by up to half a bf16 step (about 6e-5 at
    a typical 0.03), as much as one optimizer step at the rounds' learning rate."""
    model.config.use_cache = True
    eos = model.generation_config.eos_token_id
    eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    if tokenizer.eos_token_id not in eos_ids:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    provenance = {
        "start model": model_dir,
        "markers already present": sorted(markers_before & set(MARKERS)),
    }
    if "source" in metrics:
        provenance |= {"SFT data": metrics["source"], "SFT data sha1": metrics["source_sha1"]}
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        card = model_card(
            "rStar-Math policy (SFT)",
            "Policy fine-tuned on code-augmented CoT solutions (prompt + response, loss on the "
            "response, EOS appended) by rstar-data (docs/algorithm.md-2).",
            provenance, config, metrics,
        )  # fmt: skip
        (tmp / "README.md").write_text(card)
