"""Stage `stats@rN`: round statistics in SQL (per difficulty: solved, trajectories, pairs, ...).

Writes data/stats/rN.json, which DVC tracks as metrics.
"""

from __future__ import annotations

from pipeline import layout
from pipeline.io import write_json
from pipeline.rules.sql import round_stats
from stages.common import round_arguments


def main() -> None:
    args = round_arguments(__doc__)
    out_dir = layout.round_dir(args.round)
    stats = round_stats(
        out_dir / "nodes.parquet", layout.PROBLEMS,
        sft_path=out_dir / "sft.parquet", pairs_path=out_dir / "pairs.parquet",
    )  # fmt: skip
    write_json(layout.DATA / "stats" / f"{args.round}.json", stats)


if __name__ == "__main__":
    main()
