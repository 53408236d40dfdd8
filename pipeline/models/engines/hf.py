"""The transformers engine: batched sampling on CPU (the default engine, docs/algorithm.md).

Why a decode loop of our own rather than ``model.generate``: MCTS asks for ``n`` samples of
many prompts whose steps end at very different lengths. Here

- each prompt is prefilled once and its KV cache is shared by its ``n`` samples;
- a row that hit a stop string, EOS or its budget leaves the batch (its cache rows are
  dropped), so short steps stop costing compute at once;
- every sample draws its noise from its own generator, seeded by (seed, prompt, sample), so a
  completion does not depend on which other prompts share its batch or on ``batch_size``.

Prompts are left-padded; position ids follow the attention mask, so a prompt's greedy output
is the same alone or in a batch of prompts of other lengths.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.models.engines.base import (
    Completion,
    Engine,
    check_request,
    cut_at_stop,
    derive_seed,
    own_special_strings,
)

ProgressCallback = Callable[[int, int], None]  # (rows done, rows total)


@dataclass
class _Row:
    """One sample being generated: which prompt, which sample, and its tokens so far."""

    prompt_index: int
    sample_index: int
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = "length"


class TransformersEngine(Engine):
    """Sampling with a local Hugging Face causal LM folder (fp32 on CPU by default)."""

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        batch_size: int = 32,
        threads: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        from pipeline.models.base import load_causal_lm  # the one loader with clear errors

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if device == "cpu":
            torch.set_num_threads(threads or _available_cores())
        self.model, self.tokenizer = load_causal_lm(model, dtype=dtype, device=device)
        self.model.eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.progress = progress
        self._eos_ids = _eos_token_ids(self.model, self.tokenizer)
        self._pad_id = _pad_token_id(self.tokenizer, self._eos_ids)
        self._strip = own_special_strings(self.tokenizer)
        self._stop_criteria: dict[tuple[str, ...], Callable] = {}
        self._cache_kwarg = _cache_kwarg_name(self.model)

    # ------------------------------------------------------------------ public API

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
        check_request(n, max_new_tokens, temperature, top_p)
        stop = tuple(s for s in stop if s)
        greedy = temperature == 0
        samples = 1 if greedy else n  # greedy samples are identical: compute one, copy it
        encoded = [self.tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
        rows = [_Row(i, j) for i in _by_length(encoded) for j in range(samples)]
        done = 0
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            self._generate_batch(batch, encoded, stop, max_new_tokens, temperature, top_p, seed)
            done += len(batch)
            if self.progress is not None:
                self.progress(done, len(rows))
        results: list[list[Completion]] = [[] for _ in prompts]
        for row in sorted(rows, key=lambda r: (r.prompt_index, r.sample_index)):
            results[row.prompt_index].append(self._completion(row, stop))
        if greedy:
            results = [completions * n for completions in results]
        return results

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        self._stop_criteria.clear()

    # ------------------------------------------------------------------ one micro-batch

    @torch.inference_mode()
    def _generate_batch(
        self,
        rows: list[_Row],
        encoded: list[list[int]],
        stop: tuple[str, ...],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> None:
        """Prefill each distinct prompt once, then decode until every row has finished."""
        prompt_ids = sorted({row.prompt_index for row in rows})
        input_ids, mask = self._left_pad([encoded[i] for i in prompt_ids])
        cache = self._new_cache()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self._forward(input_ids, mask, positions, cache)
        # Expand the prompts' cache to one row per sample (the shared-prefix reuse).
        slot = {prompt: k for k, prompt in enumerate(prompt_ids)}
        expand = torch.tensor([slot[row.prompt_index] for row in rows], device=self.device)
        cache.batch_select_indices(expand)
        logits, mask = logits[expand], mask[expand]
        next_position = positions[expand, -1] + 1
        generators = [self._generator(seed, row) for row in rows]
        active = list(range(len(rows)))  # indices into `rows` of the rows still running
        generated = torch.empty((len(rows), 0), dtype=torch.long, device=self.device)
        criteria = self._criteria(stop)

        for step in range(max_new_tokens):
            tokens = _sample(logits, temperature, top_p, [generators[i] for i in active])
            generated = torch.cat([generated, tokens[:, None]], dim=1)
            stopped = criteria(generated) if criteria is not None else None
            running = [rows[i] for i in active]
            keep = self._record(running, tokens, stopped, last=step + 1 == max_new_tokens)
            if not keep:  # every row finished (the last step keeps none)
                break
            if len(keep) < len(active):  # finished rows leave the batch and its cache
                keep_t = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(keep_t)
                tokens, mask = tokens[keep_t], mask[keep_t]
                next_position, generated = next_position[keep_t], generated[keep_t]
                active = [active[k] for k in keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            logits = self._forward(tokens[:, None], mask, next_position[:, None], cache)
            next_position = next_position + 1

    def _record(
        self, running: list[_Row], tokens: torch.Tensor, stopped: torch.Tensor | None, last: bool
    ) -> list[int]:
        """Append each running row's new token, mark the rows that finished, and return the
        positions (in ``running``) of the rows that go on."""
        keep: list[int] = []
        for k, (row, token) in enumerate(zip(running, tokens.tolist(), strict=True)):
            row.tokens.append(token)
            if token in self._eos_ids:
                row.finish_reason = "eos"
            elif stopped is not None and bool(stopped[k]):
                row.finish_reason = "stop"
            elif not last:
                keep.append(k)
        return keep

    def _forward(self, input_ids, mask, positions, cache) -> torch.Tensor:
        """Logits of the last position only (full-vocabulary logits of a prefill are GBs)."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kwarg: cache},
        )
        return out.logits[:, -1, :].float()

    def _left_pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in sequences)
        if width == 0:
            raise ValueError("an empty prompt encodes to no tokens; give the model some text")
        ids = torch.full((len(sequences), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for k, seq in enumerate(sequences):
            if not seq:
                raise ValueError("an empty prompt encodes to no tokens; give the model some text")
            ids[k, width - len(seq) :] = torch.tensor(seq)
            mask[k, width - len(seq) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _generator(self, seed: int, row: _Row) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(seed, row.prompt_index, row.sample_index))
        return generator

    def _criteria(self, stop: tuple[str, ...]) -> Callable | None:
        """transformers' stop-string matcher over token ids (built once per set of stops)."""
        if not stop:
            return None
        if stop not in self._stop_criteria:
            from transformers.generation.stopping_criteria import StopStringCriteria

            matcher = StopStringCriteria(tokenizer=self.tokenizer, stop_strings=list(stop))
            self._stop_criteria[stop] = lambda ids: matcher(ids, None)
        return self._stop_criteria[stop]

    # ------------------------------------------------------------------ results

    def _completion(self, row: _Row, stop: tuple[str, ...]) -> Completion:
        body = row.tokens[:-1] if row.finish_reason == "eos" else row.tokens
        return finish_text(
            self.tokenizer.decode(body, skip_special_tokens=False),
            len(row.tokens),
            row.finish_reason,
            stop,
            self._strip,
        )


def finish_text(
    text: str, tokens: int, finish_reason: str, stop: Sequence[str], strip: Sequence[str] = ()
) -> Completion:
    """Normalise a decoded row: drop the tokenizer's own pad/bos/eos strings, cut after the
    first stop string. Added special tokens such as ``<end_of_step>`` are kept on purpose."""
    for special in strip:
        text = text.replace(special, "")
    text, matched = cut_at_stop(text, stop)
    if matched is not None:
        finish_reason = "stop"
    elif finish_reason == "stop":  # matched on tokens only (e.g. the stop was stripped)
        finish_reason = "length"
    return Completion(text, tokens, finish_reason)  # type: ignore[arg-type]


def _sample(
    logits: torch.Tensor, temperature: float, top_p: float, generators: list[torch.Generator]
) -> torch.Tensor:
    """Next token per row: argmax when greedy, else Gumbel-max over the top-p nucleus.

    Gumbel-max with one generator per row samples exactly softmax(logits / T) restricted to
    the nucleus, while keeping each row's randomness independent of the rest of the batch.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits / temperature
    if top_p < 1.0:
        scaled = _top_p_filter(scaled, top_p)
    uniform = torch.stack(
        [torch.rand(scaled.shape[-1], generator=g, device=scaled.device) for g in generators]
    )
    gumbel = -torch.log(-torch.log(uniform.clamp_(min=1e-20, max=1.0 - 1e-7)))
    return (scaled + gumbel).argmax(dim=-1)


def _top_p_filter(scaled: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p``."""
    sorted_logits, order = scaled.sort(dim=-1, descending=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # mass before the token
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return scaled.masked_fill(drop, float("-inf"))


def _by_length(encoded: list[list[int]]) -> list[int]:
    """Prompt indices, longest first, so a micro-batch holds prompts of similar length."""
    return sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _eos_token_ids(model, tokenizer) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return set()
    return {int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])}


def _pad_token_id(tokenizer, eos_ids: set[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return min(eos_ids) if eos_ids else 0  # padded positions are masked out anyway


def _cache_kwarg_name(model) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` during 5.x; accept either."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
