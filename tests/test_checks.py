"""Table validation (pipeline.rules.checks): valid tables pass, each broken rule named and counted.

The fixtures are one small search tree per problem, built with pipeline.search.tree so its ids and
statistics follow docs/algorithm.md, and the four derived tables written by hand from
it. Each corruption test breaks one rule of a valid table and checks that exactly that rule
fails, with the number of rows worked out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from pipeline import ids
from pipeline.rules.checks import (
    CONTRACTS,
    TABLES,
    ValidationError,
    run_validate_cli,
    validate_table,
    write_report,
)
from pipeline.rules.checks.rules import value_checks
from pipeline.rules.checks.validate import planned_checks
from pipeline.search.tree import Node, add_child, backup, make_root, to_rows

ROUND = 1
QUESTIONS = ["What is 1 + 1?", "What is 2 * 3?", "What is 10 - 4?"]

# --------------------------------------------------------------------------- fixture builders


def problems_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "problem_id": [ids.problem_id(q) for q in QUESTIONS],
            "question": QUESTIONS,
            "answer": ["2", "6", "6"],
            "source": ["generated"] * 3,
            "split": ["train", "train", "test"],
            "solution": ["<code>print(1 + 1)<end_of_step>", None, None],
            "meta": ['{"level": 1}', '{"level": 2}', "{}"],
        }
    )


def build_tree(problem_id: str, ppm: bool) -> tuple[Node, dict[str, Node]]:
    """root -> a (code) -> {a1: right answer, a2: wrong answer}; root -> b (error) -> b1 wrong;
    root -> c (too deep). With ``ppm``, a and b were initialised by the PPM (update once).

    Terminal-guided: Q(a1) = 1, Q(a2) = -1, Q(a) = (1 - 1) / 2 = 0, Q(b1) = -1, Q(b) = -1,
    Q(c) = -1 (its own update(-1)), Q(root) = (1 - 1 - 1) / 3.
    """
    root = make_root(problem_id)
    a = add_child(root, "x = 1<end_of_step>")
    a.code = "x = 1"
    b = add_child(root, "y = 1 / 0<end_of_step>")
    b.code, b.is_error, b.observation = "y = 1 / 0", True, "ZeroDivisionError"
    c = add_child(root, "z = 3<end_of_step>")
    c.is_terminal, c.terminal_kind = True, "too_deep"
    c.update(-1.0)
    if ppm:
        for node, score in ((a, 0.5), (b, -0.25)):
            node.ppm_score = score
            node.update(score)
    nodes = {"root": root, "a": a, "b": b, "c": c}
    for name, parent, text, right in (("a1", a, "\\boxed{2}", True), ("a2", a, "\\boxed{3}", False),
                                      ("b1", b, "\\boxed{5}", False)):  # fmt: skip
        leaf = add_child(parent, f"<answer>{text}<end_of_answer>")
        leaf.is_terminal, leaf.terminal_kind = True, "answer"
        leaf.final_answer, leaf.correct = text[7:-1], right
        backup(leaf, 1.0 if right else -1.0)
        nodes[name] = leaf
    return root, nodes


def trees() -> list[tuple[str, Node, dict[str, Node]]]:
    out = []
    for index, question in enumerate(QUESTIONS):
        pid = ids.problem_id(question)
        out.append((pid, *build_tree(pid, ppm=index == 1)))
    return out


NODE_SCHEMA = {
    "problem_id": pl.String, "round": pl.Int64, "node_id": pl.String, "parent_id": pl.String,
    "depth": pl.Int64, "child_index": pl.Int64, "step_text": pl.String, "code": pl.String,
    "observation": pl.String, "is_error": pl.Boolean, "is_terminal": pl.Boolean,
    "terminal_kind": pl.String, "final_answer": pl.String, "correct": pl.Boolean,
    "visits": pl.Int64, "value_sum": pl.Float64, "q": pl.Float64, "ppm_score": pl.Float64,
    "tokens": pl.Int64,
}  # fmt: skip


def nodes_frame() -> pl.DataFrame:
    rows = [row for pid, root, _ in trees() for row in to_rows(root, pid, ROUND)]
    return pl.DataFrame(rows, schema=NODE_SCHEMA)


def trajectories_frame() -> pl.DataFrame:
    rows = []
    for pid, _, nodes in trees():
        for leaf in (nodes[name] for name in ("c", "a1", "a2", "b1")):
            path = leaf.path()
            q_values = [node.q for node in path]
            rows.append({
                "problem_id": pid, "round": ROUND, "leaf_id": leaf.node_id,
                "node_ids": [node.node_id for node in path], "steps": leaf.step_texts(),
                "q_values": q_values, "mean_q": sum(q_values) / len(q_values),
                "min_q": min(q_values), "final_answer": leaf.final_answer,
                "correct": bool(leaf.correct), "has_error": any(n.is_error for n in path),
            })  # fmt: skip
    return pl.DataFrame(rows)


def sft_frame() -> pl.DataFrame:
    """The one correct, error-free trajectory per problem (a -> a1), rank 1; a second, weaker
    one for the first problem to have ranks 1 and 2."""
    rows = []
    for pid, _, nodes in trees():
        mean_q = (nodes["a"].q + nodes["a1"].q) / 2
        rows.append({"problem_id": pid, "round": ROUND, "prompt": f"<|user|>:\n{pid}",
                     "response": "x = 1 ... \\boxed{2}", "mean_q": mean_q, "rank": 1})  # fmt: skip
    rows.append({**rows[0], "rank": 2, "mean_q": rows[0]["mean_q"] - 0.25, "response": "other"})
    return pl.DataFrame(rows)


def pairs_frame() -> pl.DataFrame:
    """At each root: chosen a (correct below), rejected b (only wrong below); weight 1/(1*2)."""
    rows = []
    for index, (pid, root, nodes) in enumerate(trees()):
        a, b = nodes["a"], nodes["b"]
        rows.append({
            "problem_id": pid, "round": ROUND, "node_id": root.node_id, "prefix": f"prompt {pid}",
            "chosen": a.step_text, "rejected": b.step_text, "chosen_q": a.q, "rejected_q": b.q,
            "margin": a.q - b.q, "weight": 0.5, "split": "test" if index == 2 else "train",
        })  # fmt: skip
    return pl.DataFrame(rows)


BUILDERS = {
    "problems": problems_frame,
    "nodes": nodes_frame,
    "trajectories": trajectories_frame,
    "sft": sft_frame,
    "pairs": pairs_frame,
}


@pytest.fixture
def problems_path(tmp_path: Path) -> Path:
    path = tmp_path / "problems.parquet"
    problems_frame().write_parquet(path)
    return path


def write(frame: pl.DataFrame, tmp_path: Path, name: str = "table.parquet") -> Path:
    path = tmp_path / name
    frame.write_parquet(path)
    return path


def check_of(report, name: str):
    return next(check for check in report.checks if check.check == name)


def failed_names(report) -> list[str]:
    return [check.check for check in report.failures]


# --------------------------------------------------------------------------- valid tables


@pytest.mark.parametrize("table", TABLES)
def test_valid_table_passes_every_check(table: str, tmp_path: Path, problems_path: Path) -> None:
    path = write(BUILDERS[table](), tmp_path)
    report = validate_table(table, path, problems_path=problems_path)
    assert report.success, report.summary()
    assert not report.skipped
    assert "all" in report.summary() and "passed" in report.summary()
    # every rule of the table ran: schema + not-null + value rules (problem ids included)
    assert {check.check for check in report.checks} >= {c.name for c in value_checks(table)}


def test_empty_table_keeps_its_contract(tmp_path: Path, problems_path: Path) -> None:
    """A shard or round with no rows is valid: no row breaks a rule."""
    path = write(nodes_frame().head(0), tmp_path)
    report = validate_table("nodes", path, problems_path=problems_path)
    assert report.success and report.rows == 0


def test_check_names_are_unique_per_table() -> None:
    """Names key the results (GX expectations carry theirs in meta)."""
    for table in TABLES:
        names = [c.name for c in planned_checks(table, min_margin=0.5, with_problems=True)]
        assert len(names) == len(set(names)), table


def test_without_problems_table_the_cross_table_check_is_left_out(tmp_path: Path) -> None:
    report = validate_table("nodes", write(nodes_frame(), tmp_path))
    assert report.success
    assert "problem_id in the problems table" not in [check.check for check in report.checks]


def test_all_null_nullable_column_passes(tmp_path: Path) -> None:
    """polars writes an all-None column with Arrow type null (round 1: no PPM scores)."""
    frame = nodes_frame().with_columns(pl.lit(None).alias("ppm_score"))
    # without PPM scores the PPM-initialised tree's statistics no longer add up; drop it
    frame = frame.filter(pl.col("problem_id") != ids.problem_id(QUESTIONS[1]))
    assert frame.schema["ppm_score"] == pl.Null
    report = validate_table("nodes", write(frame, tmp_path))
    assert report.success, report.summary()


def test_tables_derived_by_pipeline_sql_keep_their_contracts(
    tmp_path: Path, problems_path: Path
) -> None:
    """The contracts here and the writers in pipeline.rules.sql agree (docs/data-contracts.md)."""
    from pipeline.rules.sql import derive_pairs, derive_sft, derive_trajectories

    nodes = write(nodes_frame(), tmp_path, "nodes.parquet")
    derive_trajectories(nodes, tmp_path / "trajectories.parquet")
    derive_sft(nodes, problems_path, tmp_path / "sft.parquet")
    # min_edit 1: the fixture's steps are short; at node a, a1 vs a2 gives margin 1 - (-1) = 2
    assert derive_pairs(nodes, problems_path, tmp_path / "pairs.parquet", min_edit=1) > 0
    for table in ("nodes", "trajectories", "sft", "pairs"):
        report = validate_table(table, tmp_path / f"{table}.parquet", problems_path=problems_path)
        assert report.success, report.summary()


# --------------------------------------------------------------------------- broken tables

PID0 = ids.problem_id(QUESTIONS[0])

# (table, how to break it, the check that must fail, bad rows worked out by hand)
CORRUPTIONS = [
    # q of the first node (a root) set to 1.7: one row out of [-1, 1]
    ("nodes", lambda f: f.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(1.7)
                                       .otherwise(pl.col("q")).alias("q")), "q in [-1, 1]", 1),
    ("nodes", lambda f: f.with_columns(pl.col("ppm_score").fill_null(2.0)), "ppm_score in [-1, 1]",
     21 - 2),  # 7 nodes x 3 trees, 2 carried real scores
    ("nodes", lambda f: f.with_columns(pl.lit(-1).alias("visits")), "visits >= 0", 21),
    ("nodes", lambda f: f.with_columns(pl.col("terminal_kind").replace("too_deep", "timeout")),
     "terminal_kind in {answer, too_deep, too_many_errors, unparsable}", 3),
    # one duplicated node: both copies are reported
    ("nodes", lambda f: pl.concat([f, f.head(1)]), "node_id unique per round", 2),
    ("nodes", lambda f: f.with_columns(pl.when(pl.col("depth") == 2).then(None)
                                       .otherwise(pl.col("node_id")).alias("node_id")),
     "node_id not null", 9),
    # ungraded answers: 3 trees x 3 answers
    ("nodes", lambda f: f.with_columns(pl.when(pl.col("terminal_kind") == "answer").then(None)
                                       .otherwise(pl.col("correct")).alias("correct")),
     "correct set exactly when terminal_kind = 'answer'", 9),
    ("nodes", lambda f: f.with_columns(pl.when(pl.col("depth") == 0).then(pl.lit(0.5))
                                       .otherwise(pl.col("q")).alias("q")),
     "q = value_sum / visits (0 when unvisited)", 3),
    ("nodes", lambda f: f.with_columns(pl.col("visits") + (pl.col("depth") == 0).cast(pl.Int64)),
     "visits and value_sum follow from the subtree", 3),
    ("nodes", lambda f: f.with_columns(pl.col("step_text").str.replace("x = 1", "x = 2")),
     "node_id is the hash of parent_id and step_text", 3),
    ("trajectories", lambda f: f.with_columns(pl.col("mean_q") * 0 + 1.5),
     "mean_q in [-1, 1]", 12),
    ("trajectories", lambda f: f.with_columns(pl.col("steps").list.head(0)),
     "node_ids, steps and q_values: one entry per step", 12),
    ("trajectories", lambda f: pl.concat([f, f.tail(2)]), "leaf_id unique per round", 4),
    ("sft", lambda f: f.with_columns(pl.lit(0).alias("rank")), "rank >= 1", 4),
    ("sft", lambda f: f.with_columns(pl.lit(1).alias("rank")),
     "(problem_id, round, rank) unique", 2),
    ("sft", lambda f: f.with_columns(pl.col("rank") * 2), "ranks run 1, 2, ... per problem", 4),
    ("pairs", lambda f: f.with_columns(pl.col("chosen").alias("rejected")), "chosen != rejected", 3),
    ("pairs", lambda f: f.with_columns(pl.col("margin") * -1), "margin >= 0.5", 3),
    ("pairs", lambda f: f.with_columns(pl.col("margin") - 0.1), "margin = chosen_q - rejected_q", 3),
    ("pairs", lambda f: f.with_columns(pl.lit(0.0).alias("weight")), "weight in (0, 1]", 3),
    ("pairs", lambda f: f.with_columns(pl.lit(1.5).alias("weight")), "weight in (0, 1]", 3),
    ("pairs", lambda f: f.with_columns(pl.lit(1.5).alias("chosen_q")), "chosen_q in [-1, 1]", 3),
    ("pairs", lambda f: f.with_columns(pl.col("split").replace("test", "dev")),
     "split in {train, test}", 1),
    ("pairs", lambda f: f.with_columns(pl.lit(None, pl.String).alias("problem_id")),
     "problem_id not null", 3),
    ("problems", lambda f: pl.concat([f, f.head(1)]), "problem_id unique", 2),
    ("problems", lambda f: f.with_columns(pl.col("meta").replace("{}", "{level: 3")),
     "meta is JSON", 1),
    ("problems", lambda f: f.with_columns(pl.col("question") + "?"),
     "problem_id is the hash of the normalised question", 3),
]  # fmt: skip


@pytest.mark.parametrize(
    ("table", "corrupt", "check", "count"),
    CORRUPTIONS,
    ids=[f"{table}: {check}" for table, _, check, _ in CORRUPTIONS],
)
def test_corruption_fails_the_right_check_with_the_right_count(
    table, corrupt, check, count, tmp_path: Path, problems_path: Path
) -> None:
    path = write(corrupt(BUILDERS[table]()), tmp_path)
    report = validate_table(table, path, problems_path=problems_path)
    assert not report.success
    assert check in failed_names(report), report.summary()
    failure = check_of(report, check)
    assert failure.count == count, report.summary()
    assert 1 <= len(failure.examples) <= 5
    assert check in report.summary()


def test_unknown_problem_ids_are_counted_with_examples(tmp_path: Path, problems_path: Path) -> None:
    """Drop the first problem from the problems table: its 7 nodes are orphans."""
    problems = write(problems_frame().slice(1), tmp_path, "fewer_problems.parquet")
    report = validate_table("nodes", write(nodes_frame(), tmp_path), problems_path=problems)
    assert failed_names(report) == ["problem_id in the problems table"]
    failure = report.failures[0]
    assert failure.count == 7
    assert all(example["problem_id"] == PID0 for example in failure.examples)
    assert {"node_id", "problem_id"} <= set(failure.examples[0])


def test_one_broken_rule_fails_only_that_rule(tmp_path: Path, problems_path: Path) -> None:
    frame = pairs_frame().with_columns(pl.col("chosen").alias("rejected"))
    report = validate_table("pairs", write(frame, tmp_path), problems_path=problems_path)
    # the pairs stay unique (each sits at another node), margins still match the Q values
    assert failed_names(report) == ["chosen != rejected"]


def test_margin_threshold_is_a_parameter(tmp_path: Path, problems_path: Path) -> None:
    """Margins are Q(a) - Q(b) = 0 - (-1) = 1, but 1/6 - (-5/8) = 0.79 in the PPM tree
    (Q(a) = (0.5 + 1 - 1) / 3, Q(b) = (-0.25 - 1) / 2)."""
    path = write(pairs_frame(), tmp_path)
    margins = pairs_frame()["margin"].to_list()
    assert validate_table("pairs", path, min_margin=min(margins)).success
    report = validate_table("pairs", path, min_margin=1.0)
    failure = check_of(report, "margin >= 1")
    assert failure.count == sum(m < 1.0 for m in margins) == 1


def test_missing_column_fails_its_type_check_and_skips_its_rules(tmp_path: Path) -> None:
    report = validate_table("nodes", write(nodes_frame().drop("q"), tmp_path))
    assert failed_names(report) == ["q is float"]
    assert check_of(report, "q is float").detail == "column missing"
    skipped = {check.check for check in report.skipped}
    assert {"q not null", "q in [-1, 1]", "q = value_sum / visits (0 when unvisited)"} <= skipped
    assert "q is float: column missing" in report.summary()
    assert "skipped" in report.summary()


def test_wrong_type_is_named_with_the_found_type(tmp_path: Path) -> None:
    frame = pairs_frame().with_columns(pl.col("margin").cast(pl.String))
    report = validate_table("pairs", write(frame, tmp_path))
    assert failed_names(report) == ["margin is float"]
    assert check_of(report, "margin is float").detail == "found large_string, expected float"
    assert "margin >= 0.5" in {check.check for check in report.skipped}


def test_int_width_and_large_string_are_accepted(tmp_path: Path) -> None:
    frame = sft_frame().with_columns(pl.col("rank").cast(pl.Int32), pl.col("round").cast(pl.UInt8))
    assert validate_table("sft", write(frame, tmp_path)).success


# --------------------------------------------------------------------------- report


def test_summary_names_the_expectation_and_examples(tmp_path: Path) -> None:
    frame = nodes_frame().with_columns(
        pl.when(pl.col("terminal_kind") == "too_deep").then(1.7).otherwise(pl.col("q")).alias("q")
    )
    report = validate_table("nodes", write(frame, tmp_path))
    summary = report.summary()
    first, *rest = summary.splitlines()
    assert first.startswith(f"nodes {tmp_path}/table.parquet: 2 of ")
    assert "checks failed" in first
    line = next(line for line in rest if "q in [-1, 1]" in line)
    too_deep_ids = nodes_frame().filter(pl.col("terminal_kind") == "too_deep")["node_id"]
    assert "3 rows" in line and "q=1.7" in line and f"node_id='{too_deep_ids[0]}'" in line
    # the same rows break q = W / N
    assert any("q = value_sum / visits" in line for line in rest)


def test_json_report_is_written_whole_and_atomically(tmp_path: Path) -> None:
    frame = pairs_frame().with_columns(pl.lit(0.0).alias("weight"))
    report = validate_table("pairs", write(frame, tmp_path))
    out = tmp_path / "validation" / "pairs.json"
    write_report(report, out)
    saved = json.loads(out.read_text())
    assert saved["success"] is False and saved["table"] == "pairs" and saved["rows"] == 3
    assert saved["failed"] == 1
    weight = next(check for check in saved["checks"] if check["check"] == "weight in (0, 1]")
    assert weight["status"] == "failed" and weight["count"] == 3 and weight["engine"] == "gx"
    assert weight["examples"][0]["weight"] == 0.0
    assert any(check["status"] == "passed" for check in saved["checks"])
    assert [p.name for p in out.parent.iterdir()] == ["pairs.json"]  # no temporary left


# --------------------------------------------------------------------------- bad usage and CLI


def test_unknown_table_and_unreadable_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="unknown table 'edges'"):
        validate_table("edges", tmp_path / "x.parquet")
    with pytest.raises(ValidationError, match="no such nodes file"):
        validate_table("nodes", tmp_path / "missing.parquet")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("not parquet")
    with pytest.raises(ValidationError, match="not a readable Parquet file") as error:
        validate_table("nodes", garbage)
    assert "\n" not in str(error.value)
    with pytest.raises(ValidationError, match="no such problems file"):
        validate_table(
            "nodes", write(nodes_frame(), tmp_path), problems_path=tmp_path / "p.parquet"
        )


def test_cli_exit_codes(tmp_path: Path, problems_path: Path, capsys) -> None:
    good = write(pairs_frame(), tmp_path, "good.parquet")
    bad = write(pairs_frame().with_columns(pl.lit(2.0).alias("weight")), tmp_path, "bad.parquet")
    assert run_validate_cli("pairs", good, problems_path=problems_path) == 0
    assert "checks passed" in capsys.readouterr().out
    report_path = tmp_path / "report.json"
    assert run_validate_cli("pairs", bad, min_margin=0.5, report_path=report_path) == 1
    assert "weight in (0, 1]: 3 rows" in capsys.readouterr().out
    assert json.loads(report_path.read_text())["success"] is False
    assert run_validate_cli("pairs", tmp_path / "nope.parquet") == 2
    assert "error: " in capsys.readouterr().err
    assert run_validate_cli("edges", good) == 2


def test_import_is_cheap() -> None:
    """GX is imported only when a validation runs (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = "import sys, pipeline.rules.checks; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- the stage


def make_round(root: Path, *tables: str, margin: float | None = None) -> Path:
    """data/seeds/problems.parquet, data/rounds/r1/<table>.parquet and params.yaml under root."""
    (root / "data" / "seeds").mkdir(parents=True)
    problems_frame().write_parquet(root / "data" / "seeds" / "problems.parquet")
    round_dir = root / "data" / "rounds" / "r1"
    round_dir.mkdir(parents=True)
    for table in tables:
        BUILDERS[table]().write_parquet(round_dir / f"{table}.parquet")
    params = "profile: test\n" + ("" if margin is None else f"pairs:\n  min_margin: {margin}\n")
    (root / "params.yaml").write_text(params)
    return round_dir


def test_stage_validates_the_round_and_writes_reports(tmp_path: Path, monkeypatch, capsys) -> None:
    from stages.validate import main

    round_dir = make_round(tmp_path, "nodes", "trajectories", "sft", "pairs")
    monkeypatch.chdir(tmp_path)
    assert main(["--round", "r1"]) == 0
    summary = json.loads((round_dir / "validation.json").read_text())
    assert set(summary) == {"problems", "nodes", "trajectories", "sft", "pairs"}
    assert all(entry["success"] and entry["failed"] == 0 for entry in summary.values())
    assert summary["nodes"]["rows"] == 21 and summary["nodes"]["checks"] > 20
    full = json.loads((round_dir / "validation" / "nodes.json").read_text())
    assert full["success"] and full["params"]["problems_path"] == "data/seeds/problems.parquet"
    out = capsys.readouterr().out
    assert "r1: all tables valid" in out and "nodes data/rounds/r1/nodes.parquet: all" in out


def test_stage_fails_on_a_violation_and_reads_min_margin(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """min_margin 0.9 from params: the PPM tree's pair (margin 0.79) breaks it."""
    from stages.validate import main

    round_dir = make_round(tmp_path, "nodes", "pairs", margin=0.9)
    monkeypatch.chdir(tmp_path)
    assert main(["--round", "r1"]) == 1
    summary = json.loads((round_dir / "validation.json").read_text())
    assert summary["pairs"] == {
        "success": False,
        "checks": summary["pairs"]["checks"],
        "failed": 1,
        "rows": 3,
    }
    assert summary["nodes"]["success"]
    assert "margin >= 0.9: 1 row" in capsys.readouterr().out
    assert "trajectories" not in summary  # not there, not validated


def test_stage_bad_usage_exits_2(tmp_path: Path, monkeypatch, capsys) -> None:
    from stages.validate import main

    make_round(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["--round", "r1"]) == 2  # no round tables at all
    assert "none of nodes, trajectories, sft, pairs.parquet" in capsys.readouterr().err
    assert main(["--round", "one"]) == 2
    assert main(["--round", "r1", "--params", "missing.yaml"]) == 2


def test_stage_output_is_just_the_report(tmp_path: Path, monkeypatch, capfd) -> None:
    """No GX or DuckDB progress bars in the stage log (captured at the file descriptors)."""
    from stages.validate import main

    round_dir = make_round(tmp_path, "nodes")
    nodes_frame().with_columns(pl.lit(5.0).alias("q")).write_parquet(round_dir / "nodes.parquet")
    monkeypatch.chdir(tmp_path)
    assert main(["--round", "r1"]) == 1
    out, err = capfd.readouterr()
    assert "q in [-1, 1]: 21 rows" in out
    assert err == ""
    assert all(
        line.startswith(("problems ", "nodes ", "  - ", "r1: ")) for line in out.splitlines()
    ), out


def test_large_columns_never_reach_pandas() -> None:
    """Free text and lists are checked in DuckDB only (see pipeline.rules.checks.contracts)."""
    for table, contract in CONTRACTS.items():
        large = {column.name for column in contract.columns if column.large}
        for check in planned_checks(table, min_margin=0.5, with_problems=True):
            assert check.engine == "sql" or not large & set(check.columns), (table, check.name)
