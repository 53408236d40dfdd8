"""The results tables of a build: one Markdown row per round from data/metrics/rN.json, and the
rounds' greedy accuracies compared problem by problem from the evaluations (data/eval/rN.json,
round 0 in the warm start's metrics).

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


def read_evaluations(folder: Path, warm_start_metrics: Path) -> dict[int, dict]:
    """Each round's evaluation by round number (0: the warm start's, when it has one); an
    unreadable file is a one-line error, a missing one is left out."""
    found: dict[int, dict] = {}
    sources = [(0, warm_start_metrics)] + [
        (_round_number(path), path) for path in folder.glob("r*.json")
    ]
    for number, path in sources:
        if number == 1 << 30 or not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not a JSON file ({error})") from None
        evaluation = data.get("eval") if number == 0 else data
        if evaluation:
            found[number] = evaluation
    return dict(sorted(found.items()))


def paired_table(evaluations: dict[int, dict]) -> str:
    """Markdown rows comparing results on the same problems: greedy of each round against the
    round before, then of rounds 1 and 0 against the last; then, in the last round, each PPM
    method against greedy and majority vote. Empty when nothing has per-problem results."""
    rounds = sorted(evaluations)
    rows = [(f"r{a} greedy", f"r{b} greedy", a, b, "greedy", "greedy") for a, b in zip(rounds, rounds[1:])]  # fmt: skip
    last = rounds[-1] if rounds else None
    for first in (1, 0):
        if first in evaluations and last is not None and last - first > 1:
            rows.append((f"r{first} greedy", f"r{last} greedy", first, last, "greedy", "greedy"))
    if last is not None:
        methods = evaluations[last].get("accuracy", {})
        baselines = [m for m in methods if m == "greedy" or m.startswith("maj_at_")]
        for method in (m for m in methods if m.startswith("ppm_")):
            rows += [(f"r{last} {base}", f"r{last} {method}", last, last, base, method)
                     for base in baselines]  # fmt: skip
    lines = []
    for name_before, name_after, before, after, method, after_method in rows:
        change = paired_change(evaluations[before], evaluations[after], method, after_method)
        if change is None:
            continue
        net, p_value = change["gained"] - change["lost"], change["p_value"]
        shown_p = f"{p_value:.4f}" if p_value >= 1e-4 else "< 0.0001"
        lines.append(f"| {name_before} -> {name_after} | {change['problems']} | {net:+d} | "
                     f"{change['gained']} | {change['lost']} | {shown_p} |")  # fmt: skip
    if not lines:
        return ""
    header = "| same problems: from -> to | problems | net | gained | lost | McNemar p |"
    return "\n".join([header, "|---|---|---|---|---|---|", *lines])
