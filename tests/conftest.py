"""Shared fixtures: a tiny random model with SmolLM2's real tokenizer, built once per session.

Tests never reach the Hugging Face Hub. The tokenizer extracted from the packaged GGUF (a 100 MB
read) is cached in pytest's cache folder, so later sessions skip that read as well.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def model_cache_dir(request: pytest.FixtureRequest) -> Path:
    """Where extracted tokenizers live: pytest's cache when enabled, else this session's tmp."""
    folder = _cache_folder(request.config)
    os.environ["RSTAR_CACHE_DIR"] = str(folder)  # prepare_base_model("tiny") finds it too
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> Path:
    """A 2-layer random Llama (hidden 64) with SmolLM2's tokenizer, as an HF folder."""
    from pipeline.models.base import build_tiny_model, find_smollm2_gguf

    out = tmp_path_factory.mktemp("models") / "tiny"
    return build_tiny_model(out, find_smollm2_gguf(), cache_dir=model_cache_dir)


@pytest.fixture(scope="session")
def format_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model after a short, hot warm start on generated reference solutions.

    Its steps are poor math but often well-formed (they end in step markers), so searches on
    it grow real trees: code runs, errors, answers and PPM-initialised nodes.
    """
    from pipeline.config import TrainConfig
    from pipeline.models.train.sft import train_sft
    from pipeline.problems.sources import load_problems
    from pipeline.search import steps

    problems = load_problems("generated", n=48, seed=1, levels=[1, 2])
    examples = [
        (steps.sft_prompt(q), s) for q, s in zip(problems["question"], problems["solution"])
    ]
    out = tmp_path_factory.mktemp("models") / "format"
    # 8 epochs: fewer leave every root with only an `<answer>` sample, so no code step to score.
    config = TrainConfig(
        epochs=8, learning_rate=1e-2, batch_size=8, max_length=192, warmup_ratio=0.0
    )
    train_sft(tiny_model_dir, examples, out, config)
    return out


REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the environment's `dvc` in ``repo`` (stages find the same python on PATH)."""
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True
    )


@pytest.fixture(scope="session")
def smoke_repo(request: pytest.FixtureRequest, model_cache_dir: Path) -> Path:
    """A scratch copy of the repository after `dvc repro` of the smoke profile (one per session).

    The build starts in the background as soon as collection finds a test that needs it
    (:func:`pytest_collection_finish`), so it runs on one core while the other tests run on the
    other; those tests are ordered last. Tests that change the copy must put params.yaml back
    (`switch_profile(repo, "smoke")`).
    """
    build = getattr(request.config, "_smoke_build", None)
    if build is None:  # collected some other way: build it now
        build = start_smoke_build(request.config)
    repo, process, log = build
    returncode = process.wait()
    assert returncode == 0, log.read_text()[-6000:]
    return repo


def start_smoke_build(config: pytest.Config) -> tuple[Path, subprocess.Popen, Path]:
    from pipeline.models.base import cached_tokenizer, find_smollm2_gguf
    from pipeline.profiles import switch_profile
    from pipeline.scratch import scratch_copy

    # Extract the tokenizer into the shared cache first: the build and the session's own tiny
    # model must not both write it at once.
    cached_tokenizer(find_smollm2_gguf(), _cache_folder(config))
    folder = Path(tempfile.mkdtemp(prefix="rstar-smoke-"))
    repo = scratch_copy(REPO, folder / "repo")
    switch_profile(repo, "smoke")
    log = folder / "repro.log"
    env = os.environ | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RSTAR_CACHE_DIR": str(_cache_folder(config)),
    }
    with log.open("w") as handle:
        process = subprocess.Popen(
            [str(BIN / "dvc"), "repro"], cwd=repo, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    config._smoke_build = (repo, process, log)
    config.add_cleanup(lambda: (process.kill(), process.wait(), shutil.rmtree(folder, True)))
    return config._smoke_build


def _cache_folder(config: pytest.Config) -> Path:
    """One folder per session, shared by the session's models and the background smoke build."""
    if not hasattr(config, "_rstar_cache_folder"):
        cache = getattr(config, "cache", None)
        if cache is not None:
            config._rstar_cache_folder = Path(cache.mkdir("rstar-models"))
        else:  # no cache plugin: this session's own folder
            config._rstar_cache_folder = Path(tempfile.mkdtemp(prefix="rstar-models-"))
            config.add_cleanup(lambda: shutil.rmtree(config._rstar_cache_folder, True))
    return config._rstar_cache_folder


def _needs_smoke(item: pytest.Item) -> bool:
    return "smoke_repo" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that read the smoke build run last, so the build has the whole session to finish."""
    items.sort(key=_needs_smoke)  # stable: each group keeps its order


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(_needs_smoke(item) for item in session.items):
        start_smoke_build(session.config)
