"""``rstar validate TABLE PATH``: the validation report for people (README.md).

Exit codes: 0 the file keeps its contract, 1 it breaks it, 2 bad usage or an unreadable file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.config import PairsConfig
from pipeline.rules.checks.report import write_report
from pipeline.rules.checks.validate import ValidationError, validate_table

OK, BROKEN, USAGE = 0, 1, 2


def run_validate_cli(
    table: str,
    path: str | Path,
    problems_path: str | Path | None = None,
    min_margin: float = PairsConfig.min_margin,
    report_path: str | Path | None = None,
) -> int:
    """Validate, print the short report, write the full JSON report when asked; the exit code."""
    try:
        report = validate_table(table, path, problems_path=problems_path, min_margin=min_margin)
    except ValidationError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE
    print(report.summary())
    if report_path is not None:
        write_report(report, report_path)
    return OK if report.success else BROKEN
