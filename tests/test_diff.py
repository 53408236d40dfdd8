"""`rstar diff`: content diffs between two revisions of the dataset (pipeline.release.diff).

The DVC tests commit the smoke build (revision A), shrink round 2 (`rounds.r2.problems` 8 -> 4,
which reruns round 2's rollout, trajectories, SFT set and pairs: about 30 s) and commit again
(revision B). Every number the diff reports is checked against the two revisions' files, read
here independently with `dvc.api.read` and polars. The fixture puts the smoke repository back
as it found it (params, dvc.lock, outputs, HEAD) for the other tests of the session.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import polars as pl
import pytest
import yaml

from pipeline.release.diff import (
    TABLE_KEYS,
    accuracy_deltas,
    compare_tables,
    diff_revisions,
    format_markdown,
    format_text,
    run_diff_cli,
)
from tests.conftest import dvc

ROUND_TABLES = ("nodes", "trajectories", "sft", "pairs")
SMOKE_PROBLEMS, SHRUNK = 16, 8  # rounds.r2.problems in the smoke profile, and in revision B


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def commit_all(repo: Path, message: str) -> str:
    """Commit params, dvc.lock and the metrics (cache: false outputs live in git, as DVC expects;
    the project's .gitignore hides data/rounds and data/eval, hence the forced add)."""
    git(repo, "add", "-A")
    metrics = [
        *repo.glob("data/rounds/*/*.json"), *repo.glob("data/rounds/*/validation/*.json"),
        *repo.glob("data/eval/*.json"),
    ]  # fmt: skip
    git(repo, "add", "-f", *(str(path.relative_to(repo)) for path in metrics))
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def revisions(smoke_repo):
    """(repo, scratch commit, A, B): A is the smoke build, B has round 2 on fewer problems."""
    repo = smoke_repo
    original = git(repo, "rev-parse", "HEAD")
    rev_a = commit_all(repo, "A: smoke build")
    try:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        assert params["rounds"]["r2"]["problems"] == SMOKE_PROBLEMS, (
            "the smoke profile changed: update this test"
        )
        params["rounds"]["r2"]["problems"] = SHRUNK
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        result = dvc(repo, "repro", "sft@r2", "pairs@r2")
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        rev_b = commit_all(repo, "B: round 2 on fewer problems")
        yield repo, original, rev_a, rev_b
    finally:
        git(repo, "reset", "-q", "--hard", rev_a)  # params, dvc.lock and metrics of A
        restored = dvc(repo, "checkout")  # the DVC outputs of A, from the cache
        git(repo, "reset", "-q", original)  # HEAD back; the work tree stays as A left it
        assert restored.returncode == 0, restored.stderr[-2000:]


# --------------------------------------------------------------------------- expected numbers


def revision_reader(repo: Path, rev: str):
    """A function reading a table of ``rev`` through DVC's file system (None when absent)."""
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(repo), rev=rev)

    def read(path: str) -> pl.DataFrame | None:
        try:
            return pl.read_parquet(io.BytesIO(fs.cat_file(path)))
        except FileNotFoundError:  # absent, or declared in dvc.yaml but not built at ``rev``
            return None

    return read


def expected_changes(a: pl.DataFrame | None, b: pl.DataFrame | None, keys: tuple[str, ...]) -> dict:
    """Rows, and keys added / removed / with other values, worked out with polars joins."""
    a = b.clear() if a is None else a
    b = a.clear() if b is None else b
    key_a, key_b = a.select(keys).unique(), b.select(keys).unique()
    both = a.join(b, on=list(keys), how="inner", suffix="_b", nulls_equal=True)
    others = [c for c in a.columns if c not in keys and c in b.columns]
    differs = pl.any_horizontal(
        [pl.col(c).ne_missing(pl.col(f"{c}_b")) for c in others] or [pl.lit(False)]
    )
    return {
        "rows_a": a.height,
        "rows_b": b.height,
        "added": key_b.join(key_a, on=list(keys), how="anti", nulls_equal=True).height,
        "removed": key_a.join(key_b, on=list(keys), how="anti", nulls_equal=True).height,
        "changed": both.filter(differs).select(keys).unique().height,
    }


def solved(nodes: pl.DataFrame | None) -> set[str]:
    if nodes is None:
        return set()
    return set(nodes.filter(pl.col("correct").fill_null(False))["problem_id"].to_list())


def check_report(report: dict, repo: Path, rev_a: str, rev_b: str) -> None:
    """Every count of ``report`` against the two revisions' files."""
    read_a, read_b = revision_reader(repo, rev_a), revision_reader(repo, rev_b)
    problems = "data/seeds/problems.parquet"
    assert report["problems"] == expected_changes(
        read_a(problems), read_b(problems), ("problem_id",)
    )
    for key, entry in report["rounds"].items():
        tables = {}
        for table in ROUND_TABLES:
            path = f"data/rounds/{key}/{table}.parquet"
            tables[table] = (read_a(path), read_b(path))
            if all(side is None for side in tables[table]):
                assert table not in entry["tables"]
                continue
            assert entry["tables"][table] == expected_changes(*tables[table], TABLE_KEYS[table]), (
                key,
                table,
            )
        solved_a, solved_b = solved(tables["nodes"][0]), solved(tables["nodes"][1])
        assert entry["solved"]["a"] == len(solved_a) and entry["solved"]["b"] == len(solved_b)
        assert entry["solved"]["newly_solved"] == sorted(solved_b - solved_a)
        assert entry["solved"]["lost"] == sorted(solved_a - solved_b)
        for name, side in (("sft_rows", "sft"), ("pairs", "pairs")):
            a, b = (0 if t is None else t.height for t in tables[side])
            assert entry[name] == {"a": a, "b": b, "delta": b - a}


# --------------------------------------------------------------------------- DVC revisions


@pytest.fixture(scope="module")
def report_ab(revisions) -> dict:
    repo, _, rev_a, rev_b = revisions
    return diff_revisions(repo, rev_a, rev_b)


@pytest.mark.slow  # the smoke DAG
def test_diff_of_two_revisions_matches_their_files(revisions, report_ab):
    repo, _, rev_a, rev_b = revisions
    report = report_ab

    assert report["params"] == {"rounds.r2.problems": {"old": SMOKE_PROBLEMS, "new": SHRUNK}}
    assert list(report["rounds"]) == ["r1", "r2"] and report["notes"] == []
    check_report(report, repo, rev_a, rev_b)
    # Round 1 was not rebuilt; round 2 lost the trees of the problems it no longer searches.
    assert all(
        s["added"] == s["removed"] == s["changed"] == 0
        for s in report["rounds"]["r1"]["tables"].values()
    )
    nodes_a = revision_reader(repo, rev_a)("data/rounds/r2/nodes.parquet")
    nodes_b = revision_reader(repo, rev_b)("data/rounds/r2/nodes.parquet")
    assert (
        nodes_b["problem_id"].n_unique()
        == SHRUNK
        < nodes_a["problem_id"].n_unique()
        == SMOKE_PROBLEMS
    )
    assert report["rounds"]["r2"]["tables"]["nodes"]["removed"] > 0
    # The evaluations were not rerun: every accuracy is the same on both sides.
    evaluation = json.loads((repo / "data/eval/r2.json").read_text())
    accuracy = report["rounds"]["r2"]["accuracy"]
    assert set(accuracy) == set(evaluation["accuracy"])
    assert all(entry["delta"] == 0 for entry in accuracy.values())


@pytest.mark.slow  # the smoke DAG
def test_defaults_compare_head_parent_with_the_work_tree_and_swapping_sides_mirrors(revisions):
    repo, _, rev_a, rev_b = revisions
    code, output = run_diff_cli(repo, "HEAD~1", None, "json")  # HEAD is B, the work tree B's build
    assert code == 0
    report = json.loads(output)
    assert report["b"] == {"rev": "workspace", "commit": "workspace"}
    check_report(report, repo, rev_a, rev_b)

    reverse = diff_revisions(repo, rev_b, rev_a)
    for key, entry in report["rounds"].items():
        for table, stats in entry["tables"].items():
            mirrored = reverse["rounds"][key]["tables"][table]
            assert (mirrored["added"], mirrored["removed"]) == (stats["removed"], stats["added"])
            assert mirrored["changed"] == stats["changed"]
    assert reverse["params"] == {"rounds.r2.problems": {"old": SHRUNK, "new": SMOKE_PROBLEMS}}


@pytest.mark.slow  # the smoke DAG
def test_tables_missing_from_a_revision_count_as_empty(revisions):
    repo, original, rev_a, _ = revisions  # the scratch commit has no dvc.lock: no DVC outputs
    report = diff_revisions(repo, original, rev_a)
    check_report(report, repo, original, rev_a)
    nodes = report["rounds"]["r1"]["tables"]["nodes"]
    assert nodes["rows_a"] == 0 and nodes["added"] == nodes["rows_b"] > 0
    assert any("data/rounds/r1/nodes.parquet: missing at" in note for note in report["notes"])


@pytest.mark.slow  # the smoke DAG
def test_reports_read_as_text_and_markdown(report_ab):
    report = report_ab
    removed = report["rounds"]["r2"]["tables"]["nodes"]["removed"]
    text = format_text(report)
    assert f"rounds.r2.problems: {SMOKE_PROBLEMS} -> {SHRUNK}" in text
    markdown = format_markdown(report)
    assert f"| `rounds.r2.problems` | `{SMOKE_PROBLEMS}` | `{SHRUNK}` |" in markdown
    rows_a = report["rounds"]["r2"]["tables"]["nodes"]["rows_a"]
    rows_b = report["rounds"]["r2"]["tables"]["nodes"]["rows_b"]
    assert f"| r2 | `nodes` | {rows_a} | {rows_b} | 0 | {removed} | 0 |" in markdown


@pytest.mark.slow  # the smoke DAG
def test_unknown_revision_is_a_one_line_error(revisions):
    repo = revisions[0]
    code, output = run_diff_cli(repo, "no-such-rev", None, "text")
    assert code == 2 and output == f"error: {repo}: unknown git revision 'no-such-rev'"


# --------------------------------------------------------------------------- the rules, by hand


def test_compare_tables_counts_added_removed_and_changed_keys(tmp_path):
    import duckdb

    before = pl.DataFrame({
        "leaf_id": ["a", "b", "c", "d"],
        "steps": [["x"], ["y", "z"], ["w"], ["v"]],
        "mean_q": [0.5, -1.0, 0.0, None],
    })  # fmt: skip
    after = pl.DataFrame({
        "leaf_id": ["a", "b", "c", "e", "f"],
        "steps": [["x"], ["y", "Z"], ["w"], ["u"], ["t"]],  # b: a step changed
        "mean_q": [0.5, -1.0, 1.0, None, None],  # c: its value changed
    })  # fmt: skip
    before.write_parquet(tmp_path / "a.parquet")
    after.write_parquet(tmp_path / "b.parquet")
    con = duckdb.connect()
    # d removed; e, f added; b and c changed; a the same.
    assert compare_tables(con, tmp_path / "a.parquet", tmp_path / "b.parquet", ("leaf_id",)) == {
        "rows_a": 4, "rows_b": 5, "added": 2, "removed": 1, "changed": 2,
    }  # fmt: skip
    # A side missing from a revision is an empty table with the other side's columns.
    assert compare_tables(con, None, tmp_path / "b.parquet", ("leaf_id",)) == {
        "rows_a": 0, "rows_b": 5, "added": 5, "removed": 0, "changed": 0,
    }  # fmt: skip


def test_accuracy_deltas_per_metric():
    before = {"accuracy": {"greedy": 0.25, "pass_at_4": 0.5}}
    after = {"accuracy": {"greedy": 0.5, "ppm_mcts": 0.75}}
    assert accuracy_deltas(before, after) == {
        "greedy": {"a": 0.25, "b": 0.5, "delta": 0.25},
        "pass_at_4": {"a": 0.5, "b": None, "delta": None},
        "ppm_mcts": {"a": None, "b": 0.75, "delta": None},
    }
    assert accuracy_deltas(None, after)["greedy"] == {"a": None, "b": 0.5, "delta": None}
