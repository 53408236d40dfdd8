"""Shared fixtures: a tiny random model with SmolLM2's real tokenizer, built once per session.

Tests never reach the Hugging Face Hub. The tokenizer extracted from the packaged GGUF (a 100 MB
read) is cached in pytest's cache folder, so later sessions skip that read as well.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def model_cache_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Where extracted tokenizers live: pytest's cache when enabled, else this session's tmp."""
    cache = getattr(request.config, "cache", None)
    folder = (
        Path(cache.mkdir("rstar-models")) if cache is not None else tmp_path_factory.mktemp("cache")
    )
    os.environ["RSTAR_CACHE_DIR"] = str(folder)  # prepare_base_model("tiny") finds it too
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> Path:
    """A 2-layer random Llama (hidden 64) with SmolLM2's tokenizer, as an HF folder."""
    from pipeline.models import build_tiny_model, find_smollm2_gguf

    out = tmp_path_factory.mktemp("models") / "tiny"
    return build_tiny_model(out, find_smollm2_gguf(), cache_dir=model_cache_dir)


@pytest.fixture(scope="session")
def format_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model after a short, hot warm start on generated reference solutions.

    Its steps are poor math but often well-formed (they end in step markers), so searches on
    it grow real trees: code runs, errors, answers and PPM-initialised nodes.
    """
    from pipeline import steps
    from pipeline.problems import load_problems
    from pipeline.train.common import TrainConfig
    from pipeline.train.sft import train_sft

    problems = load_problems("generated", n=48, seed=1, levels=[1, 2])
    examples = [(steps.sft_prompt(q), s) for q, s in zip(problems["question"], problems["solution"])]
    out = tmp_path_factory.mktemp("models") / "format"
    # 8 epochs: fewer leave every root with only an `<answer>` sample, so no code step to score.
    config = TrainConfig(epochs=8, learning_rate=1e-2, batch_size=8, max_length=192, warmup_ratio=0.0)
    train_sft(tiny_model_dir, examples, out, config)
    return out


REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the environment's `dvc` in ``repo`` (stages find the same python on PATH)."""
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True)


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> Path:
    """A scratch copy of the repository after `dvc repro` of the smoke profile (one per session).

    Tests that change it must put params.yaml back (`switch_profile(repo, "smoke")`).
    """
    from pipeline.profiles import switch_profile
    from pipeline.scratch import scratch_copy

    repo = scratch_copy(REPO, tmp_path_factory.mktemp("smoke") / "repo")
    switch_profile(repo, "smoke")
    result = dvc(repo, "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return repo


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups from the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs two xdist workers with --dist loadgroup: every test that reads the smoke
    build runs on one of them, so the smoke DAG is built once per session."""
    for item in items:
        if "smoke_repo" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("smoke"))
