"""Table validation: every Parquet table of docs/data-contracts.md against its contract.

    report = validate_table("nodes", "data/rounds/r1/nodes.parquet",
                            problems_path="data/seeds/problems.parquet")
    print(report.summary())          # the verdict and, per failed check, counts and examples
    write_report(report, "data/rounds/r1/validation/nodes.json")

Modules, one job each: ``contracts`` (columns and types), ``rules`` (value rules),
``schema`` (types from the Parquet schema), ``gx_suite`` (Great Expectations suites),
``sql_checks`` (DuckDB rules GX lacks), ``report`` (results), ``validate`` (the three passes),
``cli`` (``rstar validate``). Great Expectations is imported only when a validation runs.
"""

from __future__ import annotations

from pipeline.rules.checks.cli import run_validate_cli
from pipeline.rules.checks.contracts import CONTRACTS, TABLES
from pipeline.rules.checks.report import CheckResult, Failure, ValidationReport, write_report
from pipeline.rules.checks.validate import ValidationError, validate_table

__all__ = [
    "CONTRACTS",
    "TABLES",
    "CheckResult",
    "Failure",
    "ValidationError",
    "ValidationReport",
    "run_validate_cli",
    "validate_table",
    "write_report",
]
