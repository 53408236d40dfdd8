"""The vllm engine: the production path on GPUs (DESIGN.md section 5, `paper` profile).

vllm is an optional extra with its own torch pin, so it is imported only when this engine is
built, never when :mod:`pipeline` is imported. Prefix caching lets the ``n`` samples of a
prompt, and the sibling expansions of one MCTS node, share the prompt's KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.engines.base import Completion, Engine, check_request, cut_at_stop, derive_seed

VLLM_MISSING = (
    "the vllm engine needs the optional GPU extra: pip install 'rstar-data[gpu]' on a GPU machine"
)


def import_vllm() -> Any:
    """The vllm module, or a one-line error saying how to get it."""
    try:
        import vllm
    except ImportError:
        raise ImportError(VLLM_MISSING) from None
    return vllm


class VLLMEngine(Engine):
    """``vllm.LLM`` with prefix caching; ``options`` go to ``LLM`` (e.g. ``dtype``,
    ``gpu_memory_utilization``, ``tensor_parallel_size``, ``max_model_len``)."""

    def __init__(self, model: str | Path, *, progress: bool = False, **options: Any) -> None:
        vllm = import_vllm()
        self._vllm = vllm
        self.progress = progress
        options.setdefault("enable_prefix_caching", True)
        self.llm = vllm.LLM(model=str(model), **options)

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
        stop = [s for s in stop if s]
        params = [
            self._vllm.SamplingParams(
                n=n,
                stop=stop,
                include_stop_str_in_output=True,
                max_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=derive_seed(seed, index) >> 32,  # one stream per prompt, as the CPU engine
            )
            for index in range(len(prompts))
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=self.progress)
        return [[to_completion(sample, stop) for sample in out.outputs] for out in outputs]

    def close(self) -> None:
        self.llm = None


def to_completion(sample: Any, stop: Sequence[str]) -> Completion:
    """Map a ``vllm.CompletionOutput`` onto the contract.

    vllm reports ``finish_reason == "stop"`` for stop strings and EOS alike; ``stop_reason``
    holds the matched stop string, or None for EOS (an int for a stop token id).
    """
    text, matched = cut_at_stop(sample.text, stop)
    if matched is not None:
        reason = "stop"
    elif sample.finish_reason == "length":
        reason = "length"
    elif isinstance(sample.stop_reason, str) and sample.stop_reason:
        text, reason = text + sample.stop_reason, "stop"  # if a server build dropped it
    else:
        reason = "eos" if sample.finish_reason == "stop" else "length"
    return Completion(text, len(sample.token_ids), reason)  # type: ignore[arg-type]
