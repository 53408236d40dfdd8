"""Resumable training: the loop's whole state, saved every few minutes beside the output folder.

A killed training stage (a lost GPU node, Ctrl-C, a time limit) resumes at its last checkpoint
when it runs again: the weights, the optimizer's moments, the learning-rate schedule, the
losses so far and the random state are restored, and the steps already taken are skipped, so
the resumed run ends with the weights of an uninterrupted one (on several GPUs, every process
takes the main process's random state). The checkpoint is named by a
fingerprint of the run (config, starting model, data), so a changed input starts over; it is
removed once the trained model is saved. A checkpoint that cannot be read is reported and
ignored: the run starts over rather than fail.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.config import TrainConfig
from pipeline.ids import fingerprint
from pipeline.io import atomic_file

log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    """Where one training run keeps its state, and how often it writes it."""

    path: Path
    key: str  # pipeline.ids.fingerprint of what shapes the run
    every_s: float
    _last_save: float = field(default_factory=time.perf_counter)

    @classmethod
    def for_run(cls, out_dir: Path | str, config: TrainConfig, **inputs: Any) -> Checkpoint | None:
        """``.NAME.resume.pt`` next to ``out_dir``, named by the run's knobs (all but how often
        to save) and ``inputs`` (the starting model's and the data's identity); None when
        ``config.checkpoint_minutes`` is 0 (off)."""
        if config.checkpoint_minutes <= 0:
            return None
        knobs = {
            key: value for key, value in config.as_dict().items() if key != "checkpoint_minutes"
        }
        out_dir = Path(out_dir)
        return cls(out_dir.parent / f".{out_dir.name}.resume.pt",
                   fingerprint({"config": knobs, **inputs}), config.checkpoint_minutes * 60)  # fmt: skip

    def load(self) -> dict[str, Any] | None:
        """The saved state of this very run, or None (none saved, another run's, unreadable)."""
        if not self.path.is_file():
            return None
        try:  # weights_only: tensors and plain values, never code from the file
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any damage means: start over
            log.warning("%s: unreadable checkpoint, training starts over (%s)", self.path, error)
            return None
        if not isinstance(state, dict) or state.get("key") != self.key:
            return None
        return state

    def due(self) -> bool:
        return time.perf_counter() - self._last_save >= self.every_s

    def save(self, state: dict[str, Any]) -> None:
        with atomic_file(self.path) as temporary:
            torch.save(state | {"key": self.key}, temporary)
        self._last_save = time.perf_counter()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def random_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
