"""Validate one table file against its contract (docs/data-contracts.md).

Three passes, each over what it needs only:

1. the Parquet schema (no rows read): every column present with a type of its kind;
2. Great Expectations over a pandas frame of just the columns its expectations name: nulls,
   ranges, allowed values, uniqueness;
3. DuckDB queries straight over the Parquet file: rules across rows, lists, trees and tables.

A check that reads a missing or mistyped column is skipped (and says so): the schema failure
already names the cause, and the check could only fail for the same reason.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import PairsConfig
from pipeline.rules.checks.contracts import CONTRACTS, TABLES, Contract
from pipeline.rules.checks.gx_suite import run_suite
from pipeline.rules.checks.report import SKIPPED, CheckResult, ValidationReport
from pipeline.rules.checks.rules import Check, not_null, value_checks
from pipeline.rules.checks.schema import schema_checks
from pipeline.rules.checks.sql_checks import connect, run_sql_check


class ValidationError(ValueError):
    """Bad usage rather than bad data: unknown table, missing or unreadable file."""


def read_schema(path: Path, what: str) -> tuple[pa.Schema, int]:
    """The Arrow schema and row count of a Parquet file; a one-line error when it has none."""
    if not path.is_file():
        raise ValidationError(f"{path}: no such {what} file")
    try:
        metadata = pq.read_metadata(path)
        return metadata.schema.to_arrow_schema(), metadata.num_rows
    except (pa.ArrowException, OSError) as error:
        raise ValidationError(f"{path}: not a readable Parquet file ({error})") from None


def validate_table(
    table: str,
    path: str | Path,
    *,
    problems_path: str | Path | None = None,
    min_margin: float = PairsConfig.min_margin,
) -> ValidationReport:
    """Check ``path`` against the ``table`` contract; problem ids against ``problems_path``.

    ``min_margin`` is the pairs' margin threshold (params ``pairs.min_margin``, docs/algorithm.md).
    Raises :class:`ValidationError` for an unknown table or a missing/unreadable file; broken
    data is never an exception, it is a failed check in the report.
    """
    if table not in CONTRACTS:
        raise ValidationError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    started = time.perf_counter()
    path = Path(path)
    contract = CONTRACTS[table]
    schema, rows = read_schema(path, table)
    problems = _problems_source(problems_path) if table != "problems" else None

    results = schema_checks(contract, schema, rows)
    usable = {result.columns[0] for result in results if not result.failed}
    checks = planned_checks(table, min_margin=min_margin, with_problems=problems is not None)
    ran = _run(path, problems, [c for c in checks if set(c.columns) <= usable], usable, contract)
    results += [ran.get(check.name) or _skipped(check, usable) for check in checks]
    return ValidationReport(
        table=table,
        path=str(path),
        rows=rows,
        checks=results,
        seconds=time.perf_counter() - started,
        params={"min_margin": min_margin, "problems_path": str(problems) if problems else None},
    )


def planned_checks(table: str, *, min_margin: float, with_problems: bool) -> list[Check]:
    """Every check of ``table`` beyond its schema: nulls first, then the value rules."""
    contract = CONTRACTS[table]
    checks = [not_null(c.name, large=c.large) for c in contract.columns if not c.nullable]
    rules = value_checks(table, min_margin=min_margin)
    return checks + [rule for rule in rules if with_problems or not rule.needs_problems]


def _run(
    path: Path, problems: Path | None, checks: list[Check], usable: set[str], contract: Contract
) -> dict[str, CheckResult]:
    """Run GX over the frame of its columns, then DuckDB over the file; results by check name."""
    id_columns = [column for column in contract.id_columns if column in usable]
    gx_checks = [check for check in checks if check.engine == "gx"]
    sql_checks = [check for check in checks if check.engine == "sql"]
    results = []
    if gx_checks:
        frame = _read_frame(path, gx_checks, id_columns)
        results += run_suite(contract.table, frame, gx_checks, id_columns)
    results += _run_sql(path, problems, sql_checks, id_columns)
    return {result.check: result for result in results}


def _problems_source(problems_path: str | Path | None) -> Path | None:
    if problems_path is None:
        return None
    path = Path(problems_path)
    schema, _ = read_schema(path, "problems")
    if "problem_id" not in schema.names:
        raise ValidationError(f"{path}: the problems table has no problem_id column")
    return path


def _read_frame(path: Path, checks: list[Check], id_columns: list[str]):  # -> pandas.DataFrame
    """The columns the GX checks name (and the ids) as pandas; large columns stay on disk."""
    columns = list(dict.fromkeys([*id_columns, *(c for check in checks for c in check.columns)]))
    return pq.read_table(path, columns=columns).to_pandas()


def _run_sql(
    path: Path, problems: Path | None, checks: list[Check], id_columns: list[str]
) -> list[CheckResult]:
    if not checks:
        return []
    con = connect(path, problems)
    try:
        return [run_sql_check(con, check, id_columns) for check in checks]
    finally:
        con.close()


def _skipped(check: Check, usable: set[str]) -> CheckResult:
    broken = ", ".join(column for column in check.columns if column not in usable)
    return CheckResult(check.name, list(check.columns), check.engine, SKIPPED,
                       detail=f"skipped: needs column(s) {broken}")  # fmt: skip
