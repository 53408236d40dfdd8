"""PPM scores through vLLM: the saved PPM run as a pooling model (docs/algorithm.md, PPM score).

Same scores as :meth:`pipeline.models.ppm.PPM.score`, ``tanh(v / 5)`` of the value head on the last
token of ``prompt + partial solution``, computed by vLLM instead of a padded torch batch. What
makes it faster (benchmarks/bench_ppm.py): the texts of a search share long prefixes (siblings
differ in their last step only; each call goes one step below the last), and vLLM's prefix
cache computes a shared prefix once.

How: the PPM folder is exported once per scorer, into a temporary folder, as a Hugging Face
``LlamaForSequenceClassification`` (``model.*`` = the backbone, ``score`` = our value head
with its bias, ``num_labels`` 1), which vLLM runs with ``runner="pooling"``, LAST pooling and
no activation: it returns the raw value ``v``, and tanh is applied here. Token ids come from
the PPM's own tokenizer with its left truncation at ``max_length``, so both paths score
exactly the same tokens.

vllm is imported only when a scorer is built (vLLM spawns engine processes that re-import
their parent's modules; importing this module costs nothing).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import PPMScorerConfig, VLLMOptions
from pipeline.models.engines.vllm_engine import (
    GIB,
    cache_block_arguments,
    frozen_heap,
    import_vllm,
    prepare_environment,
    resolve_dtype,
)


def export_seq_cls(ppm: Any, folder: Path | str) -> Path:
    """Write ``ppm`` (a :class:`pipeline.models.ppm.PPM`) as a sequence-classification folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Names as LlamaForSequenceClassification has them: backbone under `model.`, head `score`.
    tensors = {f"model.{name}": tensor.detach().contiguous()
               for name, tensor in ppm.backbone.state_dict().items()}  # fmt: skip
    tensors["score.weight"] = ppm.value_head.weight.detach().float().contiguous()
    tensors["score.bias"] = ppm.value_head.bias.detach().float().contiguous()
    save_file(tensors, str(folder / "model.safetensors"))
    config = ppm.backbone.config.to_dict() | {
        "architectures": ["LlamaForSequenceClassification"],
        "num_labels": 1, "id2label": {"0": "value"}, "label2id": {"value": 0},
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    ppm.tokenizer.save_pretrained(folder)
    return folder


class VLLMScorer:
    """A saved PPM scored by vLLM; ``score(texts)`` as :class:`pipeline.models.ppm.PPM` has it."""

    def __init__(self, ppm_path: Path | str, options: PPMScorerConfig | None = None) -> None:
        import torch

        from pipeline.models.ppm import PPM

        self.options = options or PPMScorerConfig(kind="vllm")
        vllm = import_vllm()
        # The export reads the folder through PPM.load, so a bad folder fails as it does there.
        ppm = PPM.load(ppm_path, device="cpu", dtype=torch.float32)
        self.tokenizer, self.max_length = ppm.tokenizer, ppm.max_length
        self._folder = Path(tempfile.mkdtemp(prefix="rstar-ppm-vllm-"))
        try:
            export_seq_cls(ppm, self._folder)
            del ppm
            prepare_environment(
                VLLMOptions(in_process=self.options.in_process, threads=self.options.threads)
            )
            with frozen_heap():
                self.llm = vllm.LLM(
                    model=str(self._folder), runner="pooling",
                    dtype=resolve_dtype(self.options.dtype),
                    enforce_eager=self.options.enforce_eager, max_model_len=self.max_length,
                    kv_cache_memory_bytes=int(self.options.kv_cache_gib * GIB),
                    enable_prefix_caching=True, **cache_block_arguments(),
                    pooler_config={"seq_pooling_type": "LAST", "use_activation": False},
                )  # fmt: skip
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise

    def raw_values(self, texts: Sequence[str]) -> list[float]:
        """The value head's ``v`` of each text (what PPM.raw_values gives)."""
        if not texts:
            return []
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        outputs = self.llm.classify([{"prompt_token_ids": row} for row in ids], use_tqdm=False)
        return [float(output.outputs.probs[0]) for output in outputs]

    def score(self, texts: Sequence[str]) -> list[float]:
        """Scores ``tanh(v / 5)`` in [-1, 1], as :meth:`pipeline.models.ppm.PPM.score`."""
        import torch

        from pipeline.models.ppm import score_from_value

        values = torch.tensor(self.raw_values(texts), dtype=torch.float64)
        return score_from_value(values).tolist()

    def close(self) -> None:
        """Free the engine (and its torch.distributed group when it is alone in the process)."""
        if getattr(self, "llm", None) is None:
            return
        self.llm = None
        shutil.rmtree(self._folder, ignore_errors=True)
