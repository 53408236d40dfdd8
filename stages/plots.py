"""Stage `plots`: accuracy by round and solved problems by difficulty, as CSV for `dvc plots`.

Reads every round's evaluation (data/eval/rN.json; r0 is the warm start's) and statistics
(data/stats/rN.json); writes data/plots/accuracy.csv (every method, with 95%
intervals), greedy_accuracy.csv (the policy's own accuracy from the warm start on) and
solved_by_difficulty.csv.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from pipeline import layout
from pipeline.io import write_csv

PLOTS = layout.DATA / "plots"


def rounds_in(folder: Path) -> list[str]:
    """Round keys of the JSON files in a folder, in round order."""
    return sorted((path.stem for path in folder.glob("r*.json")), key=layout.round_number)


ACCURACY_COLUMNS = ["round", "method", "accuracy", "ci95_low", "ci95_high"]


def interval_rows(number: int, metrics: dict) -> list[dict]:
    """One row per method of one evaluation, with its 95% interval where it has one."""
    intervals = metrics.get("ci95", {})
    return [
        {"round": number, "method": method, "accuracy": value,
         "ci95_low": intervals.get(method, {}).get("low"),
         "ci95_high": intervals.get(method, {}).get("high")}
        for method, value in metrics.get("accuracy", {}).items()
    ]  # fmt: skip


def accuracy_rows(rounds: list[str]) -> list[dict]:
    """Every round's held-out accuracy by method (round 0: the warm start; none when it was not
    evaluated)."""
    rows = []
    for round_key in rounds:
        metrics = json.loads((layout.DATA / "eval" / f"{round_key}.json").read_text())
        rows += interval_rows(layout.round_number(round_key), metrics)
    return rows


def solved_rows(rounds: list[str]) -> list[dict]:
    rows = []
    for round_key in rounds:
        stats = json.loads((layout.DATA / "stats" / f"{round_key}.json").read_text())
        number = layout.round_number(round_key)
        by_difficulty = stats["rounds"].get(str(number), {}).get("by_difficulty", {})
        for difficulty, entry in sorted(by_difficulty.items()):
            rows.append({"round": number, "difficulty": str(difficulty),
                         "problems": entry["problems"], "solved": entry["solved"]})  # fmt: skip
    return rows


def write_table(rows: list[dict], path: Path, columns: list[str]) -> None:
    frame = pl.DataFrame(rows) if rows else pl.DataFrame({column: [] for column in columns})
    write_csv(frame.select(columns), path)


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    accuracy = accuracy_rows(rounds_in(layout.DATA / "eval"))
    write_table(accuracy, PLOTS / "accuracy.csv", ACCURACY_COLUMNS)
    greedy = [row for row in accuracy if row["method"] == "greedy"]
    write_table(greedy, PLOTS / "greedy_accuracy.csv", ACCURACY_COLUMNS)
    write_table(
        solved_rows(rounds_in(layout.DATA / "stats")),
        PLOTS / "solved_by_difficulty.csv",
        ["round", "difficulty", "problems", "solved"],
    )


if __name__ == "__main__":
    main()
