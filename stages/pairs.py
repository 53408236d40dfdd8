"""Stage `pairs@rN`: step-level preference pairs for the PPM (docs/algorithm.md, PPM pairs).

Reads data/rounds/rN/nodes.parquet and data/seeds/problems.parquet; writes pairs.parquet and
pairs_stats.json under data/rounds/rN/.
"""

from __future__ import annotations

import time

import polars as pl

from pipeline import layout
from pipeline.config import PairsConfig, group, load_params
from pipeline.io import write_json
from pipeline.rules.sql import derive_pairs
from stages.common import errors_as_one_line, round_arguments


def main() -> None:
    args = round_arguments(__doc__)
    config = group(load_params(args.params), "pairs", PairsConfig)
    started = time.perf_counter()
    out_dir = layout.round_dir(args.round)
    count = derive_pairs(
        out_dir / "nodes.parquet", layout.PROBLEMS, out_dir / "pairs.parquet", **vars(config)
    )
    splits = pl.read_parquet(out_dir / "pairs.parquet", columns=["split"])["split"].value_counts()
    write_json(out_dir / "pairs_stats.json", {
        "pairs": count, "by_split": dict(zip(splits["split"].to_list(), splits["count"].to_list())),
        "seconds": round(time.perf_counter() - started, 2),
    })  # fmt: skip
    print(f"{args.round}: {count} preference pairs")


if __name__ == "__main__":
    with errors_as_one_line():
        main()
