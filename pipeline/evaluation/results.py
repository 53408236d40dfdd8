"""The results table of a build: one Markdown row per round from data/metrics/rN.json.

The README's and docs/experiments.md's tables are this function's output (`rstar results`), so
they never drift from the metrics DVC tracks. Round 0 is the warm start's report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# Methods in the order a reader compares them; a method absent from every round is left out.
METHOD_ORDER = ("greedy", "maj_at_", "pass_at_", "ppm_best_of_", "ppm_mcts", "sampled_pass_at_1")


def read_metrics(folder: Path) -> list[dict]:
    """Every round's metrics file in round order; an unreadable file is a one-line error."""
    rows = []
    for path in sorted(folder.glob("r*.json"), key=_round_number):
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not a metrics JSON file ({error})") from None
    return rows


def _round_number(path: Path) -> int:
    found = re.fullmatch(r"r(\d+)", path.stem)
    return int(found.group(1)) if found else 1 << 30


def _method_rank(method: str) -> tuple[int, str]:
    for rank, prefix in enumerate(METHOD_ORDER):
        if method.startswith(prefix):
            return rank, method
    return len(METHOD_ORDER), method


def accuracy_cell(row: dict, method: str) -> str:
    """`0.125 [0.09, 0.18]`: the accuracy and its 95% interval; empty when not measured."""
    value = row.get("accuracy", {}).get(method)
    if value is None:
        return ""
    low, high = row.get("ci95_low", {}).get(method), row.get("ci95_high", {}).get(method)
    return f"{value:.3f}" + (f" [{low:.2f}, {high:.2f}]" if low is not None else "")


def results_table(rows: list[dict]) -> str:
    """One Markdown row per round: search results, training data and every accuracy."""
    methods = sorted({m for row in rows for m in row.get("accuracy", {})}, key=_method_rank)
    header = ["round", "solved (new / total)", "SFT rows", "pairs", "eval problems",
              *methods, "minutes"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        solved = (
            f"{row['solved']} of {row['problems']} ({row.get('solved_new', 0)} / "
            f"{row.get('solved_total', row['solved'])})"
            if "solved" in row
            else "warm start"
        )
        cells = [str(row.get("round", "")), solved, str(row.get("sft_rows", "")),
                 str(row.get("pairs", "")), str(row.get("eval_problems", "")),
                 *(accuracy_cell(row, method) for method in methods),
                 f"{row.get('seconds', 0) / 60:.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
