"""Stage `round0`: the state before round 1: no problem solved yet, and no PPM.

Writes data/rounds/r0/problem_status.parquet (every training problem unsolved) and the empty
folder data/models/ppm/none, which terminal-guided rounds name as their PPM so that every
round's stage declares the same kinds of inputs.
"""

from __future__ import annotations

import polars as pl

from pipeline import layout
from pipeline.io import write_parquet

README = "No process preference model: rounds that name this PPM are terminal-guided.\n"


def main() -> None:
    problems = pl.read_parquet(layout.PROBLEMS, columns=["problem_id", "split"])
    status = problems.filter(pl.col("split") == "train").select(
        "problem_id",
        pl.lit(False).alias("solved"),
        pl.lit(False).alias("solved_ever"),
        pl.lit(False).alias("solved_first"),
        pl.lit(0, dtype=pl.Int32).alias("rounds_attempted"),
    )
    write_parquet(status, layout.round_dir("r0") / "problem_status.parquet")
    no_ppm = layout.ppm_dir(layout.NO_PPM)
    no_ppm.mkdir(parents=True, exist_ok=True)
    (no_ppm / "README.md").write_text(README)


if __name__ == "__main__":
    main()
