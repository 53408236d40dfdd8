"""The tree rules of rStar-Math as DuckDB SQL over Parquet (docs/algorithm.md).

Each rule lives in one SQL file beside this module, with its test in ``tests/test_sql.py``:

- ``node.sql``, ``path.sql``: the search trees keyed by integers, and every root-to-node path;
- ``trajectories.sql``, ``sft.sql``, ``pairs.sql``: the ``trajectories``, ``sft`` and ``pairs``
  tables of section 3;
- ``round_stats.sql``: what a round produced, per difficulty.

This module only wires files to queries. It opens Parquet inputs (a file, a glob of shards, a
directory of shards, or a list of those) as DuckDB views, checks their columns and tree shape,
runs a query and writes its result with ``COPY ... TO`` a temporary name that is then renamed,
so nothing half-written is left behind. The text formats (prompt, solution, generation prefix)
come from :mod:`pipeline.search.steps` (the prompt as an SQL function, the solution's fixed pieces
as query parameters), so they are defined only there.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from pipeline import ids
from pipeline.config import PairsConfig, SFTConfig
from pipeline.io import atomic_file
from pipeline.search import steps

__all__ = ["derive_pairs", "derive_sft", "derive_trajectories", "round_stats"]

PathLike = str | os.PathLike[str]
Source = PathLike | Sequence[PathLike]

SQL_DIR = Path(__file__).parent

# The solution text is an opening marker and the step texts; the generation prefix is the prompt,
# a separator and the solution (pipeline.search.steps). The SQL joins the same pieces, taken from
# there.
SOLUTION_OPEN = steps.render_solution([])
PREFIX_GLUE = steps.generation_prefix("", [])

# Columns of `nodes` (docs/data-contracts.md) that the tree rules read.
TREE_COLUMNS = (
    "problem_id", "round", "node_id", "parent_id", "child_index", "step_text", "q",
    "is_error", "terminal_kind", "correct",
)  # fmt: skip
STATS_COLUMNS = (
    "problem_id", "round", "depth", "terminal_kind", "correct", "is_error", "code", "tokens",
)  # fmt: skip


# --------------------------------------------------------------------------- public API


def derive_trajectories(nodes_path: Source, out_path: PathLike) -> int:
    """Write the ``trajectories`` table: every root-to-terminal path; returns its row count."""
    with _session() as con:
        _load_trees(con, nodes_path, also_required=("final_answer",))
        return _write(con, "trajectories", {}, out_path)


def derive_sft(
    nodes_path: Source,
    problems_path: Source,
    out_path: PathLike,
    per_problem: int = SFTConfig.per_problem,
) -> int:
    """Write the ``sft`` table: per problem the top correct trajectories (``sft.sql``)."""
    if per_problem < 1:
        raise ValueError(f"per_problem must be at least 1, got {per_problem}")
    with _session() as con:
        _load_trees(con, nodes_path)
        _load_problems(con, problems_path, nodes_path)
        params = {"per_problem": per_problem, "solution_open": SOLUTION_OPEN}
        return _write(con, "sft", params, out_path)


# Q values are W / N, so a margin the rule means to keep can land a hair under the threshold
# (0.7 - 0.2 == 0.49999999999999994): margins within this much of `min_margin` count as equal.
MARGIN_TOLERANCE = 1e-9


def derive_pairs(
    nodes_path: Source,
    problems_path: Source,
    out_path: PathLike,
    min_margin: float = PairsConfig.min_margin,
    min_edit: int = PairsConfig.min_edit,
    heldout_fraction: float = PairsConfig.heldout_fraction,
) -> int:
    """Write the ``pairs`` table: step-level preference pairs for the PPM (``pairs.sql``)."""
    if not 0.0 <= heldout_fraction <= 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1], got {heldout_fraction}")
    # A NaN margin would silently drop every pair; int() would silently cut a min_edit of 19.5 to 19.
    if not math.isfinite(min_margin):
        raise ValueError(f"min_margin must be a finite number, got {min_margin}")
    if min_edit < 0 or min_edit != int(min_edit):
        raise ValueError(f"min_edit must be a whole number >= 0, got {min_edit}")
    params = {
        "min_margin": float(min_margin) - MARGIN_TOLERANCE,
        "min_edit": int(min_edit),
        "heldout_fraction": float(heldout_fraction),
        "prefix_glue": PREFIX_GLUE,
    }
    with _session() as con:
        _load_trees(con, nodes_path)
        _load_problems(con, problems_path, nodes_path)
        return _write(con, "pairs", params, out_path)


def round_stats(
    nodes_path: Source,
    problems_path: Source,
    sft_path: Source | None = None,
    pairs_path: Source | None = None,
) -> dict[str, Any]:
    """Statistics of each round, in total and per difficulty (``round_stats.sql``).

    Returns ``{"rounds": {"<round>": {"total": {...}, "by_difficulty": {"<level>": {...}}}}}``;
    a problem without a ``level`` in its meta JSON has difficulty ``"all"``. ``sft_rows`` and
    ``pairs`` are reported only when their table is given.
    """
    with _session() as con:
        _attach(con, "nodes_input", nodes_path, "nodes", STATS_COLUMNS)
        _attach(
            con, "problems_input", problems_path, "problems", ("problem_id",), {"meta": "VARCHAR"}
        )
        for view, source, table in (
            ("sft_input", sft_path, "sft"),
            ("pairs_input", pairs_path, "pairs"),
        ):
            if source is None:
                con.execute(
                    f"CREATE VIEW {view} AS SELECT NULL AS round, NULL AS problem_id LIMIT 0"
                )
            else:
                _attach(con, view, source, table, ("problem_id", "round"))
        result = con.execute(_sql("round_stats"))
        columns = [d[0] for d in result.description]
        rows = [dict(zip(columns, row)) for row in result.fetchall()]
    dropped = {"round", "is_total", "difficulty"}
    dropped |= {"sft_rows"} if sft_path is None else set()
    dropped |= {"pairs"} if pairs_path is None else set()
    rounds: dict[str, Any] = {}
    for row in rows:
        stats = {key: _plain(value) for key, value in row.items() if key not in dropped}
        entry = rounds.setdefault(str(row["round"]), {"total": {}, "by_difficulty": {}})
        if row["is_total"]:
            entry["total"] = stats
        else:
            entry["by_difficulty"][str(row["difficulty"])] = stats
    return {"rounds": rounds}


# --------------------------------------------------------------------------- inputs


def _session() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that knows the prompt format of pipeline.search.steps and the
    hash position of pipeline.ids (the split of pairs by problem)."""
    con = duckdb.connect()
    # Every output query ends in ORDER BY; the intermediate tables need no order, and letting
    # DuckDB drop it makes them cheaper to build.
    con.execute("SET preserve_insertion_order = false")
    con.create_function("sft_prompt", _sft_prompts, ["VARCHAR"], "VARCHAR", type="arrow")
    con.execute(ids.HASH_POSITION_MACRO)
    return con


def _sft_prompts(questions: pa.Array) -> pa.Array:
    """steps.sft_prompt over a column of questions (a DuckDB arrow function)."""
    return pa.array([steps.sft_prompt(q) for q in questions.to_pylist()], type=pa.string())


def _parquet_files(source: Source, table: str) -> list[str]:
    """Resolve a file, glob, directory or list of those to Parquet files, or fail naming it."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not items:
        raise FileNotFoundError(f"{table}: no Parquet file given")
    files: list[str] = []
    for item in items:
        text = os.fspath(item)
        if os.path.isfile(text):
            matched = [text]
        elif os.path.isdir(text):
            matched = sorted(glob.glob(os.path.join(text, "**", "*.parquet"), recursive=True))
        else:
            matched = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
        if not matched:
            raise FileNotFoundError(f"{table}: no Parquet file at {text!r}")
        files.extend(matched)
    return files


def _label(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    return repr([os.fspath(item) for item in source])


def _attach(
    con: duckdb.DuckDBPyConnection,
    view: str,
    source: Source,
    table: str,
    required: Sequence[str],
    optional: dict[str, str] | None = None,
) -> None:
    """Create ``view`` over the Parquet files of ``source``; fail on a missing column.

    ``optional`` maps columns that may be absent to the SQL type of the NULL that stands in.
    """
    files = ", ".join(sql_literal(f) for f in _parquet_files(source, table))
    try:
        con.execute(
            f"CREATE VIEW {view}_file AS SELECT * FROM read_parquet([{files}], union_by_name = true)"
        )
        present = {row[0] for row in con.execute(f"DESCRIBE {view}_file").fetchall()}
    except duckdb.Error as error:
        first_line = str(error).strip().splitlines()[0]
        raise ValueError(f"{table} file {_label(source)}: cannot read it: {first_line}") from None
    missing = [column for column in required if column not in present]
    if missing:
        raise ValueError(f"{table} file {_label(source)}: missing column(s) {', '.join(missing)}")
    fillers = "".join(
        f", CAST(NULL AS {sql_type}) AS {column}"
        for column, sql_type in (optional or {}).items()
        if column not in present
    )
    con.execute(f"CREATE VIEW {view} AS SELECT *{fillers} FROM {view}_file")


def _load_trees(
    con: duckdb.DuckDBPyConnection, source: Source, also_required: Sequence[str] = ()
) -> None:
    """Build the tables ``node`` and ``path`` from a nodes table, checking its tree shape."""
    optional = {} if "final_answer" in also_required else {"final_answer": "VARCHAR"}
    _attach(con, "nodes_input", source, "nodes", (*TREE_COLUMNS, *also_required), optional)
    con.execute(f"CREATE TEMP TABLE node AS {_sql('node')}")
    _check_trees(con, _label(source))
    con.execute(f"CREATE TEMP TABLE path AS {_sql('path')}")
    counts = con.execute("SELECT (SELECT count(*) FROM node), (SELECT count(*) FROM path)")
    n_nodes, n_reached = counts.fetchone() or (0, 0)
    if n_reached != n_nodes:
        unreachable = con.execute(
            "SELECT problem_id, round, node_id FROM node ANTI JOIN path USING (nid) LIMIT 1"
        ).fetchone() or ("?", "?", "?")
        raise ValueError(
            f"nodes file {_label(source)}: node {unreachable[2]!r} of problem {unreachable[0]!r} "
            f"round {unreachable[1]} is not reachable from its root (parent_id cycle)"
        )


# Each check: a query returning an offending row, and the message it becomes.
_TREE_CHECKS: tuple[tuple[str, str], ...] = (
    (
        "SELECT problem_id, round, node_id FROM node "
        + "WHERE problem_id IS NULL OR round IS NULL OR node_id IS NULL LIMIT 1",
        "a node has a null problem_id, round or node_id: {row}",
    ),
    (
        "SELECT problem_id, round, node_id FROM node GROUP BY ALL HAVING count(*) > 1 LIMIT 1",
        "node_id {row[2]!r} appears twice in the tree of problem {row[0]!r} round {row[1]}",
    ),
    (
        "SELECT problem_id, round, count(*) FILTER (WHERE parent_id IS NULL) AS roots "
        + "FROM node GROUP BY ALL HAVING roots <> 1 LIMIT 1",
        "the tree of problem {row[0]!r} round {row[1]} has {row[2]} roots (parent_id null), "
        + "expected 1",
    ),
    (
        "SELECT problem_id, round, node_id, parent_id FROM node "
        + "WHERE parent_id IS NOT NULL AND parent_nid IS NULL LIMIT 1",
        "node {row[2]!r} of problem {row[0]!r} round {row[1]} has parent_id {row[3]!r}, "
        + "which is not in its tree",
    ),
)


def _check_trees(con: duckdb.DuckDBPyConnection, label: str) -> None:
    for query, message in _TREE_CHECKS:
        row = con.execute(query).fetchone()
        if row is not None:
            raise ValueError(f"nodes file {label}: " + message.format(row=row))


def _load_problems(con: duckdb.DuckDBPyConnection, source: Source, nodes_source: Source) -> None:
    """Build the table ``problem`` (problem_id, question, prompt) for every tree's problem."""
    _attach(con, "problems_input", source, "problems", ("problem_id", "question"))
    con.execute(
        "CREATE TEMP TABLE problem_text AS "
        "SELECT CAST(problem_id AS VARCHAR) AS problem_id, "
        "count(DISTINCT question) AS n_questions, any_value(CAST(question AS VARCHAR)) AS question "
        "FROM problems_input "
        "WHERE CAST(problem_id AS VARCHAR) IN (SELECT DISTINCT problem_id FROM node) GROUP BY 1"
    )
    conflict = con.execute(
        "SELECT problem_id, n_questions FROM problem_text WHERE n_questions <> 1 LIMIT 1"
    ).fetchone()
    if conflict:
        problem = "has different questions" if conflict[1] else "has no question"
        raise ValueError(f"problems file {_label(source)}: problem_id {conflict[0]!r} {problem}")
    absent = con.execute(
        "SELECT DISTINCT problem_id FROM node ANTI JOIN problem_text USING (problem_id) LIMIT 1"
    ).fetchone()
    if absent:
        raise ValueError(
            f"problems file {_label(source)}: no row for problem_id {absent[0]!r} "
            f"of nodes file {_label(nodes_source)}"
        )
    con.execute(
        "CREATE TEMP TABLE problem AS "
        "SELECT problem_id, question, sft_prompt(question) AS prompt FROM problem_text"
    )


# --------------------------------------------------------------------------- output


@cache
def _sql(name: str) -> str:
    """The query of ``<name>.sql`` beside this module."""
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def _write(
    con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any], out_path: PathLike
) -> int:
    """COPY the result of ``query`` to Parquet under a temporary name, then rename it."""
    with atomic_file(out_path) as tmp:
        copy = f"COPY ({_sql(query)}) TO {sql_literal(str(tmp))} (FORMAT parquet)"
        written = con.execute(copy, params).fetchone()
    return int(written[0]) if written else 0


def sql_literal(text: str | os.PathLike) -> str:
    """A SQL string literal (a path or a value), quotes escaped."""
    return "'" + str(text).replace("'", "''") + "'"


def _plain(value: Any) -> Any:
    """A JSON-serialisable number (DuckDB sums come back as Decimal or large ints)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return float(value)
