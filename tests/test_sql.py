"""The tree rules of docs/algorithm.md in pipeline/rules/sql, pinned on hand-made trees.

Q values follow the backup rule (see tests/tree_builder.py): a graded answer adds +1 (right)
or -1 (wrong) to itself and every ancestor; an invalid terminal is -1 on itself only; a step
made with ``ppm=s`` starts with one visit worth s. Each test works its answer out by hand in
a comment. Most pair tests pass ``min_edit=0`` so that only the rule under test filters.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import ids
from pipeline.ids import hash_position
from pipeline.rules import sql
from pipeline.rules.checks.validate import validate_table
from pipeline.search import steps

sys.path.insert(0, str(Path(__file__).parent))
from tree_builder import Node, Tree, write_nodes, write_problems


def _load_bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pairs.py"
    spec = importlib.util.spec_from_file_location("bench_pairs", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code(label: str) -> str:
    """A code step whose text is clearly different from every other label's."""
    return f"# {label}: work out this part of the problem\n{label.lower()} = 1\n<end_of_step>\n"


def boxed(label: str, value: str = "1") -> str:
    return f"<answer>{label}: the answer is \\boxed{{{value}}}<end_of_answer>"


def label(step_text: str) -> str:
    """The label a step was made with by code() or boxed(); "" for the root."""
    return step_text.removeprefix("<answer>").removeprefix("# ").split(":")[0]


def run_pairs(tmp_path: Path, *trees: Tree, **options) -> list[dict]:
    options = {"min_margin": 0.5, "min_edit": 0, "heldout_fraction": 0.0, **options}
    nodes = write_nodes(tmp_path / "nodes.parquet", *trees)
    problems = write_problems(tmp_path / "problems.parquet", *trees)
    out = tmp_path / "pairs.parquet"
    written = sql.derive_pairs(nodes, problems, out, **options)
    rows = pq.read_table(out).to_pylist()
    assert written == len(rows)
    return rows


def run_sft(tmp_path: Path, *trees: Tree, per_problem: int = 2) -> list[dict]:
    nodes = write_nodes(tmp_path / "nodes.parquet", *trees)
    problems = write_problems(tmp_path / "problems.parquet", *trees)
    out = tmp_path / "sft.parquet"
    written = sql.derive_sft(nodes, problems, out, per_problem=per_problem)
    rows = pq.read_table(out).to_pylist()
    assert written == len(rows)
    return rows


def summary(rows: list[dict], *nodes: Node) -> list[tuple]:
    """(at, chosen, rejected, margin, weight) with nodes named by their step label."""
    name = {node.node_id: label(node.step_text) for node in nodes}
    by_text = {node.step_text: label(node.step_text) for node in nodes}
    return [
        (name[r["node_id"]], by_text[r["chosen"]], by_text[r["rejected"]], r["margin"], r["weight"])
        for r in rows
    ]


# --------------------------------------------------------------------------- pairs


def test_pairs_at_the_root_and_at_a_mixed_child(tmp_path):
    t = Tree("p1")
    a = t.step(t.root, code("A"))
    t.answer(a, boxed("A1"), correct=True)
    t.answer(a, boxed("A2"), correct=True)
    b = t.step(t.root, code("B"))
    b1 = t.answer(b, boxed("B1", "7"), correct=False)
    b2 = t.answer(b, boxed("B2"), correct=True)
    c = t.step(t.root, code("C"))
    t.answer(c, boxed("C1", "9"), correct=False)
    # Q: A = 2/2 = 1, B = (1-1)/2 = 0, C = -1, B1 = -1, B2 = 1.
    # Root: positives A(1), B(0); negatives C(-1), B(0): 2 x 2, weight 1/4.
    #   A-C margin 2; A-B margin 1 (best from A: A,A1 mean 1 > worst from B: B,B1 mean -0.5);
    #   B-C margin 1 (best from B: B,B2 mean 0.5 > -1); B-B margin 0, not a pair.
    # B is mixed, so visited: B2 vs B1, 1 x 1, weight 1, margin 2.
    rows = run_pairs(tmp_path, t)
    nodes = [t.root, a, b, c, b1, b2]
    assert summary(rows, *nodes) == [
        ("", "A", "C", 2.0, 0.25),
        ("", "A", "B", 1.0, 0.25),
        ("", "B", "C", 1.0, 0.25),
        ("B", "B2", "B1", 2.0, 1.0),
    ]
    prompt = steps.sft_prompt(t.question)
    assert rows[0]["prefix"] == steps.generation_prefix(prompt, [])
    assert rows[3]["prefix"] == steps.generation_prefix(prompt, [code("B")])
    assert [(r["chosen_q"], r["rejected_q"]) for r in rows] == [(1, -1), (1, 0), (0, -1), (1, -1)]
    assert {(r["problem_id"], r["round"], r["split"]) for r in rows} == {("p1", 1, "train")}


def test_equal_q_goes_to_the_lower_child_index(tmp_path):
    t = Tree("p1")
    x = [t.step(t.root, code(f"X{i}")) for i in range(3)]
    y = [t.step(t.root, code(f"Y{i}")) for i in range(3, 6)]
    for i, node in enumerate(x):
        t.answer(node, boxed(f"X{i}a"), correct=True)
    for i, node in enumerate(y, 3):
        t.answer(node, boxed(f"Y{i}a", "5"), correct=False)
    # Positives X0, X1, X2 all Q 1 -> X0, X1; negatives Y3, Y4, Y5 all Q -1 -> Y3, Y4.
    rows = run_pairs(tmp_path, t)
    assert summary(rows, t.root, *x, *y) == [
        ("", "X0", "Y3", 2.0, 0.25),
        ("", "X0", "Y4", 2.0, 0.25),
        ("", "X1", "Y3", 2.0, 0.25),
        ("", "X1", "Y4", 2.0, 0.25),
    ]


def test_one_sided_trees_and_invalid_terminals_give_no_pairs(tmp_path):
    only_right = Tree("p1")
    a = only_right.step(only_right.root, code("A"))
    only_right.answer(a, boxed("A1"), correct=True)
    b = only_right.step(only_right.root, code("B"))
    only_right.answer(b, boxed("B1"), correct=True)
    # Invalid terminals (Q -1) count as neither correct nor wrong: the root has positives A, B
    # and no negative, so no pairs anywhere.
    only_right.invalid(only_right.root, code("D"), kind="too_deep")
    only_right.invalid(b, code("U"), kind="unparsable")
    only_right.invalid(a, code("E"), kind="too_many_errors")
    only_wrong = Tree("p2")
    c = only_wrong.step(only_wrong.root, code("C"))
    only_wrong.answer(c, boxed("C1", "3"), correct=False)
    only_wrong.invalid(c, code("E"), kind="too_many_errors")
    assert run_pairs(tmp_path, only_right, only_wrong) == []


def test_too_many_errors_terminals_are_not_wrong_answers(tmp_path):
    t = Tree("p1")
    p = t.step(t.root, code("P"))
    t.answer(p, boxed("Pa"), correct=True)
    e = t.step(t.root, code("E"), ppm=-0.5)
    t.invalid(e, code("Ex"), kind="too_many_errors")
    t.invalid(t.step(e, code("Ey"), error=True), code("Eyx"), kind="too_many_errors")
    w = t.step(t.root, code("W"))
    t.answer(w, boxed("Wa", "2"), correct=False)
    ew = t.step(t.root, code("EW"))
    t.invalid(ew, code("EWx"), kind="too_many_errors")
    t.answer(ew, boxed("EWa", "3"), correct=False)
    # E's subtree holds only too-many-errors terminals: it is no negative, whatever its Q (-0.5,
    # the lowest but for W). EW holds one of each: its wrong answer makes it a negative.
    # Q: P 1, W -1, EW -1 (its error terminal is -1 on itself only). Negatives by Q ascending:
    # W, then EW (equal Q, higher child_index). One positive, 2 negatives: weight 1/2. The
    # reference (rStar-math, extra_rm_file.py) counts graded answers only, and so do we.
    rows = run_pairs(tmp_path, t)
    assert summary(rows, t.root, p, e, w, ew) == [
        ("", "P", "W", 2.0, 0.5),
        ("", "P", "EW", 2.0, 0.5),
    ]


def test_a_single_positive_takes_up_to_four_negatives(tmp_path):
    t = Tree("p1")
    p = t.step(t.root, code("P"))
    t.answer(p, boxed("Pa"), correct=True)
    n1 = t.step(t.root, code("N1"))
    t.answer(n1, boxed("N1a", "2"), correct=False)
    n2 = t.step(t.root, code("N2"), ppm=0.5)
    t.answer(n2, boxed("N2a", "2"), correct=False)
    n3 = t.step(t.root, code("N3"), ppm=1.0)
    t.answer(n3, boxed("N3a", "2"), correct=False)
    n4 = t.step(t.root, code("N4"), ppm=1.0)
    t.answer(n4, boxed("N4a", "2"), correct=False)
    n5 = t.step(t.root, code("N5"), ppm=-0.5)
    t.answer(n5, boxed("N5a", "2"), correct=False)
    # Q: P 1; N1 -1; N2 (0.5-1)/2 = -0.25; N3 and N4 (1-1)/2 = 0; N5 (-0.5-1)/2 = -0.75.
    # One positive, so up to 4 negatives by Q ascending: N1, N5, N2, then N3 before N4 (both 0,
    # lower child_index). weight 1/(1*4). Worst continuations all end at -1, below P's 1.
    rows = run_pairs(tmp_path, t)
    assert summary(rows, t.root, p, n1, n2, n3, n4, n5) == [
        ("", "P", "N1", 2.0, 0.25),
        ("", "P", "N5", 1.75, 0.25),
        ("", "P", "N2", 1.25, 0.25),
        ("", "P", "N3", 1.0, 0.25),
    ]


def test_a_single_negative_takes_up_to_four_positives(tmp_path):
    t = Tree("p1")
    n = t.step(t.root, code("N"))
    t.answer(n, boxed("Na", "2"), correct=False)
    ppm = {"Pa": 0.0, "Pb": None, "Pc": 0.5, "Pd": 1.0, "Pe": -0.5}
    positives = {}
    for label, score in ppm.items():
        positives[label] = t.step(t.root, code(label), ppm=score)
        t.answer(positives[label], boxed(label + "x"), correct=True)
    # Q = (ppm + 1) / 2, or 1 without ppm: Pa .5, Pb 1, Pc .75, Pd 1, Pe .25. Up to 4 positives
    # by Q descending: Pb, Pd (tie, lower child_index first), Pc, Pa. N is -1. weight 1/4.
    rows = run_pairs(tmp_path, t)
    assert summary(rows, t.root, n, *positives.values()) == [
        ("", "Pb", "N", 2.0, 0.25),
        ("", "Pd", "N", 2.0, 0.25),
        ("", "Pc", "N", 1.75, 0.25),
        ("", "Pa", "N", 1.5, 0.25),
    ]


def mixed_chain(t: Tree) -> Node:
    """Hi (ppm 0.5) -> Hm0 -> Hm1 -> Hm2 (ppm 1 each); each Hm has a right answer beside the
    chain, and Hm2 ends in the one wrong answer Hw.

    Q: Hm2 (1 + 1 - 1)/3 = 1/3; Hm1 (1 + 0 + 1)/4 = 0.5; Hm0 (1 + 1 + 1)/5 = 0.6; Hi (0.5 + 2)/5
    = 0.5. Worst continuation from Hi: Hi, Hm0, Hm1, Hm2, Hw = (0.5 + 0.6 + 0.5 + 1/3 - 1)/5 =
    0.1867. Hi is a positive too: its best continuation is Hi, Hm0, Hc0 = (0.5 + 0.6 + 1)/3 = 0.7.
    """
    hi = t.step(t.root, code("Hi"), ppm=0.5)
    walker = hi
    for i in range(3):
        walker = t.step(walker, code(f"Hm{i}"), ppm=1.0)
        t.answer(walker, boxed(f"Hc{i}"), correct=True)
    t.answer(walker, boxed("Hw", "4"), correct=False)
    return hi


def long_positive(t: Tree, links: int) -> Node:
    """P (ppm 1) -> `links` steps Pm (ppm -1) -> Pend, right. Q: P (1 + 1)/2 = 1, each Pm 0,
    Pend 1; best continuation from P: 2 / (links + 2)."""
    p = t.step(t.root, code("P"), ppm=1.0)
    walker = p
    for i in range(links):
        walker = t.step(walker, code(f"Pm{i}"), ppm=-1.0)
    t.answer(walker, boxed("Pend"), correct=True)
    return p


def test_continuation_means_can_reject_a_candidate(tmp_path):
    t = Tree("p1")
    p = long_positive(t, 9)
    hi = mixed_chain(t)
    lo = t.step(t.root, code("Lo"))
    t.answer(lo, boxed("Lend", "4"), correct=False)
    # At the root: positives P (1), Hi (0.5); negatives Lo (-1), Hi (0.5): 2 x 2, weight 1/4.
    # P-Lo: margin 2; best from P = 2/11 = 0.18 > worst from Lo = (-1 - 1)/2 = -1: kept.
    # P-Hi: margin 0.5 passes, but best from P 0.18 <= worst from Hi 0.1867: rejected.
    # Hi-Lo: margin 1.5, best from Hi 0.7 > -1: kept. Hi-Hi: margin 0, no pair.
    rows = run_pairs(tmp_path, t)
    at_root = [row for row in rows if row["node_id"] == t.root.node_id]
    assert summary(at_root, t.root, p, hi, lo) == [
        ("", "P", "Lo", 2.0, 0.25),
        ("", "Hi", "Lo", 1.5, 0.25),
    ]


def test_margin_filter_keeps_margins_at_the_minimum(tmp_path):
    t = Tree("p1")
    p = t.step(t.root, code("P"), ppm=0.0)
    t.answer(p, boxed("Pa"), correct=True)
    p2 = t.step(t.root, code("P2"), ppm=-0.4)
    t.answer(p2, boxed("P2a"), correct=True)
    n = t.step(t.root, code("N"), ppm=1.0)
    t.answer(n, boxed("Na", "0"), correct=False)
    # Q: P (0+1)/2 = 0.5, P2 (-0.4+1)/2 = 0.3, N (1-1)/2 = 0. n_pos 2, n_neg 1, weight 1/2.
    # Margins: P-N 0.5 (kept at min_margin 0.5), P2-N 0.3 (dropped; kept at 0.2).
    rows = run_pairs(tmp_path, t)
    assert summary(rows, t.root, p, p2, n) == [("", "P", "N", 0.5, 0.5)]
    rows = run_pairs(tmp_path, t, min_margin=0.2)
    assert summary(rows, t.root, p, p2, n) == [
        ("", "P", "N", 0.5, 0.5),
        ("", "P2", "N", pytest.approx(0.3), 0.5),
    ]


def test_a_margin_a_rounding_error_under_the_minimum_is_kept(tmp_path):
    t = Tree("p1")
    p = t.step(t.root, code("P"), ppm=-0.8)
    t.answer(p, boxed("Pa"), correct=True)
    n = t.step(t.root, code("N"), ppm=0.8)
    t.answer(n, boxed("Na", "0"), correct=False)
    t.answer(n, boxed("Nb", "2"), correct=False)
    # Q(P) = (-0.8 + 1) / 2 = 0.1, Q(N) = (0.8 - 2) / 3 = -0.4: in floating point the margin is
    # 0.49999999999999994 < 0.5, yet the rule means it to reach min_margin 0.5. The pairs check
    # accepts what the SQL keeps.
    assert (-0.8 + 1) / 2 - (0.8 - 2) / 3 < 0.5
    rows = run_pairs(tmp_path, t)
    assert summary(rows, t.root, p, n) == [("", "P", "N", pytest.approx(0.5), 1.0)]
    report = validate_table("pairs", tmp_path / "pairs.parquet", min_margin=0.5)
    assert report.success, report


def test_min_edit_filter_drops_steps_that_barely_differ(tmp_path):
    base = "# total cost\nv = " + "1" * 30 + "\n<end_of_step>\n"
    t = Tree("p1")
    p = t.step(t.root, base)
    t.answer(p, boxed("P"), correct=True)
    texts = {
        "ins19": base.replace("# total", "# " + "z" * 19 + "total"),  # 19 insertions
        "ins20": base.replace("# total", "# " + "z" * 20 + "total"),  # 20 insertions
        "sub19": base.replace("1" * 19, "2" * 19, 1),  # 19 substitutions
        "sub20": base.replace("1" * 20, "2" * 20, 1),  # 20 substitutions
    }
    negatives = {}
    for label, text in texts.items():
        negatives[label] = t.step(t.root, text)
        t.answer(negatives[label], boxed(label, "0"), correct=False)
    # One positive, four negatives all at Q -1: all four taken, weight 1/4, margin 2.
    # Edit distances 19, 20, 19, 20: at min_edit 20 only the two at 20 stay.
    rows = run_pairs(tmp_path, t, min_edit=20)
    assert [(r["rejected"], r["weight"]) for r in rows] == [
        (texts["ins20"], 0.25),
        (texts["sub20"], 0.25),
    ]
    assert len(run_pairs(tmp_path, t, min_edit=19)) == 4


def test_equal_step_texts_under_different_parents_stay_apart(tmp_path):
    same = code("Same")
    t = Tree("p1")
    a = t.step(t.root, code("A"))
    a_same = t.step(a, same)
    t.answer(a_same, boxed("Ar"), correct=True)
    b = t.step(t.root, code("B"))
    b_same = t.step(b, same)
    t.answer(b_same, boxed("Bw", "0"), correct=False)
    # Two nodes share a step text but not an id. Root: A(1) vs B(-1), the only pair; the two
    # "Same" nodes are one-sided (no pair below them).
    rows = run_pairs(tmp_path, t)
    assert summary(rows, t.root, a, b) == [("", "A", "B", 2.0, 1.0)]
    nodes = write_nodes(tmp_path / "nodes.parquet", t)
    sql.derive_trajectories(nodes, tmp_path / "traj.parquet")
    trajectories = pq.read_table(tmp_path / "traj.parquet").to_pylist()
    assert [(r["steps"][1], r["node_ids"][1], r["correct"]) for r in trajectories] == [
        (same, a_same.node_id, True),
        (same, b_same.node_id, False),
    ]


def test_pairs_of_many_problems_and_rounds(tmp_path):
    def small(problem_id: str, round_: int) -> Tree:
        t = Tree(problem_id, round=round_, question=f"What is {problem_id}?")
        right = t.step(t.root, code("R"))
        t.answer(right, boxed("Ra"), correct=True)
        wrong = t.step(t.root, code("W"))
        t.answer(wrong, boxed("Wa", "0"), correct=False)
        return t

    trees = [small("p1", 1), small("p1", 2), small("p2", 1)]
    # The same tree in rounds 1 and 2 has the same node ids; each round is its own tree.
    rows = run_pairs(tmp_path, *trees)
    assert [(r["problem_id"], r["round"], r["node_id"]) for r in rows] == [
        ("p1", 1, trees[0].root.node_id),
        ("p1", 2, trees[1].root.node_id),
        ("p2", 1, trees[2].root.node_id),
    ]
    assert rows[2]["prefix"].startswith(steps.sft_prompt("What is p2?"))


def test_split_is_by_problem_from_a_hash_of_its_id(tmp_path):
    trees = []
    for i in range(40):
        t = Tree(f"problem-{i}")
        for label, correct in (("R", True), ("S", True), ("W", False)):
            node = t.step(t.root, code(label))
            t.answer(node, boxed(label + "a", "1" if correct else "0"), correct=correct)
        trees.append(t)

    def expected(problem_id: str, fraction: float) -> str:
        return "test" if hash_position(problem_id) < fraction else "train"

    rows = run_pairs(tmp_path, *trees, heldout_fraction=0.5)
    assert len(rows) == 80  # R-W and S-W per problem
    assert all(r["split"] == expected(r["problem_id"], 0.5) for r in rows)
    assert {r["split"] for r in rows} == {"train", "test"}
    assert {r["split"] for r in run_pairs(tmp_path, *trees, heldout_fraction=0.0)} == {"train"}
    assert {r["split"] for r in run_pairs(tmp_path, *trees, heldout_fraction=1.0)} == {"test"}


def test_hash_position_is_the_same_number_in_python_and_in_duckdb():
    # The splits by problem are computed in Python (seeds, training) and in SQL (pairs): one
    # rule, so a problem lands on the same side of a fraction everywhere.
    texts = [f"problem-{i}" for i in range(2000)] + [ids.problem_id(f"q{i}") for i in range(2000)]
    texts += ["", "0:é∑ unicode", "x" * 500]
    con = duckdb.connect()
    con.execute(ids.HASH_POSITION_MACRO)
    in_sql = con.execute(
        "SELECT hash_position(text) FROM unnest(?::VARCHAR[]) AS t(text)", [texts]
    ).fetchall()
    assert [row[0] for row in in_sql] == [hash_position(text) for text in texts]
    positions = [hash_position(text) for text in texts]
    assert all(0 <= p < 1 for p in positions)
    assert 0.45 < sum(p < 0.5 for p in positions) / len(positions) < 0.55  # spread evenly


def test_pairs_and_sft_agree_with_the_python_reference_on_random_trees(tmp_path):
    bench = _load_bench()
    rng = random.Random(7)
    rows, questions = [], {}
    for i in range(60):
        problem_id = f"rand-{i}"
        questions[problem_id] = f"Random question {i}?"
        rows.extend(bench.synthetic_tree(rng, problem_id, 1 + i % 3, cap=rng.randint(10, 300)))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "nodes.parquet")
    problem_rows = [{"problem_id": k, "question": v} for k, v in questions.items()]
    pq.write_table(pa.Table.from_pylist(problem_rows), tmp_path / "problems.parquet")
    options = {"min_margin": 0.3, "min_edit": 15, "heldout_fraction": 0.3}
    sql.derive_pairs(
        tmp_path / "nodes.parquet",
        tmp_path / "problems.parquet",
        tmp_path / "pairs.parquet",
        **options,
    )
    sql.derive_sft(
        tmp_path / "nodes.parquet",
        tmp_path / "problems.parquet",
        tmp_path / "sft.parquet",
        per_problem=3,
    )
    pairs, sft = bench.reference_rules(rows, questions, per_problem=3, **options)
    assert len(pairs) > 50 and len(sft) > 20
    # Same rows in the same order: both walk trees by (problem_id, round), then breadth-first.
    assert pq.read_table(tmp_path / "pairs.parquet").to_pylist() == pairs
    assert pq.read_table(tmp_path / "sft.parquet").to_pylist() == sft


# --------------------------------------------------------------------------- sft


def sft_tree() -> tuple[Tree, dict[str, Node]]:
    t = Tree("p1")
    n: dict[str, Node] = {}
    n["A"] = t.step(t.root, code("A"))
    n["A0"] = t.answer(n["A"], boxed("A0"), correct=True)
    n["A1"] = t.answer(n["A"], boxed("A1", "0"), correct=False)
    n["B"] = t.step(t.root, code("B"))
    n["B0"] = t.answer(n["B"], boxed("B0"), correct=True)
    n["B1"] = t.answer(n["B"], boxed("B1"), correct=True)
    n["E"] = t.step(t.root, code("E"), error=True)
    n["E0"] = t.answer(n["E"], boxed("E0"), correct=True)
    n["W"] = t.step(t.root, code("W"))
    n["W0"] = t.answer(n["W"], boxed("W0", "0"), correct=False)
    return t, n


def test_sft_keeps_the_best_correct_error_free_trajectories(tmp_path):
    t, _ = sft_tree()
    # Correct trajectories: A,A0 Q [0, 1] mean 0.5; B,B0 and B,B1 Q [1, 1] mean 1 (a full tie:
    # child_index paths (1,0) < (1,1)); E,E0 mean 1 but E's code errored: excluded.
    rows = run_sft(tmp_path, t, per_problem=2)
    prompt = steps.sft_prompt(t.question)
    assert rows == [
        {"problem_id": "p1", "round": 1, "prompt": prompt,
         "response": steps.render_solution([code("B"), boxed("B0")]), "mean_q": 1.0, "rank": 1},
        {"problem_id": "p1", "round": 1, "prompt": prompt,
         "response": steps.render_solution([code("B"), boxed("B1")]), "mean_q": 1.0, "rank": 2},
    ]  # fmt: skip
    rows = run_sft(tmp_path, t, per_problem=3)
    assert [(r["rank"], r["mean_q"], r["response"]) for r in rows][2] == (
        3,
        0.5,
        steps.render_solution([code("A"), boxed("A0")]),
    )
    assert len(run_sft(tmp_path, t, per_problem=10)) == 3


def test_sft_breaks_mean_ties_by_min_q_then_by_earliest_path(tmp_path):
    t = Tree("p1")
    x = t.step(t.root, code("X"))
    t.answer(x, boxed("X0"), correct=True)
    t.answer(x, boxed("X1", "0"), correct=False)
    y = t.step(t.root, code("Y"), ppm=-0.5)
    ym = t.step(y, code("Ym"), ppm=-0.5)
    t.answer(ym, boxed("Y0"), correct=True)
    # X,X0: Q [0, 1], mean 0.5, min 0. Y,Ym,Y0: Q [(-0.5+1)/2, (-0.5+1)/2, 1] = [.25, .25, 1],
    # mean 0.5, min 0.25: the Y path wins the tie on min Q although X comes first.
    u = Tree("p2")
    a = u.step(u.root, code("A"))
    u.invalid(a, code("Ad"), kind="too_deep")
    u.answer(a, boxed("A1"), correct=True)
    b = u.step(u.root, code("B"))
    u.answer(b, boxed("B0"), correct=True)
    # p2: A,A1 and B,B0 both Q [1, 1] (the too-deep child is -1 on itself only): child_index
    # paths (0,1) < (1,0), so A's path ranks first.
    rows = run_sft(tmp_path, t, u)
    assert [(r["problem_id"], r["rank"], r["response"]) for r in rows] == [
        ("p1", 1, steps.render_solution([code("Y"), code("Ym"), boxed("Y0")])),
        ("p1", 2, steps.render_solution([code("X"), boxed("X0")])),
        ("p2", 1, steps.render_solution([code("A"), boxed("A1")])),
        ("p2", 2, steps.render_solution([code("B"), boxed("B0")])),
    ]
    assert [r["mean_q"] for r in rows] == [0.5, 0.5, 1.0, 1.0]


def test_sft_per_problem_and_round(tmp_path):
    first, _ = sft_tree()
    second = Tree("p1", round=2)
    s = second.step(second.root, code("S"))
    second.answer(s, boxed("S0"), correct=True)
    other = Tree("p9", question="Another one?")
    o = other.step(other.root, code("O"))
    other.answer(o, boxed("O0", "0"), correct=False)  # no correct trajectory: no rows
    rows = run_sft(tmp_path, first, second, other, per_problem=1)
    assert [(r["problem_id"], r["round"], r["rank"]) for r in rows] == [("p1", 1, 1), ("p1", 2, 1)]
    assert rows[1]["response"] == steps.render_solution([code("S"), boxed("S0")])


# --------------------------------------------------------------------------- trajectories


def test_trajectories_are_paths_to_created_terminals(tmp_path):
    t, n = sft_tree()
    dead = t.step(t.root, code("D"))
    t.invalid(dead, code("Dx"), kind="too_many_errors")
    # D became terminal because its only child is terminal; it does not end a trajectory.
    nodes = write_nodes(tmp_path / "nodes.parquet", t)
    written = sql.derive_trajectories(nodes, tmp_path / "traj.parquet")
    rows = pq.read_table(tmp_path / "traj.parquet").to_pylist()
    assert written == 7
    by_leaf = {r["leaf_id"]: r for r in rows}
    e0 = by_leaf[n["E0"].node_id]
    assert e0["node_ids"] == [n["E"].node_id, n["E0"].node_id]
    assert e0["steps"] == [code("E"), boxed("E0")]
    assert (e0["q_values"], e0["mean_q"], e0["min_q"]) == ([1.0, 1.0], 1.0, 1.0)
    assert (e0["correct"], e0["has_error"], e0["final_answer"]) == (True, True, "1")
    a1 = by_leaf[n["A1"].node_id]
    assert (a1["q_values"], a1["mean_q"], a1["min_q"], a1["correct"]) == (
        [0.0, -1.0],
        -0.5,
        -1.0,
        False,
    )
    dx = rows[-1]
    assert (dx["steps"], dx["q_values"], dx["correct"], dx["has_error"]) == (
        [code("D"), code("Dx")],
        [0.0, -1.0],
        False,
        True,
    )


# --------------------------------------------------------------------------- statistics


def test_round_stats_per_round_and_difficulty(tmp_path):
    easy, _ = sft_tree()  # 6 answers (4 right), 4 code steps (1 error), answers at depth 2
    hard = Tree("p2", round=1)
    h = hard.step(hard.root, code("H"))
    hard.answer(h, boxed("H0", "0"), correct=False)
    later = Tree("p1", round=2)
    later.answer(later.root, boxed("L0"), correct=True)
    nodes = write_nodes(tmp_path / "nodes.parquet", easy, hard, later)
    problems = write_problems(
        tmp_path / "problems.parquet", easy, hard, levels={"p1": "1", "p2": "5"}
    )
    sql.derive_sft(nodes, problems, tmp_path / "sft.parquet")
    stats = sql.round_stats(nodes, problems, sft_path=tmp_path / "sft.parquet")
    r1 = stats["rounds"]["1"]
    assert r1["total"]["problems"] == 2 and r1["total"]["solved"] == 1
    assert r1["total"]["trajectories"] == 7 and r1["total"]["correct_trajectories"] == 4
    assert r1["total"]["sft_rows"] == 2 and "pairs" not in r1["total"]
    assert r1["by_difficulty"]["1"]["code_error_rate"] == 0.25
    assert r1["by_difficulty"]["5"]["solved"] == 0
    assert r1["total"]["mean_terminal_depth"] == 2.0
    assert stats["rounds"]["2"]["by_difficulty"] == {"1": stats["rounds"]["2"]["total"]}
    no_levels = write_problems(tmp_path / "plain.parquet", easy, hard)
    plain = sql.round_stats(nodes, no_levels)["rounds"]["1"]
    assert plain["by_difficulty"] == {"all": plain["total"]} and "sft_rows" not in plain["total"]


# --------------------------------------------------------------------------- files and errors


def test_reads_shards_by_glob_or_directory_and_leaves_no_temporary_file(tmp_path):
    first, _ = sft_tree()
    second = Tree("p2")
    s = second.step(second.root, code("S"))
    second.answer(s, boxed("S0"), correct=True)
    shards = tmp_path / "nodes"
    shards.mkdir()
    write_nodes(shards / "part-0.parquet", first)
    write_nodes(shards / "part-1.parquet", second)
    problems = write_problems(tmp_path / "problems.parquet", first, second)
    out = tmp_path / "out" / "sft.parquet"
    assert sql.derive_sft(str(shards / "*.parquet"), problems, out) == 3
    assert sql.derive_sft(shards, problems, out) == 3
    assert sorted(p.name for p in out.parent.iterdir()) == ["sft.parquet"]


def test_bad_input_fails_with_a_one_line_error_naming_it(tmp_path):
    t, _ = sft_tree()
    problems = write_problems(tmp_path / "problems.parquet", t)
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        sql.derive_pairs(tmp_path / "missing.parquet", problems, tmp_path / "o.parquet")
    no_q = write_nodes(tmp_path / "no_q.parquet", t, drop=("q", "correct"))
    with pytest.raises(ValueError, match=r"no_q\.parquet.*missing column\(s\) q, correct"):
        sql.derive_sft(no_q, problems, tmp_path / "o.parquet")
    other = Tree("p-unknown")
    nodes = write_nodes(tmp_path / "nodes.parquet", t, other)
    with pytest.raises(ValueError, match="no row for problem_id 'p-unknown'"):
        sql.derive_pairs(nodes, problems, tmp_path / "o.parquet")
    blank = tmp_path / "blank.parquet"
    pq.write_table(
        pa.table({"problem_id": ["p1"], "question": pa.array([None], pa.string())}), blank
    )
    with pytest.raises(ValueError, match="problem_id 'p1' has no question"):
        sql.derive_sft(write_nodes(tmp_path / "n1.parquet", t), blank, tmp_path / "o.parquet")
    with pytest.raises(ValueError, match="per_problem"):
        sql.derive_sft(nodes, problems, tmp_path / "o.parquet", per_problem=0)
    assert not (tmp_path / "o.parquet").exists()


def test_broken_trees_are_reported(tmp_path):
    t, _ = sft_tree()
    problems = write_problems(tmp_path / "problems.parquet", t)
    rows = t.rows()
    orphan = dict(rows[-1], node_id="orphan", parent_id="nowhere")
    loop = [dict(rows[-1], node_id="x", parent_id="y"), dict(rows[-1], node_id="y", parent_id="x")]
    for broken, message in (
        (rows + [orphan], "parent_id 'nowhere'"),
        (rows + loop, "not reachable from its root"),
        (rows + [rows[1]], "appears twice"),
        ([r for r in rows if r["parent_id"] is not None], "0 roots"),
    ):
        path = tmp_path / "broken.parquet"
        pq.write_table(pa.Table.from_pylist(broken), path)
        with pytest.raises(ValueError, match=message):
            sql.derive_sft(path, problems, tmp_path / "o.parquet")


# --------------------------------------------------------------------------- more hand-made trees


def test_pairs_deeper_down_carry_the_steps_above_in_their_prefix(tmp_path):
    t = Tree("p1")
    a = t.step(t.root, code("A"))
    b = t.step(a, code("B"))
    br = t.answer(b, boxed("Br"), correct=True)
    bw = t.answer(b, boxed("Bw", "0"), correct=False)
    c = t.step(a, code("C"))
    t.answer(c, boxed("Cr"), correct=True)
    # Q: B (1-1)/2 = 0, C 1, A (1-1+1)/3 = 1/3. The root's only child A is both its positive
    # and its negative: margin 0, no pair. A is mixed, so visited: positives C(1), B(0), one
    # negative B, so up to 4 positives: weight 1/(2*1). C-B margin 1 (best from C: C,Cr mean 1
    # > worst from B: B,Bw mean -0.5); B-B margin 0. B is mixed too: Br-Bw, margin 2, weight 1,
    # and its prefix holds A then B.
    rows = run_pairs(tmp_path, t)
    assert summary(rows, a, b, c, br, bw) == [
        ("A", "C", "B", 1.0, 0.5),
        ("B", "Br", "Bw", 2.0, 1.0),
    ]
    prompt = steps.sft_prompt(t.question)
    assert rows[0]["prefix"] == steps.generation_prefix(prompt, [code("A")])
    assert rows[1]["prefix"] == steps.generation_prefix(prompt, [code("A"), code("B")])


def test_a_worst_continuation_as_good_as_the_best_rejects_the_pair(tmp_path):
    def tree(links: int) -> Tree:
        t = Tree(f"links-{links}")
        long_positive(t, links)
        mixed_chain(t)
        return t

    # The only candidate at the root is P-Hi (margin 0.5, weight 1/2: positives P and Hi,
    # negative Hi). Worst from Hi is 0.1867 (mixed_chain); best from P is 2 / (links + 2):
    # 8 links give 0.2, above it, so the pair stays; 9 links give 0.18, so it goes.
    def at_root(t: Tree) -> list[tuple]:
        rows = run_pairs(tmp_path, t)
        return [(r["margin"], r["weight"]) for r in rows if r["node_id"] == t.root.node_id]

    assert at_root(tree(8)) == [(0.5, 0.5)]
    assert at_root(tree(9)) == []


def test_edit_distance_counts_characters_not_bytes(tmp_path):
    chosen = "# half of it: " + "e" * 20 + "\nv = 1\n<end_of_step>\n"
    rejected = chosen.replace("e" * 20, "é" * 20)  # 20 substitutions; 40 bytes differ in UTF-8
    t = Tree("p1")
    t.answer(t.step(t.root, chosen), boxed("Ca"), correct=True)
    t.answer(t.step(t.root, rejected), boxed("Ra", "0"), correct=False)
    assert [r["rejected"] for r in run_pairs(tmp_path, t, min_edit=20)] == [rejected]
    assert run_pairs(tmp_path, t, min_edit=21) == []


def test_trees_without_trajectories_give_empty_tables_with_their_columns(tmp_path):
    bare = Tree("p1")  # a root that was never expanded
    dead_ends = Tree("p2")
    dead_ends.invalid(dead_ends.root, code("D"), kind="too_deep")
    dead_ends.invalid(dead_ends.root, code("U"), kind="unparsable")
    # p2 has two trajectories, both invalid: no SFT row, no pair (neither counts as wrong).
    nodes = write_nodes(tmp_path / "nodes.parquet", bare, dead_ends)
    problems = write_problems(tmp_path / "problems.parquet", bare, dead_ends)
    empty = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(nodes).slice(0, 0), empty)  # no nodes at all
    columns = {
        "sft": ["problem_id", "round", "prompt", "response", "mean_q", "rank"],
        "pairs": ["problem_id", "round", "node_id", "prefix", "chosen", "rejected",
                  "chosen_q", "rejected_q", "margin", "weight", "split"],
    }  # fmt: skip
    for source in (nodes, empty):
        assert sql.derive_sft(source, problems, tmp_path / "sft.parquet") == 0
        assert sql.derive_pairs(source, problems, tmp_path / "pairs.parquet") == 0
        for table, names in columns.items():
            written = pq.read_table(tmp_path / f"{table}.parquet")
            assert (written.num_rows, written.column_names) == (0, names)
    assert sql.derive_trajectories(empty, tmp_path / "traj.parquet") == 0
    sql.derive_trajectories(nodes, tmp_path / "traj.parquet")
    trajectories = pq.read_table(tmp_path / "traj.parquet").to_pylist()
    assert [(r["problem_id"], r["steps"], r["correct"]) for r in trajectories] == [
        ("p2", [code("D")], False),
        ("p2", [code("U")], False),
    ]


def test_pair_thresholds_that_make_no_sense_are_refused(tmp_path):
    t, _ = sft_tree()
    nodes = write_nodes(tmp_path / "nodes.parquet", t)
    problems = write_problems(tmp_path / "problems.parquet", t)
    out = tmp_path / "pairs.parquet"
    with pytest.raises(ValueError, match="min_margin must be a finite number, got nan"):
        sql.derive_pairs(nodes, problems, out, min_margin=float("nan"))
    for min_edit in (-1, 19.5):  # 19.5 used to become 19 without a word
        with pytest.raises(
            ValueError, match=f"min_edit must be a whole number >= 0, got {min_edit}"
        ):
            sql.derive_pairs(nodes, problems, out, min_edit=min_edit)
    assert not out.exists()
    # A whole float is a whole number. The labels of code() differ in 2 characters, so at
    # min_edit 2 all 5 pairs stay (root: B, E x W, A; at A: A0-A1) and at 3 none does.
    assert sql.derive_pairs(nodes, problems, out, min_edit=2.0) == 5
    assert sql.derive_pairs(nodes, problems, out, min_edit=3) == 0


# --------------------------------------------------------------------------- a reference walk
#
# docs/algorithm.md read once more, straight over the Node objects of tree_builder (not the
# rows the SQL reads), and compared with the SQL on random small trees that have every kind of
# terminal, error steps, ties in Q, PPM-initialised steps, repeated problems over rounds and
# trees that are only a root.


def random_tree(rng: random.Random, problem_id: str, round_: int) -> Tree:
    """Up to about 30 nodes (none: a bare root) grown at random open nodes, 1-4 children each."""
    t = Tree(problem_id, round=round_)
    open_nodes, made = [t.root], 0
    budget = rng.randint(0, 30)
    while open_nodes and made < budget:
        parent = open_nodes.pop(rng.randrange(len(open_nodes)))
        for _ in range(rng.randint(1, 4)):
            made += 1
            text = f"# s{made} " + rng.choice("xé ") * rng.randint(0, 25) + f"\nv = {made}\n"
            roll = rng.random()
            if roll < 0.3:
                t.answer(parent, boxed(f"a{made}", str(made)), correct=rng.random() < 0.5)
            elif roll < 0.4:
                t.invalid(
                    parent, text, kind=rng.choice(["too_deep", "unparsable", "too_many_errors"])
                )
            else:
                ppm = rng.choice([None, None, -0.5, 0.0, 0.5])
                open_nodes.append(t.step(parent, text, error=rng.random() < 0.15, ppm=ppm))
    return t


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[-1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def outcomes(node: Node) -> tuple[int, int]:
    """(correct, wrong) graded answers in the subtree of node, itself included."""
    right = int(node.terminal_kind == "answer" and node.correct is True)
    wrong = int(node.terminal_kind == "answer" and node.correct is False)
    for child in node.children:
        below = outcomes(child)
        right, wrong = right + below[0], wrong + below[1]
    return right, wrong


def ref_paths(node: Node, path: list[Node]) -> list[list[Node]]:
    """Root-to-created-terminal paths below node, earliest child first (root excluded)."""
    found = [path] if node.terminal_kind is not None and path else []
    for child in node.children:
        found += ref_paths(child, path + [child])
    return found


def ref_trajectories(t: Tree) -> list[dict]:
    rows = []
    for path in ref_paths(t.root, []):
        leaf, q = path[-1], [node.q for node in path]
        rows.append({
            "problem_id": t.problem_id, "round": t.round, "leaf_id": leaf.node_id,
            "node_ids": [node.node_id for node in path], "steps": [node.step_text for node in path],
            "q_values": q, "mean_q": sum(q) / len(q), "min_q": min(q),
            "final_answer": leaf.final_answer,
            "correct": leaf.terminal_kind == "answer" and leaf.correct is True,
            "has_error": any(node.is_error for node in path),
        })  # fmt: skip
    return rows


def ref_sft(t: Tree, per_problem: int) -> list[dict]:
    good = [
        row for row in ref_trajectories(t) if row["correct"] and not row["has_error"]
    ]  # already earliest path first, and sort() is stable: ties stay in that order
    good.sort(key=lambda row: (-row["mean_q"], -row["min_q"]))
    return [
        {"problem_id": t.problem_id, "round": t.round, "prompt": steps.sft_prompt(t.question),
         "response": steps.render_solution(row["steps"]), "mean_q": row["mean_q"], "rank": rank}
        for rank, row in enumerate(good[:per_problem], 1)
    ]  # fmt: skip


def continuation_mean(node: Node, side: int) -> float:
    """Mean Q from node down its best (side 0: correct) or worst (side 1: wrong) children."""
    q = [node.q]
    while kids := [k for k in node.children if outcomes(k)[side] > 0]:
        node = min(kids, key=lambda k: (-k.q if side == 0 else k.q, k.child_index))
        q.append(node.q)
    return sum(q) / len(q)


def ref_pairs_at(
    t: Tree, node: Node, texts: list[str], min_margin: float, min_edit: int
) -> list[dict]:
    positives = sorted(
        (k for k in node.children if outcomes(k)[0]), key=lambda k: (-k.q, k.child_index)
    )
    negatives = sorted(
        (k for k in node.children if outcomes(k)[1]), key=lambda k: (k.q, k.child_index)
    )
    n_pos = min(len(positives), 4 if len(negatives) == 1 else 2)
    n_neg = min(len(negatives), 4 if len(positives) == 1 else 2)
    rows = []
    for pos in positives[:n_pos]:
        for neg in negatives[:n_neg]:
            margin = pos.q - neg.q
            if (
                margin > 0
                and continuation_mean(pos, 0) > continuation_mean(neg, 1)
                and margin >= min_margin - sql.MARGIN_TOLERANCE
                and edit_distance(pos.step_text, neg.step_text) >= min_edit
            ):
                rows.append({
                    "problem_id": t.problem_id, "round": t.round, "node_id": node.node_id,
                    "prefix": steps.generation_prefix(steps.sft_prompt(t.question), texts),
                    "chosen": pos.step_text, "rejected": neg.step_text, "chosen_q": pos.q,
                    "rejected_q": neg.q, "margin": margin, "weight": 1 / (n_pos * n_neg),
                    "split": "train",
                })  # fmt: skip
    return rows


def ref_pairs(t: Tree, min_margin: float, min_edit: int) -> list[dict]:
    rows, queue = [], [(t.root, [])]
    while queue:  # breadth first, into children with both outcomes below
        node, texts = queue.pop(0)
        rows += ref_pairs_at(t, node, texts, min_margin, min_edit)
        queue += [(k, texts + [k.step_text]) for k in node.children if all(outcomes(k))]
    return rows


@pytest.mark.parametrize(
    ("seed", "min_margin", "min_edit", "per_problem"),
    [(1, 0.0, 0, 1), (2, 0.5, 20, 3), (3, 0.25, 0, 2)],
)
def test_all_three_tables_agree_with_a_walk_over_the_tree_objects(
    tmp_path, seed, min_margin, min_edit, per_problem
):
    # 5 problems in 3 rounds; a problem's tree repeats over rounds 1 and 2 (same node ids).
    trees = [
        random_tree(random.Random(seed * 10 + i), f"p{i}", r) for r in (1, 2) for i in range(5)
    ]
    trees += [random_tree(random.Random(seed * 100 + i), f"p{i}", 3) for i in range(5)]
    nodes = write_nodes(tmp_path / "nodes.parquet", *trees)
    problems = write_problems(tmp_path / "problems.parquet", *trees)
    sql.derive_trajectories(nodes, tmp_path / "trajectories.parquet")
    sql.derive_sft(nodes, problems, tmp_path / "sft.parquet", per_problem=per_problem)
    sql.derive_pairs(
        nodes, problems, tmp_path / "pairs.parquet",
        min_margin=min_margin, min_edit=min_edit, heldout_fraction=0.0,
    )  # fmt: skip
    trees.sort(key=lambda t: (t.problem_id, t.round))
    expected = {
        "trajectories": [row for t in trees for row in ref_trajectories(t)],
        "sft": [row for t in trees for row in ref_sft(t, per_problem)],
        "pairs": [row for t in trees for row in ref_pairs(t, min_margin, min_edit)],
    }
    assert all(expected.values())  # every table has rows to compare
    for table, rows in expected.items():
        assert pq.read_table(tmp_path / f"{table}.parquet").to_pylist() == rows, table
