"""Run the DuckDB part of a table's checks: rules Great Expectations has no expectation for.

Each query returns the rows breaking its rule; the runner counts them and keeps the first
:data:`~pipeline.rules.checks.report.MAX_EXAMPLES` as examples, so the report has the same shape as
a GX result. DuckDB reads only the columns a query names from the Parquet file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import duckdb
import polars as pl

from pipeline import ids
from pipeline.rules.checks.report import FAILED, MAX_EXAMPLES, PASSED, CheckResult, plain
from pipeline.rules.checks.rules import BACKUP_CHECK, PARENT_CHECK, Q_CHECK, Check
from pipeline.rules.sql import sql_literal
from pipeline.search.tree import NODES_SCHEMA


def connect(path: Path, problems_path: Path | None) -> duckdb.DuckDBPyConnection:
    """A connection with views ``t`` (the table), ``problems`` (when given) and the id hashes."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # stage logs stay readable
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet({sql_literal(path)})")
    if problems_path is not None:
        con.execute(
            f"CREATE VIEW problems AS SELECT * FROM read_parquet({sql_literal(problems_path)})"
        )
    # The stable ids of docs/data-contracts.md, defined once in pipeline.ids.
    con.create_function("rstar_problem_id", ids.problem_id, ["VARCHAR"], "VARCHAR")
    con.create_function("rstar_root_id", ids.root_id, ["VARCHAR"], "VARCHAR")
    con.create_function("rstar_node_id", ids.node_id, ["VARCHAR", "VARCHAR"], "VARCHAR")
    return con


def run_sql_check(
    con: duckdb.DuckDBPyConnection, check: Check, id_columns: list[str]
) -> CheckResult:
    """Count the rows the check's query returns; keep a few as examples."""
    assert check.sql is not None
    query = check.sql.replace("{ids}", "".join(f"{column}, " for column in id_columns))
    try:
        cursor = con.execute(
            f"SELECT *, count(*) OVER () AS __bad_rows FROM ({query}) LIMIT {MAX_EXAMPLES}"
        )
        names = [description[0] for description in cursor.description]
        rows = cursor.fetchall()
    except duckdb.Error as error:
        message = str(error).splitlines()[0]
        return CheckResult(
            check.name, list(check.columns), "sql", FAILED, detail=f"error: {message}"
        )
    count = rows[0][-1] if rows else 0
    examples = [plain(dict(zip(names[:-1], row[:-1]))) for row in rows]
    return CheckResult(
        check.name,
        list(check.columns),
        "sql",
        FAILED if count else PASSED,
        count=int(count),
        examples=examples,
        detail="duckdb",
        unit=check.unit,
    )


def backup_violations(nodes: pl.DataFrame | Iterable[dict]) -> list[dict]:
    """Rows of an in-memory ``nodes`` table (a frame, or rows such as ``tree.to_rows`` gives)
    that break the backup rule or the two rules it rests on (a parent one level up in the same
    tree; q = W / N): the very queries the checks stage runs on Parquet. One dict per broken
    row, its check's name under ``check``; empty when every tree is consistent."""
    if not isinstance(nodes, pl.DataFrame):
        rows = list(nodes)
        present = [column for column in NODES_SCHEMA if rows and column in rows[0]]
        nodes = pl.DataFrame(rows, schema={column: NODES_SCHEMA[column] for column in present})
    con = duckdb.connect()
    con.register("t", nodes.to_arrow())
    found = []
    for check in (PARENT_CHECK, Q_CHECK, BACKUP_CHECK):
        query = check.sql.replace("{ids}", "problem_id, round, node_id, ")  # type: ignore[union-attr]
        cursor = con.execute(f"{query} ORDER BY ALL")
        names = [description[0] for description in cursor.description]
        found += [{"check": check.name, **dict(zip(names, row))} for row in cursor.fetchall()]
    return found
