"""Content diffs between two versions of the dataset (docs/data-contracts.md: stable ids).

Every table carries content-derived ids, so two revisions of the repository can be compared row
by row: ``diff_revisions(repo, "HEAD~1")`` reads the tables of both revisions through DVC's file
system (git-tracked files from git, DVC outputs from the cache; the work tree is never checked
out), joins them in DuckDB on their stable ids and reports, per table and round, rows added,
removed and changed, problems newly solved or lost, SFT and pair counts, accuracy deltas
(data/eval/rN.json) and the params that differ (DVC's params diff).

    report = diff_revisions(Path("."), "HEAD~1")      # HEAD~1 against the work tree
    print(format_text(report))                        # or format_markdown (a PR comment), render_json

A table absent from one revision counts as empty there, with a note. Rounds are the folders
data/rounds/rN that hold at least one table, in either revision.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from dvc.exceptions import DvcException

from pipeline import layout
from pipeline.rules.sql import sql_literal

WORKSPACE = "workspace"

# The stable ids of each table (docs/data-contracts.md); round tables are compared within a round.
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "problems": ("problem_id",),
    "nodes": ("node_id",),
    "trajectories": ("leaf_id",),
    "sft": ("problem_id", "rank"),
    "pairs": ("node_id", "chosen", "rejected"),
}
ROUND_TABLES = ("nodes", "trajectories", "sft", "pairs")
MAX_LISTED_IDS = 20  # problem ids listed per round for newly solved / lost


class DiffError(ValueError):
    """Bad usage: an unknown revision, a path that is not a DVC repository, an unreadable file."""


@dataclass
class Revision:
    """One side of the diff: a git revision (or the work tree) and where its files were fetched."""

    rev: str | None  # None: the work tree
    label: str  # what the user asked for, e.g. HEAD~1 or workspace
    commit: str  # short commit id, or "workspace"
    fs: Any  # dvc.api.DVCFileSystem
    local: Path  # temp folder its files are fetched into
    root: Path  # the repository (the work tree's files are read in place)


# --------------------------------------------------------------------------- reading revisions


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DiffError(f"{repo}: git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _open_revision(repo: Path, rev: str | None, scratch: Path) -> Revision:
    """Resolve ``rev`` (None: the work tree) and open DVC's file system at it."""
    from dvc.api import DVCFileSystem

    label = WORKSPACE if rev is None else rev
    commit = WORKSPACE
    if rev is not None:
        try:
            commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")[:8]
        except DiffError:
            raise DiffError(f"{repo}: unknown git revision {rev!r}") from None
    try:
        fs = DVCFileSystem(str(repo), rev=rev)
    except DvcException as error:  # NotDvcRepoError, SCM errors, ...
        raise DiffError(f"{repo}: cannot open the DVC repository at {label}: {error}") from None
    local = scratch / ("b" if rev is None else f"a-{commit}")
    local.mkdir(parents=True, exist_ok=True)
    return Revision(rev, label, commit, fs, local, repo)


def _fetch(side: Revision, path: str) -> Path | None:
    """The file ``path`` of ``side`` as a local file, or None when that revision lacks it.

    An output that dvc.yaml declares but no dvc.lock records (never built at that revision)
    is missing too; one that dvc.lock records but the cache lacks is an error.
    """
    if side.rev is None and (side.root / path).is_file():
        return side.root / path  # the work tree: no copy needed
    if not side.fs.exists(path):
        return None
    target = side.local / path
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            side.fs.get_file(path, str(target))
        except (OSError, DvcException) as error:
            if not _recorded(side.fs, path):
                return None
            raise DiffError(
                f"{path} at {side.label}: not in the DVC cache ({error}); run `dvc fetch` for that revision"
            ) from None
    return target


def _recorded(fs: Any, path: str) -> bool:
    """Whether DVC has a hash of ``path`` at the file system's revision."""
    dvc_info = fs.info(path).get("dvc_info") or {}
    entry = dvc_info.get("entry")
    return not dvc_info.get("isout") or getattr(entry, "hash_info", None) is not None


def _read_json(side: Revision, path: str) -> dict | None:
    local = _fetch(side, path)
    return None if local is None else json.loads(local.read_text())


def _rounds(side: Revision) -> set[str]:
    """Round keys whose folder holds at least one table at this revision."""
    found = set()
    for folder in side.fs.glob("data/rounds/r*"):
        key = folder.rstrip("/").rsplit("/", 1)[-1]
        if re.fullmatch(r"r\d+", key) and any(
            side.fs.exists(f"data/rounds/{key}/{table}.parquet") for table in ROUND_TABLES
        ):
            found.add(key)
    return found


# --------------------------------------------------------------------------- comparing tables


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _source(path: Path) -> str:
    return f"read_parquet({sql_literal(path)})"


def compare_tables(
    con: duckdb.DuckDBPyConnection, path_a: Path | None, path_b: Path | None, keys: tuple[str, ...]
) -> dict[str, Any]:
    """Rows of each side, and keys added, removed and changed (same key, other values differ).

    A missing side (None) counts as an empty table with the other side's columns.
    """
    source_a = _source(path_a) if path_a else f"(SELECT * FROM {_source(path_b)} LIMIT 0)"
    source_b = _source(path_b) if path_b else f"(SELECT * FROM {_source(path_a)} LIMIT 0)"
    con.execute(f"CREATE OR REPLACE TEMP VIEW side_a AS SELECT * FROM {source_a}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW side_b AS SELECT * FROM {source_b}")
    columns_a = [row[0] for row in con.sql("DESCRIBE side_a").fetchall()]
    columns_b = [row[0] for row in con.sql("DESCRIBE side_b").fetchall()]
    common = [column for column in columns_a if column in columns_b]
    missing_keys = [key for key in keys if key not in common]
    if missing_keys:
        raise DiffError(f"cannot compare: id column(s) {', '.join(missing_keys)} missing")
    k = ", ".join(_q(key) for key in keys)
    c = ", ".join(_q(column) for column in common)

    def scalar(sql: str) -> int:
        return int(con.sql(sql).fetchall()[0][0])

    result = {
        "rows_a": scalar("SELECT count(*) FROM side_a"),
        "rows_b": scalar("SELECT count(*) FROM side_b"),
        "added": scalar(f"SELECT count(*) FROM (SELECT {k} FROM side_b EXCEPT SELECT {k} FROM side_a)"),
        "removed": scalar(f"SELECT count(*) FROM (SELECT {k} FROM side_a EXCEPT SELECT {k} FROM side_b)"),
        "changed": scalar(
            f"SELECT count(*) FROM (SELECT DISTINCT {k} FROM "
            f"(SELECT {c} FROM side_b EXCEPT SELECT {c} FROM side_a) AS differing "
            f"SEMI JOIN side_a USING ({k}))"
        ),
    }  # fmt: skip
    schema_change = {
        "columns_added": [column for column in columns_b if column not in columns_a],
        "columns_removed": [column for column in columns_a if column not in columns_b],
    }
    if path_a and path_b and (schema_change["columns_added"] or schema_change["columns_removed"]):
        result.update(schema_change)
    return result


def solved_problems(con: duckdb.DuckDBPyConnection, nodes: Path | None) -> set[str]:
    """Problems with at least one correct (graded) terminal in a round's tree."""
    if nodes is None:
        return set()
    rows = con.sql(f"SELECT DISTINCT problem_id FROM {_source(nodes)} WHERE correct").fetchall()
    return {row[0] for row in rows}


def _count_delta(a: int, b: int) -> dict[str, int]:
    return {"a": a, "b": b, "delta": b - a}


def accuracy_deltas(eval_a: dict | None, eval_b: dict | None) -> dict[str, dict[str, float | None]]:
    """Per `accuracy` key of data/eval/rN.json: before, after and after - before."""
    acc_a = (eval_a or {}).get("accuracy") or {}
    acc_b = (eval_b or {}).get("accuracy") or {}
    deltas = {}
    for name in sorted(set(acc_a) | set(acc_b)):
        a, b = acc_a.get(name), acc_b.get(name)
        delta = b - a if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
        deltas[name] = {"a": a, "b": b, "delta": delta}
    return deltas


# --------------------------------------------------------------------------- the report


def params_diff(repo: Path, rev_a: str, rev_b: str | None) -> dict[str, dict[str, Any]]:
    """Params that differ, as DVC reports them: {"group.key": {"old": ..., "new": ...}}."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        found = dvc_repo.params.diff(a_rev=rev_a, b_rev=rev_b or WORKSPACE).get("diff", {})
    changed = {}
    for file_name, entries in sorted(found.items()):
        prefix = "" if file_name == "params.yaml" else f"{file_name}:"
        for name, entry in sorted(entries.items()):
            changed[prefix + name] = {"old": entry.get("old"), "new": entry.get("new")}
    return changed


def _round_report(
    con: duckdb.DuckDBPyConnection, side_a: Revision, side_b: Revision, key: str, notes: list[str]
) -> dict[str, Any]:
    folder = layout.round_dir(key).as_posix()
    tables: dict[str, Any] = {}
    paths: dict[str, tuple[Path | None, Path | None]] = {}
    for table in ROUND_TABLES:
        path = f"{folder}/{table}.parquet"
        a, b = _fetch(side_a, path), _fetch(side_b, path)
        paths[table] = (a, b)
        if a is None and b is None:
            continue
        for side, local in ((side_a, a), (side_b, b)):
            if local is None:
                notes.append(f"{path}: missing at {side.label}, counted as empty")
        tables[table] = compare_tables(con, a, b, TABLE_KEYS[table])
    solved_a = solved_problems(con, paths["nodes"][0])
    solved_b = solved_problems(con, paths["nodes"][1])
    eval_path = f"data/eval/{key}.json"
    eval_a, eval_b = _read_json(side_a, eval_path), _read_json(side_b, eval_path)
    for side, found in ((side_a, eval_a), (side_b, eval_b)):
        if found is None:
            hint = " (metrics are read from git: commit them)" if side.rev is not None else ""
            notes.append(f"{eval_path}: missing at {side.label}, no accuracy for that side{hint}")
    empty = {"rows_a": 0, "rows_b": 0}
    return {
        "tables": tables,
        "solved": {
            "a": len(solved_a),
            "b": len(solved_b),
            "newly_solved": sorted(solved_b - solved_a)[:MAX_LISTED_IDS],
            "lost": sorted(solved_a - solved_b)[:MAX_LISTED_IDS],
            "newly_solved_count": len(solved_b - solved_a),
            "lost_count": len(solved_a - solved_b),
        },
        "sft_rows": _count_delta(*(tables.get("sft", empty)[f"rows_{s}"] for s in "ab")),
        "pairs": _count_delta(*(tables.get("pairs", empty)[f"rows_{s}"] for s in "ab")),
        "accuracy": accuracy_deltas(eval_a, eval_b),
    }


def diff_revisions(repo: Path, rev_a: str = "HEAD~1", rev_b: str | None = None) -> dict[str, Any]:
    """Compare the dataset at ``rev_a`` with ``rev_b`` (None: the work tree), as a JSON-able dict.

    Keys: ``a`` and ``b`` (revision labels and commits), ``params`` (what differs), ``problems``
    (the seeds table), ``rounds`` ({rN: tables, solved, sft_rows, pairs, accuracy}) and
    ``notes`` (tables or metrics missing from one side). ``a``/``b`` in every entry are the
    values at ``rev_a`` and ``rev_b``; ``delta`` is b - a.
    """
    repo = Path(repo).resolve()
    if not (repo / ".dvc").is_dir():
        raise DiffError(f"{repo}: not a DVC repository (no .dvc folder)")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rstar-diff-") as scratch:
        side_a = _open_revision(repo, rev_a, Path(scratch))
        side_b = _open_revision(repo, rev_b, Path(scratch))
        con = duckdb.connect()
        try:
            problems_path = layout.PROBLEMS.as_posix()
            pa, pb = _fetch(side_a, problems_path), _fetch(side_b, problems_path)
            problems = compare_tables(con, pa, pb, TABLE_KEYS["problems"]) if pa or pb else None
            for side, local in ((side_a, pa), (side_b, pb)):
                if local is None:
                    notes.append(f"{problems_path}: missing at {side.label}, counted as empty")
            keys = sorted(_rounds(side_a) | _rounds(side_b), key=layout.round_number)
            rounds = {key: _round_report(con, side_a, side_b, key, notes) for key in keys}
        finally:
            con.close()
    return {
        "a": {"rev": side_a.label, "commit": side_a.commit},
        "b": {"rev": side_b.label, "commit": side_b.commit},
        "params": params_diff(repo, rev_a, rev_b),
        "problems": problems,
        "rounds": rounds,
        "notes": notes,
    }


# --------------------------------------------------------------------------- formatting


def _side(entry: dict[str, str]) -> str:
    return (
        entry["rev"] if entry["rev"] == entry["commit"] else f"{entry['rev']} ({entry['commit']})"
    )


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _signed(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" if isinstance(value, float) else f"{value:+d}"


def _table_rows(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    rows = [("–", "problems", report["problems"])] if report["problems"] else []
    for key, entry in report["rounds"].items():
        rows += [(key, table, stats) for table, stats in entry["tables"].items()]
    return rows


def _schema_note(stats: dict[str, Any]) -> str:
    parts = [f"+{c}" for c in stats.get("columns_added", [])]
    parts += [f"-{c}" for c in stats.get("columns_removed", [])]
    return f" (columns {', '.join(parts)})" if parts else ""


def format_text(report: dict[str, Any]) -> str:
    """A terminal report: params, then per table and round the row changes, solved, accuracy."""
    lines = [f"dataset diff: {_side(report['a'])} -> {_side(report['b'])}"]
    params = report["params"]
    lines.append("params: " + ("unchanged" if not params else ""))
    lines += [f"  {name}: {_number(v['old'])} -> {_number(v['new'])}" for name, v in params.items()]
    lines.append(f"{'round':<6}{'table':<14}{'rows':>16}{'added':>8}{'removed':>9}{'changed':>9}")
    for key, table, stats in _table_rows(report):
        rows = f"{stats['rows_a']} -> {stats['rows_b']}"
        lines.append(
            f"{key:<6}{table:<14}{rows:>16}{stats['added']:>8}{stats['removed']:>9}"
            f"{stats['changed']:>9}{_schema_note(stats)}"
        )
    for key, entry in report["rounds"].items():
        solved = entry["solved"]
        lines.append(
            f"{key}: solved {solved['a']} -> {solved['b']} (newly solved {solved['newly_solved_count']}, "
            f"lost {solved['lost_count']}); sft rows {_signed(entry['sft_rows']['delta'])}, "
            f"pairs {_signed(entry['pairs']['delta'])}"
        )
        for name, acc in entry["accuracy"].items():
            lines.append(
                f"  accuracy {name}: {_number(acc['a'])} -> {_number(acc['b'])} ({_signed(acc['delta'])})"
            )
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def format_markdown(report: dict[str, Any]) -> str:
    """A pull-request comment: params, table changes, solved problems and accuracy as tables."""
    lines = [f"### Dataset diff: `{_side(report['a'])}` → `{_side(report['b'])}`", ""]
    if report["params"]:
        lines += ["**Params changed**", ""]
        lines += _md_table(["param", "before", "after"], [
            [f"`{name}`", f"`{_number(v['old'])}`", f"`{_number(v['new'])}`"]
            for name, v in report["params"].items()
        ])  # fmt: skip
    else:
        lines += ["Params unchanged.", ""]
    lines += ["**Tables** (rows matched on their stable ids)", ""]
    lines += _md_table(
        ["round", "table", "rows before", "rows after", "added", "removed", "changed"],
        [[key, f"`{table}`{_schema_note(s)}", s["rows_a"], s["rows_b"], s["added"], s["removed"],
          s["changed"]] for key, table, s in _table_rows(report)],
    )  # fmt: skip
    if report["rounds"]:
        lines += ["**Rounds**", ""]
        lines += _md_table(
            ["round", "solved", "newly solved", "lost", "SFT rows", "pairs"],
            [[key, f"{e['solved']['a']} → {e['solved']['b']}", e["solved"]["newly_solved_count"],
              e["solved"]["lost_count"], f"{e['sft_rows']['a']} → {e['sft_rows']['b']}",
              f"{e['pairs']['a']} → {e['pairs']['b']}"] for key, e in report["rounds"].items()],
        )  # fmt: skip
        accuracy = [
            [key, name, _number(acc["a"]), _number(acc["b"]), _signed(acc["delta"])]
            for key, entry in report["rounds"].items()
            for name, acc in entry["accuracy"].items()
        ]
        if accuracy:
            lines += ["**Held-out accuracy**", ""]
            lines += _md_table(["round", "metric", "before", "after", "Δ"], accuracy)
    if report["notes"]:
        lines += ["<details><summary>Notes</summary>", ""]
        lines += [f"- {note}" for note in report["notes"]] + ["", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)


def render(report: dict[str, Any], fmt: str = "text") -> str:
    """``fmt``: text, markdown or json."""
    renderers = {"text": format_text, "markdown": format_markdown, "json": render_json}
    if fmt not in renderers:
        raise DiffError(f"unknown format {fmt!r}; expected one of {', '.join(renderers)}")
    return renderers[fmt](report)


def run_diff_cli(repo: Path, rev_a: str, rev_b: str | None, fmt: str) -> tuple[int, str]:
    """What `rstar diff` prints and its exit code (2 with a one-line error on bad usage)."""
    try:
        return 0, render(diff_revisions(repo, rev_a, rev_b), fmt)
    except DiffError as error:
        return 2, f"error: {error}"
