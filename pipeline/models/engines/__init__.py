"""Text generation engines behind one contract (pipeline.models.engines.base).

``make_engine(kind, model, **options)`` picks one: ``vllm`` (the profiles' engine: vLLM's CPU
build here and in CI, its GPU build on clusters; imported only when chosen), ``transformers``
(the fallback where no vLLM build exists) or ``openai`` (any OpenAI-compatible server).
Engine modules are imported lazily so that importing :mod:`pipeline` never pulls in vllm.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import ENGINE_KINDS
from pipeline.models.engines.base import Completion, Engine

__all__ = ["ENGINE_KINDS", "Completion", "Engine", "make_engine"]


def make_engine(kind: str, model: str, **options: Any) -> Engine:
    """An engine of ``kind`` for ``model`` (a local folder, a Hub id for vllm, or a server's
    model name for openai); ``options`` go to that engine's constructor."""
    if kind == "transformers":
        from pipeline.models.engines.hf import TransformersEngine

        return TransformersEngine(model, **options)
    if kind == "vllm":
        from pipeline.models.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, **options)
    if kind == "openai":
        from pipeline.models.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(model, **options)
    raise ValueError(f"unknown engine {kind!r}: expected one of {', '.join(ENGINE_KINDS)}")
