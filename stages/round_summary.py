"""Stage `summary@rN`: the few figures of round N a person compares across runs, as DVC metrics.

Every other stage keeps its detailed statistics as a plain output; this stage gathers, from
them, what `dvc metrics show` prints as one row per round: problems solved (this round, new,
in total), SFT rows, pairs, held-out accuracy of each method with its 95% interval, and the
seconds the round took. Writes data/metrics/rN.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import layout
from pipeline.evaluation.evaluate import interval_columns
from pipeline.io import write_json
from stages.common import round_arguments

METRICS = layout.DATA / "metrics"


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def round_summary(round_key: str) -> dict:
    folder = layout.round_dir(round_key)
    rollout = read(folder / "rollout_stats.json")
    sft, pairs = read(folder / "sft_stats.json"), read(folder / "pairs_stats.json")
    policy = read(folder / "train_policy_metrics.json")
    ppm = read(folder / "train_ppm_metrics.json")
    evaluation = read(layout.DATA / "eval" / f"{round_key}.json")
    seconds = sum(
        part.get("seconds", 0.0) for part in (rollout, sft, pairs, policy, ppm, evaluation)
    )
    return {
        "round": layout.round_number(round_key),
        "problems": rollout["problems"],
        "solved": rollout["solved"],
        "solved_new": rollout.get("solved_new", 0),
        "solved_total": rollout["solved_ever"],
        "sft_rows": sft["filter"]["kept"],
        "pairs": pairs["pairs"],
        "eval_problems": evaluation["problems"],
        **interval_columns(evaluation),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    args = round_arguments(__doc__)
    summary = round_summary(args.round)
    write_json(METRICS / f"{args.round}.json", summary)
    print(f"{args.round}: solved {summary['solved']} ({summary['solved_new']} new, "
          f"{summary['solved_total']} in total), {summary['sft_rows']} SFT rows, "
          f"{summary['pairs']} pairs, greedy {summary['accuracy'].get('greedy')}")  # fmt: skip


if __name__ == "__main__":
    main()
