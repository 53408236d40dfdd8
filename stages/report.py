"""Stage `report`: the figures a person compares across runs, as the DVC metrics of the build.

`dvc metrics show` prints one row per metrics file and one column per key. With one file per
round, every figure of every method became a column: about 500 characters wide. Here each
figure has its own file keyed by round, so the table has a row per figure and a column per
round (r0 is the warm start):

    data/report/greedy.json       {"r0": 0.205, "r1": 0.259, ..., "r4": 0.348}
    data/report/greedy_ci95.json  {"r0": "[0.15, 0.27]", ...}   (the 95% Wilson interval)

and `dvc metrics diff` compares one figure of one round between two builds. Reads the round
summaries data/metrics/rN.json (summary@rN; r0 from the warm start); writes data/report/.
"""

from __future__ import annotations

import argparse
import json

from pipeline import layout
from pipeline.evaluation.results import interval_text, read_metrics
from pipeline.io import atomic_dir

REPORT = layout.DATA / "report"
ROUND_FIGURES = ("solved", "solved_new", "solved_total", "sft_rows", "pairs")


def report_tables(summaries: list[dict]) -> dict[str, dict[str, float | int | str]]:
    """{figure: {round key: value}} from the round summaries, given in round order (the column
    order of `dvc metrics show`). Accuracies come with a `<method>_ci95` figure; rounds that did
    not measure a figure leave it out."""
    tables: dict[str, dict[str, float | int | str]] = {}

    def put(figure: str, round_key: str, value) -> None:
        tables.setdefault(figure, {})[round_key] = value

    for summary in summaries:
        round_key = f"r{summary['round']}"
        lows, highs = summary.get("ci95_low", {}), summary.get("ci95_high", {})
        for method, accuracy in summary.get("accuracy", {}).items():
            put(method, round_key, accuracy)
            if method in lows and method in highs:
                put(f"{method}_ci95", round_key, interval_text(lows[method], highs[method]))
        for figure in ROUND_FIGURES:
            if figure in summary:
                put(figure, round_key, summary[figure])
        if "seconds" in summary:
            put("minutes", round_key, round(summary["seconds"] / 60, 1))
    return tables


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    tables = report_tables(read_metrics(layout.DATA / "metrics"))
    with atomic_dir(REPORT) as folder:  # a figure no longer measured leaves no stale file
        for figure, by_round in tables.items():  # not write_json: sorted keys put r10 before r2
            (folder / f"{figure}.json").write_text(json.dumps(by_round, indent=2) + "\n")
    print(f"report: {len(tables)} figures in {REPORT}")


if __name__ == "__main__":
    main()
