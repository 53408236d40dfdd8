"""The real vLLM engine (its CPU build, installed by `make setup`) on the tiny random model.

The same contract as tests/test_engines.py pins for the transformers engine: n completions per
prompt in order, stop strings kept and nothing after them, finish reasons, honest token counts,
seeds that reproduce a call whatever ran before it. One engine serves the whole module: vLLM
takes tens of seconds to start on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import VLLMOptions
from pipeline.models.engines import make_engine
from pipeline.models.engines.base import FINISH_REASONS, Engine
from pipeline.models.engines.vllm_engine import (
    VLLMEngine,
    cache_block_arguments,
    engine_arguments,
    llm_arguments,
    resolve_dtype,
    split_options,
)
from tests.engine_contract import (  # noqa: F401 (the shared contract tests run here too)
    PROMPTS,
    test_max_new_tokens_is_respected_and_counted,
    test_stop_string_is_kept_and_nothing_after_it,
)

pytest.importorskip("vllm", reason="the vllm engine tests need vLLM (make setup installs it)")

# The options the smoke profile gives the tiny model (small KV cache, fp32 like its training).
TINY_OPTIONS = {"dtype": "float32", "max_model_len": 1024, "kv_cache_gib": 0.25}


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path):
    with make_engine("vllm", str(tiny_model_dir), **TINY_OPTIONS) as engine:
        yield engine


def all_completions(results):
    return [completion for samples in results for completion in samples]


def test_make_engine_builds_the_vllm_engine_with_the_params_options(engine):
    assert isinstance(engine, VLLMEngine) and isinstance(engine, Engine)
    assert engine.options.dtype == "float32" and engine.options.kv_cache_gib == 0.25
    config = engine.llm.llm_engine.vllm_config
    assert config.model_config.max_model_len == 1024
    assert config.cache_config.kv_cache_memory_bytes == 2**28
    assert config.cache_config.enable_prefix_caching
    assert config.model_config.enforce_eager
    # CPU: blocks small enough for a step's prompt to hit the prefix cache (vLLM's default 128)
    assert config.cache_config.block_size == 32


def test_options_split_into_ours_and_the_rest_for_vllm():
    ours, rest = split_options({"dtype": "float16", "gpu_memory_utilization": 0.8})
    assert ours == VLLMOptions(dtype="float16")
    assert rest == {"gpu_memory_utilization": 0.8}
    arguments = llm_arguments(ours)
    assert arguments["enable_chunked_prefill"] is False  # per-request seeds need it on CPU
    assert arguments["kv_cache_memory_bytes"] == 2 * 2**30


def test_the_cache_block_is_shrunk_on_cpu_only():
    assert cache_block_arguments(on_gpu=False) == {"block_size": 32}
    assert cache_block_arguments(on_gpu=True) == {}  # vLLM's GPU default (16) already fits
    # an engine option still wins over ours: the engine builds vllm.LLM from these arguments
    _, arguments = engine_arguments({"block_size": 64})
    assert arguments["block_size"] == 64


def test_auto_dtype_is_bf16_only_where_the_cpu_computes_it_natively():
    avx2_only = "flags\t\t: fpu sse sse2 avx avx2 fma f16c\n"
    sapphire_rapids = "flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    graviton3 = "Features\t: fp asimd sve bf16 i8mm\n"
    assert resolve_dtype("auto", avx2_only) == "float32"
    assert resolve_dtype("auto", sapphire_rapids) == "bfloat16"
    assert resolve_dtype("auto", graviton3) == "bfloat16"
    assert resolve_dtype("auto", "") == "float32"  # flags unknown: the dtype fast everywhere
    assert resolve_dtype("bfloat16", avx2_only) == "bfloat16"  # an explicit choice is kept
    assert VLLMOptions().dtype == "auto"


def test_n_completions_per_prompt_in_prompt_order(engine):
    results = engine.generate(PROMPTS, n=3, max_new_tokens=6, seed=0)
    assert [len(samples) for samples in results] == [3, 3, 3]
    # Each prompt's stream comes from (seed, its index): alone at index 0 it gets the same.
    alone = engine.generate(PROMPTS[:1], n=3, max_new_tokens=6, seed=0)
    assert alone[0] == results[0]
    assert engine.generate([], n=3) == []


def test_same_seed_same_samples_other_seed_differs(engine):
    first = engine.generate(PROMPTS, n=2, max_new_tokens=8, temperature=0.9, seed=7)
    engine.generate(PROMPTS[::-1], n=4, max_new_tokens=12, temperature=0.9, seed=1)  # in between
    again = engine.generate(PROMPTS, n=2, max_new_tokens=8, temperature=0.9, seed=7)
    other = engine.generate(PROMPTS, n=2, max_new_tokens=8, temperature=0.9, seed=8)
    assert first == again  # what ran in between does not leak into a call
    assert first != other
    assert first[0][0].text != first[0][1].text  # the n samples of a prompt are distinct draws


def test_greedy_copies_one_sample_n_times_and_ignores_the_seed(engine):
    results = engine.generate(PROMPTS, n=2, max_new_tokens=8, temperature=0, seed=1)
    assert all(samples[0] == samples[1] for samples in results)
    assert engine.generate(PROMPTS, n=2, max_new_tokens=8, temperature=0, seed=99) == results


def test_greedy_matches_the_transformers_engine(engine, tiny_model_dir):
    # Both engines run the same fp32 weights: the greedy continuations must agree.
    from pipeline.models.engines.hf import TransformersEngine

    reference = TransformersEngine(tiny_model_dir, threads=1)
    expected = reference.generate(PROMPTS, max_new_tokens=10, temperature=0)
    assert engine.generate(PROMPTS, max_new_tokens=10, temperature=0) == expected


def test_every_completion_follows_the_contract(engine):
    stops = ["e", "<never>"]
    results = engine.generate(PROMPTS, n=4, max_new_tokens=16, temperature=1.0, seed=5, stop=stops)
    reasons = set()
    for completion in all_completions(results):
        reasons.add(completion.finish_reason)
        assert completion.finish_reason in FINISH_REASONS
        assert 1 <= completion.tokens <= 16
        if completion.finish_reason == "stop":
            assert completion.text.endswith("e") and completion.text.count("e") == 1
        else:
            assert "e" not in completion.text
    assert "stop" in reasons  # 12 samples of 16 tokens: some contain an "e"


def test_impossible_requests_are_refused_before_any_work(engine):
    with pytest.raises(ValueError, match="n must be at least 1"):
        engine.generate(PROMPTS, n=0)
    with pytest.raises(ValueError, match="top_p must be in"):
        engine.generate(PROMPTS, top_p=0)


def test_an_fp32_checkpoint_served_in_bf16_warns_once_not_once_per_weight(tiny_model_dir):
    import logging

    from pipeline.models.engines.vllm_engine import import_vllm

    import_vllm()  # installs the project's filter first
    casts = []

    def count(record):  # a filter after it sees what gets through; vLLM's logging set-up
        if record.getMessage().startswith("Attempted to load weight"):  # drops handlers
            casts.append(record)
        return True

    weights_logger = logging.getLogger("vllm.model_executor.models.utils")
    weights_logger.addFilter(count)
    try:
        options = TINY_OPTIONS | {"dtype": "bfloat16"}  # the tiny model is saved in fp32
        with make_engine("vllm", str(tiny_model_dir), **options):
            pass
    finally:
        weights_logger.removeFilter(count)
    assert len(casts) == 1  # its weight tensors, one line


def test_the_heap_is_frozen_only_while_an_engine_is_built():
    import gc

    from pipeline.models.engines.vllm_engine import frozen_heap

    with frozen_heap():
        assert gc.get_freeze_count() > 0  # vLLM's own collections skip what was imported
    assert gc.get_freeze_count() == 0  # later garbage, cycles included, is collected again
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("vLLM failed to start")
    assert gc.get_freeze_count() == 0
