"""Stage `validate@rN`: check a round's tables against their contracts (docs/data-contracts.md).

Validates data/seeds/problems.parquet and those of data/rounds/rN/{nodes, trajectories, sft,
pairs}.parquet that exist, every problem id against the problems table and the pairs' margins
against params `pairs.min_margin`. Writes the full report of each table to
data/rounds/rN/validation/<table>.json and the summary data/rounds/rN/validation.json
({table: {success, checks, failed, rows}}), prints the short reports, and exits 1 when any
table breaks its contract (a violation fails the stage), 2 on bad usage.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pipeline import layout
from pipeline.config import PairsConfig, ParamsError, group, load_params
from pipeline.io import write_json
from pipeline.rules.checks import ValidationError, ValidationReport, validate_table, write_report
from stages.common import exit_without_teardown, round_arguments

ROUND_TABLES = ("nodes", "trajectories", "sft", "pairs")


def min_margin(params_path: str | Path) -> float:
    """`pairs.min_margin` from the params file (docs/algorithm.md)."""
    return group(load_params(params_path), "pairs", PairsConfig).min_margin


def validate_round(round_key: str, margin: float) -> dict[str, ValidationReport]:
    """Reports of the problems table and the round's tables that exist, in pipeline order."""
    out_dir = layout.round_dir(round_key)
    present = [table for table in ROUND_TABLES if (out_dir / f"{table}.parquet").exists()]
    if not present:
        raise ValidationError(f"{out_dir}: none of {', '.join(ROUND_TABLES)}.parquet to validate")
    reports = {"problems": validate_table("problems", layout.PROBLEMS)}
    for table in present:
        reports[table] = validate_table(
            table, out_dir / f"{table}.parquet", problems_path=layout.PROBLEMS, min_margin=margin
        )
    return reports


def write_reports(round_key: str, reports: dict[str, ValidationReport]) -> None:
    out_dir = layout.round_dir(round_key)
    for table, report in reports.items():
        write_report(report, out_dir / "validation" / f"{table}.json")
    summary = {
        table: {
            "success": report.success,
            "checks": len(report.checks) - len(report.skipped),
            "failed": len(report.failures),
            "rows": report.rows,
        }
        for table, report in reports.items()
    }
    write_json(out_dir / "validation.json", summary)


def main(argv: list[str] | None = None) -> int:
    args = round_arguments(__doc__, argv)
    started = time.perf_counter()
    try:
        layout.round_number(args.round)
        reports = validate_round(args.round, min_margin(args.params))
    except (ValidationError, ParamsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_reports(args.round, reports)
    for report in reports.values():
        print(report.summary())
    broken = [table for table, report in reports.items() if not report.success]
    seconds = time.perf_counter() - started
    verdict = f"contract broken: {', '.join(broken)}" if broken else "all tables valid"
    print(
        f"{args.round}: {verdict} ({seconds:.1f} s); reports in {layout.round_dir(args.round) / 'validation'}"
    )
    return 1 if broken else 0


if __name__ == "__main__":
    exit_without_teardown(main())
