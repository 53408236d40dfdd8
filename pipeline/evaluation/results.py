"""The results tables of a build: one Markdown row per round from data/metrics/rN.json, and
results compared problem by problem (rounds' greedy, the last round's PPM methods) from the
evaluations (data/eval/rN.json, round 0 in the warm start's metrics).

The README's and docs/experiments.md's tables are these functions' output (`rstar results`), so
they never drift from the files DVC tracks. Round 0 is the warm start's report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline.evaluation.paired import paired_change

# Methods in the order a reader compares them; a method absent from every round is left out.
METHOD_ORDER = ("greedy", "maj_at_", "pass_at_", "ppm_best_of_", "ppm_mcts", "sampled_pass_at_1")


NOT_A_ROUND = 1 << 30  # the round number of a file not named rN.json: sorted last


def read_metrics(folder: Path) -> list[dict]:
    """Every round's metrics file in round order; an unreadable file is a one-line error."""
    paths = sorted(folder.glob("r*.json"), key=_round_number)
    return [_read_json(path, "metrics JSON") for path in paths]


def _read_json(path: Path, kind: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a {kind} file ({error})") from None


def _round_number(path: Path) -> int:
    found = re.fullmatch(r"r(\d+)", path.stem)
    return int(found.group(1)) if found else NOT_A_ROUND


def _method_rank(method: str) -> tuple[int, str]:
    for rank, prefix in enumerate(METHOD_ORDER):
        if method.startswith(prefix):
            return rank, method
    return len(METHOD_ORDER), method


def interval_text(low: float, high: float) -> str:
    """`[0.09, 0.18]`: a 95% interval as the tables and `dvc metrics show` print it."""
    return f"[{low:.2f}, {high:.2f}]"


def accuracy_cell(row: dict, method: str) -> str:
    """`0.125 [0.09, 0.18]`: the accuracy and its 95% interval; empty when not measured."""
    value = row.get("accuracy", {}).get(method)
    if value is None:
        return ""
    low, high = row.get("ci95_low", {}).get(method), row.get("ci95_high", {}).get(method)
    return f"{value:.3f}" + (f" {interval_text(low, high)}" if low is not None else "")


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


def read_evaluations(folder: Path) -> dict[int, dict]:
    """Each round's evaluation by round number (0: the warm start's), without those that
    evaluated nothing; an unreadable file is a one-line error, a missing one is left out."""
    found: dict[int, dict] = {}
    for path in folder.glob("r*.json"):
        if _round_number(path) != NOT_A_ROUND:
            found[_round_number(path)] = _read_json(path, "JSON")
    return {number: found[number] for number in sorted(found) if found[number].get("accuracy")}


def paired_table(evaluations: dict[int, dict]) -> str:
    """Markdown rows comparing results on the same problems: greedy of each round against the
    round before, then of rounds 1 and 0 against the last; then, in the last round, each PPM
    method against greedy and majority vote. Empty when nothing has per-problem results."""
    if not evaluations:
        return ""
    rounds = sorted(evaluations)
    last = rounds[-1]
    # (round before, its method, round after, its method)
    rows = [(before, "greedy", after, "greedy") for before, after in zip(rounds, rounds[1:])]
    rows += [(first, "greedy", last, "greedy") for first in (1, 0)
             if first in evaluations and last - first > 1]  # fmt: skip
    methods = evaluations[last].get("accuracy", {})
    baselines = [m for m in methods if m == "greedy" or m.startswith("maj_at_")]
    rows += [(last, base, last, method) for method in methods if method.startswith("ppm_")
             for base in baselines]  # fmt: skip
    lines = []
    for before, method, after, after_method in rows:
        change = paired_change(evaluations[before], evaluations[after], method, after_method)
        if change is None:
            continue
        net, p_value = change["gained"] - change["lost"], change["p_value"]
        shown_p = f"{p_value:.4f}" if p_value >= 1e-4 else "< 0.0001"
        lines.append(f"| r{before} {method} -> r{after} {after_method} | {change['problems']} | "
                     f"{net:+d} | {change['gained']} | {change['lost']} | {shown_p} |")  # fmt: skip
    if not lines:
        return ""
    header = "| same problems: from -> to | problems | net | gained | lost | McNemar p |"
    return "\n".join([header, "|---|---|---|---|---|---|", *lines])
