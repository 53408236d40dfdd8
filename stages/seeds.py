"""Stage `seeds`: the seed problems of the run, from params group `seeds` (docs/data-contracts.md).

Writes, each atomically:

- ``data/seeds/problems.parquet``: the ``problems`` table;
- ``data/seeds/stats.json``: counts by split, level and source, duplicates dropped, problems
  whose reference solution could not be converted (by reason), seconds;
- ``data/seeds/dropped.parquet``: the duplicate rows that were dropped, to look at.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from pipeline import layout
from pipeline.config import ParamsError, SeedsConfig, group, load_params
from pipeline.io import write_json, write_parquet
from pipeline.problems.sources import ProblemSourceError, read_problems


def build_seeds(config: SeedsConfig, out: Path) -> dict[str, Any]:
    """Load the configured source and write the stage's files; return the statistics."""
    started = time.perf_counter()
    loaded = read_problems(config.source, **config.options())
    write_parquet(loaded.problems, out / "problems.parquet")
    write_parquet(loaded.duplicates, out / "dropped.parquet")
    stats = {"source": config.source, **loaded.stats()}
    stats["seconds"] = round(time.perf_counter() - started, 3)
    write_json(out / "stats.json", stats)
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    parser.add_argument(
        "--out", type=Path, default=layout.SEEDS, help="output folder (default: data/seeds)"
    )
    args = parser.parse_args(argv)
    try:
        config = group(load_params(args.params), "seeds", SeedsConfig)
        stats = build_seeds(config, args.out)
    except (ParamsError, ProblemSourceError) as error:
        sys.exit(f"seeds: {error}")
    print(
        f"seeds: {stats['problems']} problems from {config.source} ({stats['by_split']}), "
        f"{stats['duplicates_dropped']} duplicates dropped, {stats['seconds']} s"
    )


if __name__ == "__main__":
    main()
