"""The value rules of every table (docs/algorithm.md), as declarative checks.

A :class:`Check` is run by exactly one engine:

- ``expectation``: a Great Expectations 1.x expectation, named by its class in
  ``gx.expectations`` with its keyword arguments (built only when run, so importing this module
  does not import GX);
- ``sql``: a rule GX has no expectation for (pairs of rows, trees, lists, other tables), as a
  DuckDB query over the view ``t`` (the table) and, for cross-table rules, ``problems``, that
  returns the rows breaking it. ``{ids}`` in the query stands for the table's id columns, so
  each returned row can be named in the report.

The type and null rules come from :mod:`pipeline.rules.checks.contracts`; here are the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.config import PairsConfig
from pipeline.rules.checks.contracts import PAIR_SPLITS, SPLITS
from pipeline.rules.sql import MARGIN_TOLERANCE
from pipeline.search.tree import TERMINAL_KINDS

TOLERANCE = 1e-6  # for values one column derives from others (q = W / N, margin, mean Q)


@dataclass(frozen=True)
class Check:
    name: str
    columns: tuple[str, ...]
    expectation: str | None = None
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    sql: str | None = None
    needs_problems: bool = False
    unit: str = "rows"  # what the count counts

    @property
    def engine(self) -> str:
        return "gx" if self.expectation else "sql"


# --------------------------------------------------------------------------- GX builders


def not_null(column: str, *, large: bool = False) -> Check:
    """GX for ordinary columns; DuckDB for large ones (free text, lists: see contracts)."""
    name = f"{column} not null"
    if large:
        return sql(name, (column,), f"SELECT {{ids}} {column} FROM t WHERE {column} IS NULL")
    return Check(name, (column,), "ExpectColumnValuesToNotBeNull", {"column": column})


def between(
    column: str, low: float | None, high: float | None, *, strict_low: bool = False
) -> Check:
    """``column in [low, high]`` (``(low, high]`` when ``strict_low``); nulls are not judged."""
    if high is None:
        name = f"{column} {'>' if strict_low else '>='} {low:g}"
    else:
        name = f"{column} in {'(' if strict_low else '['}{low:g}, {high:g}]"
    options = {"column": column, "min_value": low, "max_value": high, "strict_min": strict_low}
    return Check(name, (column,), "ExpectColumnValuesToBeBetween", options)


def in_set(column: str, values: tuple[str, ...]) -> Check:
    name = f"{column} in {{{', '.join(values)}}}"
    return Check(
        name,
        (column,),
        "ExpectColumnValuesToBeInSet",
        {"column": column, "value_set": list(values)},
    )


def unique(*columns: str, name: str | None = None) -> Check:
    name = name or f"{', '.join(columns)} unique"
    if len(columns) == 1:
        return Check(name, columns, "ExpectColumnValuesToBeUnique", {"column": columns[0]})
    # A row with a null key is the not-null check's business, not a duplicate.
    options = {"column_list": list(columns), "ignore_row_if": "any_value_is_missing"}
    return Check(name, columns, "ExpectCompoundColumnsToBeUnique", options)


def sql(
    name: str,
    columns: tuple[str, ...],
    query: str,
    *,
    needs_problems: bool = False,
    unit: str = "rows",
) -> Check:
    return Check(name, columns, sql=query.strip(), needs_problems=needs_problems, unit=unit)


def known_problem() -> Check:
    """Every problem id of a derived table is a row of the problems table (docs/data-contracts.md)."""
    return sql(
        "problem_id in the problems table",
        ("problem_id",),
        "SELECT {ids} problem_id FROM t WHERE problem_id IS NOT NULL "
        "AND problem_id NOT IN (SELECT problem_id FROM problems WHERE problem_id IS NOT NULL)",
        needs_problems=True,
    )


# --------------------------------------------------------------------------- per table


def problems_checks() -> list[Check]:
    return [
        unique("problem_id"),
        in_set("split", SPLITS),
        Check("meta is JSON", ("meta",), "ExpectColumnValuesToBeJsonParseable", {"column": "meta"}),
        sql(
            "problem_id is the hash of the normalised question",
            ("problem_id", "question"),
            "SELECT {ids} question FROM t WHERE problem_id <> rstar_problem_id(question)",
        ),
    ]


# A node's visits and value sum follow from its subtree (docs/data-contracts.md): every graded
# answer below it (itself included) backs up once, r = +1 right / -1 wrong (or its PPM score
# when the search backed up PPM scores, as evaluation does); a PPM-initialised step adds its
# score once; an invalid terminal adds -1 to itself only. This query is the rule's one
# statement: the checks stage runs it on Parquet, and
# pipeline.rules.checks.sql_checks.backup_violations on trees in memory (the tests of the search).
BACKUP_COLUMNS = (
    "problem_id", "round", "node_id", "parent_id", "terminal_kind", "correct", "ppm_score",
    "visits", "value_sum",
)  # fmt: skip
BACKUP_SQL = f"""
WITH RECURSIVE
node AS MATERIALIZED (
    SELECT row_number() OVER () AS nid, {", ".join(BACKUP_COLUMNS)} FROM t
),
keyed AS MATERIALIZED (
    SELECT child.nid, parent.nid AS parent_nid FROM node AS child
    LEFT JOIN node AS parent
        ON parent.problem_id = child.problem_id AND parent.round = child.round
        AND parent.node_id = child.parent_id
),
up(nid, parent_nid, reward, hops) AS (
    SELECT node.nid, keyed.parent_nid,
        CASE WHEN node.ppm_score IS NOT NULL THEN node.ppm_score
             WHEN node.correct THEN 1.0 ELSE -1.0 END,
        0
    FROM node JOIN keyed USING (nid)
    WHERE node.terminal_kind = 'answer'
    UNION ALL
    SELECT keyed.nid, keyed.parent_nid, up.reward, up.hops + 1
    FROM up JOIN keyed ON keyed.nid = up.parent_nid
    WHERE up.hops < 10000
),
backed AS (
    SELECT nid, count(*) AS n, sum(reward) AS w FROM up GROUP BY nid
),
expected AS (
    SELECT node.*,
        coalesce(backed.n, 0)
            + CASE WHEN own_ppm THEN 1 ELSE 0 END + CASE WHEN invalid THEN 1 ELSE 0 END
            AS expected_visits,
        coalesce(backed.w, 0.0)
            + CASE WHEN own_ppm THEN ppm_score ELSE 0.0 END - CASE WHEN invalid THEN 1.0 ELSE 0.0 END
            AS expected_value_sum
    FROM (
        SELECT *,
            ppm_score IS NOT NULL AND terminal_kind IS DISTINCT FROM 'answer' AS own_ppm,
            terminal_kind IS NOT NULL AND terminal_kind <> 'answer' AS invalid
        FROM node
    ) AS node
    LEFT JOIN backed USING (nid)
)
SELECT {{ids}} visits, value_sum, expected_visits, round(expected_value_sum, 6) AS expected_value_sum
FROM expected
WHERE visits <> expected_visits OR abs(value_sum - expected_value_sum) > {TOLERANCE}
"""
BACKUP_CHECK = sql("visits and value_sum follow from the subtree", BACKUP_COLUMNS, BACKUP_SQL)
# The two rules the backup rule rests on: a parent it can walk up to, and q read off W and N.
PARENT_CHECK = sql(
    "parent_id names a node one level up in the same tree",
    ("problem_id", "round", "node_id", "parent_id", "depth"),
    "SELECT {ids} parent_id, depth FROM t AS child WHERE parent_id IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM t AS parent WHERE parent.problem_id = child.problem_id "
    "AND parent.round = child.round AND parent.node_id = child.parent_id "
    "AND parent.depth = child.depth - 1)",
)
Q_CHECK = sql(
    "q = value_sum / visits (0 when unvisited)",
    ("q", "value_sum", "visits"),
    "SELECT {ids} q, value_sum, visits FROM t WHERE abs(q - CASE WHEN visits = 0 THEN 0.0 "
    f"ELSE value_sum / visits END) > {TOLERANCE}",
)


def nodes_checks() -> list[Check]:
    return [
        unique("round", "node_id", name="node_id unique per round"),
        unique(
            "problem_id",
            "round",
            "parent_id",
            "child_index",
            name="child_index unique among siblings",
        ),
        between("q", -1, 1),
        between("ppm_score", -1, 1),
        *(
            between(column, 0, None)
            for column in ("round", "depth", "child_index", "visits", "tokens")
        ),
        in_set("terminal_kind", TERMINAL_KINDS),
        sql(
            "correct set exactly when terminal_kind = 'answer'",
            ("terminal_kind", "correct"),
            "SELECT {ids} terminal_kind, correct FROM t "
            "WHERE coalesce(terminal_kind = 'answer', false) <> (correct IS NOT NULL)",
        ),
        sql(
            "terminal_kind set only on terminal nodes",
            ("terminal_kind", "is_terminal"),
            "SELECT {ids} terminal_kind, is_terminal FROM t "
            "WHERE terminal_kind IS NOT NULL AND NOT is_terminal",
        ),
        sql(
            "parent_id null exactly at depth 0",
            ("parent_id", "depth"),
            "SELECT {ids} parent_id, depth FROM t WHERE (parent_id IS NULL) <> (depth = 0)",
        ),
        sql(
            "one root per tree",
            ("problem_id", "round", "parent_id"),
            "SELECT problem_id, round, count(*) FILTER (WHERE parent_id IS NULL) AS roots "
            "FROM t GROUP BY problem_id, round HAVING roots <> 1",
            unit="trees",
        ),
        PARENT_CHECK,
        sql(
            "node_id is the hash of parent_id and step_text",
            ("problem_id", "node_id", "parent_id", "step_text"),
            "SELECT {ids} parent_id, step_text FROM t WHERE node_id <> CASE WHEN parent_id IS NULL "
            "THEN rstar_root_id(problem_id) ELSE rstar_node_id(parent_id, coalesce(step_text, '')) END",
        ),
        Q_CHECK,
        BACKUP_CHECK,
        known_problem(),
    ]


def trajectories_checks() -> list[Check]:
    return [
        unique("round", "leaf_id", name="leaf_id unique per round"),
        between("mean_q", -1, 1),
        between("min_q", -1, 1),
        sql(
            "node_ids, steps and q_values: one entry per step",
            ("node_ids", "steps", "q_values"),
            "SELECT {ids} len(node_ids) AS n_node_ids, len(steps) AS n_steps, "
            "len(q_values) AS n_q_values FROM t WHERE len(node_ids) = 0 "
            "OR len(node_ids) <> len(steps) OR len(node_ids) <> len(q_values)",
        ),
        sql(
            "leaf_id is the last of node_ids",
            ("leaf_id", "node_ids"),
            "SELECT {ids} node_ids[-1] AS last_node_id FROM t WHERE node_ids[-1] <> leaf_id",
        ),
        sql(
            "q_values in [-1, 1]",
            ("q_values",),
            "SELECT {ids} q_values FROM t WHERE list_min(q_values) < -1 OR list_max(q_values) > 1",
        ),
        sql(
            "mean_q and min_q follow from q_values",
            ("mean_q", "min_q", "q_values"),
            "SELECT {ids} mean_q, min_q, list_avg(q_values) AS mean_of_q_values, "
            f"list_min(q_values) AS min_of_q_values FROM t WHERE abs(mean_q - list_avg(q_values)) "
            f"> {TOLERANCE} OR abs(min_q - list_min(q_values)) > {TOLERANCE}",
        ),
        sql(
            "correct trajectories have a final_answer",
            ("correct", "final_answer"),
            "SELECT {ids} final_answer FROM t WHERE correct AND final_answer IS NULL",
        ),
        known_problem(),
    ]


def sft_checks() -> list[Check]:
    return [
        unique("problem_id", "round", "rank", name="(problem_id, round, rank) unique"),
        between("rank", 1, None),
        between("mean_q", -1, 1),
        sql(
            "ranks run 1, 2, ... per problem",
            ("problem_id", "round", "rank"),
            "SELECT {ids} round FROM t WINDOW w AS (PARTITION BY problem_id, round) "
            "QUALIFY max(rank) OVER w <> count(*) OVER w",
        ),
        sql(
            "mean_q does not rise with rank",
            ("problem_id", "round", "rank", "mean_q"),
            "SELECT {ids} mean_q FROM t QUALIFY mean_q > lag(mean_q) OVER "
            f"(PARTITION BY problem_id, round ORDER BY rank) + {TOLERANCE}",
        ),
        known_problem(),
    ]


def pairs_checks(min_margin: float) -> list[Check]:
    return [
        sql(
            "one pair per (node, chosen, rejected)",
            ("round", "node_id", "chosen", "rejected"),
            "SELECT {ids} chosen, rejected FROM t "
            "QUALIFY count(*) OVER (PARTITION BY round, node_id, chosen, rejected) > 1",
        ),
        between("chosen_q", -1, 1),
        between("rejected_q", -1, 1),
        between("margin", min_margin - MARGIN_TOLERANCE, None),
        between("weight", 0, 1, strict_low=True),
        in_set("split", PAIR_SPLITS),
        sql(
            "chosen != rejected",
            ("chosen", "rejected"),
            "SELECT {ids} chosen FROM t WHERE chosen = rejected",
        ),
        sql(
            "margin = chosen_q - rejected_q",
            ("margin", "chosen_q", "rejected_q"),
            "SELECT {ids} margin, chosen_q, rejected_q FROM t "
            f"WHERE abs(margin - (chosen_q - rejected_q)) > {TOLERANCE}",
        ),
        sql(
            "one split per problem",
            ("problem_id", "split"),
            "SELECT {ids} split FROM t WINDOW w AS (PARTITION BY problem_id) "
            "QUALIFY min(split) OVER w <> max(split) OVER w",
        ),
        known_problem(),
    ]


def value_checks(table: str, *, min_margin: float = PairsConfig.min_margin) -> list[Check]:
    """The value rules of ``table`` beyond its column types and nulls."""
    if table == "pairs":
        return pairs_checks(min_margin)
    return {
        "problems": problems_checks,
        "nodes": nodes_checks,
        "trajectories": trajectories_checks,
        "sft": sft_checks,
    }[table]()
