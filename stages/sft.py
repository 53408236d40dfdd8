"""Stage `sft@rN`: trajectories, the SFT picks, and the filter that re-runs and re-grades them.

Reads data/rounds/rN/nodes.parquet and data/seeds/problems.parquet. Writes trajectories.parquet,
sft.parquet (verified rows), sft_dropped.parquet (rows the filter dropped, with the reason) and
sft_stats.json (the filter report) under data/rounds/rN/.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import polars as pl

from pipeline import layout
from pipeline.config import SandboxConfig, SFTConfig, group, load_params
from pipeline.execution.sandbox import Sandbox
from pipeline.io import write_json, write_parquet
from pipeline.rules.filter import rerank, summarise, verify_responses
from pipeline.rules.sql import derive_sft, derive_trajectories
from stages.common import errors_as_one_line, round_arguments


def main() -> None:
    args = round_arguments(__doc__)
    params = load_params(args.params)
    config = group(params, "sft", SFTConfig)
    sandbox_config = group(params, "sandbox", SandboxConfig)
    started = time.perf_counter()
    out_dir = layout.round_dir(args.round)
    nodes = out_dir / "nodes.parquet"
    trajectories = derive_trajectories(nodes, out_dir / "trajectories.parquet")

    with tempfile.TemporaryDirectory() as scratch:
        candidates_path = Path(scratch) / "candidates.parquet"
        derive_sft(nodes, layout.PROBLEMS, candidates_path, per_problem=config.per_problem)
        candidates = pl.read_parquet(candidates_path)  # in (problem_id, round, rank) order
    truths = candidates.join(
        pl.read_parquet(layout.PROBLEMS, columns=["problem_id", "answer"]),
        on="problem_id",
        how="left",
    )
    with Sandbox(**vars(sandbox_config)) as sandbox:
        verdicts = verify_responses(
            truths["response"].to_list(), truths["answer"].to_list(), sandbox
        )
    keep = pl.Series([verdict.keep for verdict in verdicts], dtype=pl.Boolean)
    reasons = pl.Series("reason", [verdict.reason for verdict in verdicts], dtype=pl.String)
    # A dropped rank-1 pick must not leave a lone rank 2: the kept picks are renumbered.
    groups = list(zip(candidates["problem_id"], candidates["round"]))
    ranks = pl.Series("rank", rerank(groups, verdicts), dtype=candidates.schema["rank"])
    write_parquet(candidates.with_columns(ranks).filter(keep), out_dir / "sft.parquet")
    write_parquet(candidates.with_columns(reasons).filter(~keep), out_dir / "sft_dropped.parquet")
    report = summarise(verdicts)
    write_json(out_dir / "sft_stats.json", {
        "trajectories": trajectories, "candidates": candidates.height, "filter": report,
        "seconds": round(time.perf_counter() - started, 2),
    })  # fmt: skip
    print(
        f"{args.round}: {trajectories} trajectories, {report['kept']} SFT rows kept, {report['dropped']} dropped"
    )


if __name__ == "__main__":
    with errors_as_one_line():
        main()
