"""The process preference model: a value head on the round's SFT policy (docs/algorithm.md, 5b).

``PPM`` = the policy's transformer *without* its LM head (``AutoModel``) + a linear value head
(hidden -> 1) on the last hidden state of the last non-padding token of
``prompt + partial solution`` (``steps.generation_prefix``).

Raw value vs score: the one place where the two meet (docs/algorithm.md (deviations), the paper's code).
  * Training works on the raw value ``v`` (:meth:`PPM.forward`, :meth:`PPM.raw_values`): the
    pairwise loss of :func:`pairwise_loss` is ``-log sigmoid(v_chosen - v_rejected)``.
  * Search and evaluation use the score ``tanh(v / 5)`` in [-1, 1] (:meth:`PPM.score`,
    :func:`score_from_value`), the range of Q-values, so a PPM score can initialise a node.
The order of pairs is the same under both (tanh is increasing), but the numbers are not:
never feed ``score`` to the loss or ``raw_values`` to the tree.

Texts longer than ``max_length`` tokens lose their *beginning*: the step being judged is at
the end. A saved PPM is one folder that :meth:`PPM.load` reads back whole: backbone weights
and config, tokenizer, ``value_head.safetensors`` and ``ppm_config.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.io import atomic_dir
from pipeline.models.base import ModelError

SCORE_TEMPERATURE = 5.0  # score = tanh(v / 5) (the paper's code)
CONFIG_FILE = "ppm_config.json"
HEAD_FILE = "value_head.safetensors"
FORMAT = "rstar-ppm"
FORMAT_VERSION = 1


def score_from_value(values: torch.Tensor) -> torch.Tensor:
    """Raw value head output -> search score in [-1, 1]."""
    return torch.tanh(values / SCORE_TEMPERATURE)


def pairwise_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """``-log sigmoid(v_chosen - v_rejected)`` per pair, times its weight (raw values, not scores)."""
    loss = -F.logsigmoid(chosen - rejected)
    return loss * weight if weight is not None else loss


class PPM(torch.nn.Module):
    """Backbone + value head. Build with :meth:`from_policy` (training) or :meth:`load`."""

    def __init__(self, backbone, tokenizer, value_head: torch.nn.Linear, max_length: int = 1024,
                 info: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.backbone = backbone
        self.value_head = value_head
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.info = dict(info or {})
        tokenizer.truncation_side = "left"  # keep the end of a text: the step being judged
        tokenizer.padding_side = "right"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    # ------------------------------------------------------------------ building and saving

    @classmethod
    def from_policy(cls, policy_dir: Path | str, *, max_length: int = 1024, seed: int = 0,
                    device: str | None = None, dtype: torch.dtype | None = None) -> PPM:  # fmt: skip
        """A fresh PPM on an SFT policy: its backbone (LM head dropped) and a new small head."""
        backbone, tokenizer = _load_backbone(Path(policy_dir), device, dtype, what="policy")
        head = torch.nn.Linear(backbone.config.hidden_size, 1)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            head.weight.normal_(0.0, 1.0 / (backbone.config.hidden_size + 1), generator=generator)
            head.bias.zero_()
        ppm = cls(backbone, tokenizer, head, max_length, info={"policy": str(policy_dir)})
        return ppm.to(backbone.device)

    @classmethod
    def load(
        cls, path: Path | str, *, device: str | None = None, dtype: torch.dtype | None = None
    ) -> PPM:
        """Read back a folder written by :meth:`save`; a clear one-line error otherwise."""
        folder = Path(path)
        if not folder.is_dir():
            raise ModelError(f"{folder}: no such PPM folder (run the train_ppm stage first)")
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise ModelError(
                f"{folder}: not a PPM folder (no {CONFIG_FILE}); a policy folder needs PPM.from_policy"
            )
        try:
            config = json.loads(config_path.read_text())
            hidden, max_length = int(config["hidden_size"]), int(config["max_length"])
        except (ValueError, KeyError, TypeError) as error:
            raise ModelError(
                f"{config_path}: unreadable PPM config ({type(error).__name__}: {error})"
            ) from None
        if config.get("format") != FORMAT:
            raise ModelError(
                f"{config_path}: format is {config.get('format')!r}, expected {FORMAT!r}"
            )
        backbone, tokenizer = _load_backbone(folder, device, dtype, what="PPM")
        head = torch.nn.Linear(hidden, 1)
        try:
            from safetensors.torch import load_file

            head.load_state_dict(load_file(str(folder / HEAD_FILE)))
        except Exception as error:  # noqa: BLE001 (missing, truncated or mis-shaped head file)
            raise ModelError(
                f"{folder}: cannot read {HEAD_FILE} ({type(error).__name__}: {_first_line(error)})"
            ) from None
        return cls(backbone, tokenizer, head, max_length, info=config.get("info")).to(
            backbone.device
        )

    def save(self, path: Path | str, extra_files: dict[str, str] | None = None) -> Path:
        """One folder: backbone, tokenizer, value head, config (written beside, then renamed)."""
        from safetensors.torch import save_file

        config = {
            "format": FORMAT, "version": FORMAT_VERSION,
            "hidden_size": self.value_head.in_features, "max_length": self.max_length,
            "score": f"tanh(v / {SCORE_TEMPERATURE:g})", "score_temperature": SCORE_TEMPERATURE,
            "info": self.info,
        }  # fmt: skip
        head = {
            name: tensor.detach().float().cpu().contiguous()
            for name, tensor in self.value_head.state_dict().items()
        }
        with atomic_dir(path) as tmp:
            self.backbone.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            save_file(head, str(tmp / HEAD_FILE))
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
        return Path(path)

    # ------------------------------------------------------------------ values

    @property
    def device(self) -> torch.device:
        return self.value_head.weight.device

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Right-padded token ids, each text cut to its last ``max_length`` tokens."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")  # fmt: skip
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Raw values ``v`` (float32, one per row) at the last non-padding token."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        width = attention_mask.shape[1]
        last = width - 1 - attention_mask.flip(1).argmax(1)  # right or left padding alike
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.value_head(hidden[rows, last].float()).squeeze(-1)

    @torch.no_grad()
    def raw_values(self, texts: Sequence[str], batch_size: int = 16) -> list[float]:
        """The training target ``v`` of each text, in eval mode, batched by length."""
        if not texts:
            return []
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        values: list[float] = [0.0] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = self.encode([texts[i] for i in chunk])
            out = self(**{k: v.to(self.device) for k, v in batch.items()})
            for i, value in zip(chunk, out.tolist()):
                values[i] = value
        self.train(was_training)
        return values

    def score(self, texts: Sequence[str], batch_size: int = 16) -> list[float]:
        """Scores ``tanh(v / 5)`` in [-1, 1] of ``prompt + partial solution`` texts."""
        values = torch.tensor(self.raw_values(texts, batch_size), dtype=torch.float64)
        return score_from_value(values).tolist()


def _load_backbone(folder: Path, device: str | None, dtype: torch.dtype | None, what: str):
    """The transformer of a policy or PPM folder without its LM head; one-line errors."""
    from transformers import AutoModel, AutoTokenizer

    if not folder.is_dir():
        raise ModelError(f"{folder}: no such {what} folder")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: not a Hugging Face model folder (no config.json)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if str(device).startswith("cuda") else torch.float32)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        backbone, info = AutoModel.from_pretrained(str(folder), dtype=dtype, local_files_only=True,
                                                   output_loading_info=True)  # fmt: skip
    except Exception as error:  # noqa: BLE001 (safetensors, JSON, torch errors: a corrupt folder)
        raise ModelError(
            f"{folder}: cannot load the {what} ({type(error).__name__}: {_first_line(error)})"
        ) from None
    missing = [key for key in info.get("missing_keys", ()) if key]
    if missing:
        raise ModelError(
            f"{folder}: the {what} checkpoint lacks {len(missing)} weight(s), e.g. {min(missing)}"
        )
    return backbone.to(device), tokenizer


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
