"""PPM scores through vLLM (pipeline.models.ppm_vllm) equal the torch path's, on the tiny random model.

One vLLM scorer serves the module (tens of seconds to start on 2 cores). The head is scaled so
raw values spread over tanh's range: a fresh head gives values near 0, where any two scorers
agree. float32 on both sides, so the scores agree to rounding.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config import ParamsError, PPMScorerConfig
from pipeline.models.ppm import PPM
from pipeline.search import steps

pytest.importorskip("vllm", reason="the vLLM PPM scorer needs vLLM (make setup installs it)")

from pipeline.models.ppm_vllm import VLLMScorer  # noqa: E402

QUESTION = "A shop has 12 boxes and gets 5 more each day. How many boxes after 3 days?"
STEPS = [
    steps.code_step("# Step 1: boxes at the start\nboxes = 12"),
    steps.code_step("# Step 2: boxes gained in 3 days\ngained = 5 * 3"),
    steps.last_code_step("# Step 3: the total; print it\nprint(boxes + gained)", "27"),
]
# Siblings and deeper nodes share prefixes, as in a search (vLLM's prefix cache serves them),
# and one text is longer than max_length (the PPM keeps its end).
TEXTS = [
    steps.generation_prefix(steps.sft_prompt(QUESTION), STEPS[:depth] + [extra])
    for depth in range(3)
    for extra in (steps.code_step("x = 1"), steps.code_step("# guess\nx = 99"))
] + [steps.generation_prefix(steps.sft_prompt(QUESTION * 8), STEPS)]


@pytest.fixture(scope="module")
def saved_ppm(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PPM]:
    ppm = PPM.from_policy(tiny_model_dir, max_length=128, device="cpu")
    with torch.no_grad():
        ppm.value_head.weight.mul_(3.0 / ppm.value_head.weight.norm())
        ppm.value_head.bias.fill_(0.4)  # the bias must reach vLLM's score layer too
    folder = ppm.save(tmp_path_factory.mktemp("ppm") / "ppm")
    return folder, ppm


@pytest.fixture(scope="module")
def scorer(saved_ppm):
    folder, _ = saved_ppm
    scorer = VLLMScorer(folder, PPMScorerConfig(kind="vllm", dtype="float32", kv_cache_gib=0.25))
    yield scorer
    scorer.close()


def test_vllm_and_torch_scores_agree(saved_ppm, scorer) -> None:
    _, ppm = saved_ppm
    assert len(ppm.tokenizer(TEXTS[-1])["input_ids"]) > ppm.max_length  # truncation is tested
    values = ppm.raw_values(TEXTS)
    assert max(values) - min(values) > 0.5  # a spread where a wrong token would show
    assert scorer.raw_values(TEXTS) == pytest.approx(values, abs=1e-4)
    assert scorer.score(TEXTS) == pytest.approx(ppm.score(TEXTS), abs=1e-4)
    # again, now from vLLM's prefix cache (32-token blocks on CPU, so these short texts hit
    # it), one by one and in reverse: still the same values
    assert scorer.llm.llm_engine.vllm_config.cache_config.block_size == 32
    assert [scorer.raw_values([t])[0] for t in reversed(TEXTS)] == pytest.approx(
        values[::-1], abs=1e-4
    )


def test_empty_call_and_closed_folder(scorer) -> None:
    assert scorer.score([]) == []
    assert scorer._folder.is_dir()  # the export lives as long as the scorer


def test_scorer_and_vllm_engine_share_a_process(tiny_model_dir: Path, saved_ppm) -> None:
    """A rollout worker holds both (pipeline.executors.Worker): each keeps working, and the
    scorer closes before the engine, whose close tears the distributed group down."""
    from pipeline.executors import build_scorer
    from pipeline.models.engines import make_engine

    folder, ppm = saved_ppm
    options = {"kind": "vllm", "dtype": "float32", "kv_cache_gib": 0.25}
    scorer = build_scorer(str(folder), options)
    engine = make_engine("vllm", str(tiny_model_dir), dtype="float32", max_model_len=1024,
                         kv_cache_gib=0.25)  # fmt: skip
    try:
        first = engine.generate(TEXTS[:2], n=2, max_new_tokens=4, seed=0)
        assert scorer.score(TEXTS) == pytest.approx(ppm.score(TEXTS), abs=1e-4)
        assert engine.generate(TEXTS[:2], n=2, max_new_tokens=4, seed=0) == first
    finally:
        scorer.close()
        engine.close()


def test_build_scorer_defaults_to_torch_and_rejects_unknown_kinds(saved_ppm) -> None:
    from pipeline.executors import build_scorer

    folder, _ = saved_ppm
    assert isinstance(build_scorer(str(folder), {}), PPM)
    with pytest.raises(ParamsError, match="ppm_scorer.kind must be one of 'torch', 'vllm'"):
        build_scorer(str(folder), {"kind": "onnx"})
