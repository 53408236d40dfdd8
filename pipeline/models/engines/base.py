"""The engine contract: prompts in, ``n`` completions per prompt out (docs/algorithm.md).

Every engine (transformers on CPU, vllm on GPUs, an OpenAI-compatible server) returns the same
normalised :class:`Completion`, so the search never needs to know which one produced a step:

- ``text`` ends with the stop string that ended it (``parse_step`` relies on it) and holds
  nothing after it; servers that drop the stop string get it put back;
- ``tokens`` is the number of generated tokens (the cost the statistics report);
- ``finish_reason`` is ``"stop"`` (a stop string), ``"eos"`` (the model's end-of-sequence
  token) or ``"length"`` (``max_new_tokens`` ran out).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Self

FinishReason = Literal["stop", "length", "eos"]
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "eos")


@dataclass(frozen=True)
class Completion:
    """One sampled continuation of a prompt."""

    text: str
    tokens: int
    finish_reason: FinishReason


class Engine(ABC):
    """Batched text generation; one list of ``n`` completions per prompt, in prompt order."""

    @abstractmethod
    def generate(
        self,
        prompts: list[str],
        n: int = 1,
        *,
        stop: Sequence[str] = (),
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> list[list[Completion]]:
        """Sample ``n`` continuations of every prompt; ``temperature == 0`` is greedy."""

    def close(self) -> None:
        """Release the model or connections; engines are also context managers."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_request(n: int, max_new_tokens: int, temperature: float, top_p: float) -> None:
    """Reject impossible sampling settings before any work is done (one-line errors)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, str | None]:
    """``text`` up to and including the earliest stop string, and that stop string.

    Engines may run past a stop string (a token can carry characters beyond it, a server may
    ignore it); the contract is that nothing after the first stop string survives.
    """
    best_end, best_stop = None, None
    for candidate in stop:
        if not candidate:
            continue
        at = text.find(candidate)
        end = at + len(candidate)
        if at != -1 and (best_end is None or (end, -len(candidate)) < (best_end, -len(best_stop))):
            best_end, best_stop = end, candidate
    if best_end is None:
        return text, None
    return text[:best_end], best_stop


def own_special_strings(tokenizer) -> tuple[str, ...]:
    """The tokenizer's own pad/bos/eos strings: engines strip them from generated text (they
    decode special tokens, so that added markers such as ``<end_of_step>`` survive)."""
    names = ("pad_token", "bos_token", "eos_token")
    return tuple(sorted({t for t in (getattr(tokenizer, n, None) for n in names) if t}))


def derive_seed(*parts: int) -> int:
    """A 63-bit seed for one stream, e.g. (call seed, prompt index, sample index).

    Hashing keeps the streams of ``seed`` unrelated to those of ``seed + 1``, which a plain
    ``seed + index`` would share between neighbouring calls.
    """
    key = ":".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
