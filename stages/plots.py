"""Stage `plots`: accuracy by round and solved problems by difficulty, as CSV for `dvc plots`.

Reads every round's evaluation (data/eval/rN.json) and statistics (data/stats/rN.json) and
writes data/plots/accuracy.csv and data/plots/solved_by_difficulty.csv.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import polars as pl

from pipeline import layout

PLOTS = layout.DATA / "plots"


def rounds_in(folder: Path) -> list[str]:
    """Round keys of the JSON files in a folder, in round order."""
    return sorted((path.stem for path in folder.glob("r*.json")), key=layout.round_number)


def accuracy_rows(rounds: list[str]) -> list[dict]:
    rows = []
    for round_key in rounds:
        metrics = json.loads((layout.DATA / "eval" / f"{round_key}.json").read_text())
        for method, value in metrics["accuracy"].items():
            rows.append({"round": layout.round_number(round_key), "method": method, "accuracy": value})
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


def write_csv(rows: list[dict], path: Path, columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    frame = pl.DataFrame(rows) if rows else pl.DataFrame({column: [] for column in columns})
    frame.select(columns).write_csv(temporary)
    os.replace(temporary, path)


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    write_csv(accuracy_rows(rounds_in(layout.DATA / "eval")), PLOTS / "accuracy.csv", ["round", "method", "accuracy"])
    write_csv(solved_rows(rounds_in(layout.DATA / "stats")), PLOTS / "solved_by_difficulty.csv",
              ["round", "difficulty", "problems", "solved"])


if __name__ == "__main__":
    main()
