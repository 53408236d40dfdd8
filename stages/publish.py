"""Stage `publish`: a Hub-ready dataset folder from every round of the params schedule.

Validates data/seeds/problems.parquet and each round's trajectories, sft and pairs tables
(a broken table fails the stage and writes nothing), then writes --out (default data/publish):
README.md (the dataset card) and data/<config>/<split>-*.parquet for the configs problems,
trajectories, sft, pairs and steps (pipeline.release.publish, docs/algorithm.md (deviations)), and a card whose TRL
snippets load that folder by path (pipeline.release.card). Nothing is uploaded here:
`rstar publish --repo-id USER/NAME` pushes. Exits 1 when a table breaks its contract, 2 on bad
usage or missing inputs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.release.publish import PublishError, build_dataset_folder, parse_rounds
from stages.common import exit_without_teardown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    parser.add_argument(
        "--out", default="data/publish", help="folder to write (default: data/publish)"
    )
    parser.add_argument(
        "--rounds", default=None, help="comma-separated rounds (default: all in params)"
    )
    parser.add_argument(
        "--repo-id", default=None, help="Hub id of the data (the card's snippets load --out)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        folder = build_dataset_folder(
            Path("."),
            parse_rounds(args.rounds),
            Path(args.out),
            params_path=Path(args.params),
            repo_id=args.repo_id,
        )
    except (PublishError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)
    seconds = time.perf_counter() - started
    print(f"publish: dataset folder written to {folder} ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    exit_without_teardown(main())
