"""Held-out cases for the tree rules and the search, each worked out on paper from the spec.

The spec is DESIGN.md section 2 ("The algorithm, exactly") as docs/algorithm.md restates it.
Trees are built with tests/tree_builder.py; where a case needs Q values that the backup rule
cannot reach exactly (0.7 and 0.2), the rows are written with those Q values directly (the
rules read the `q` column). The search cases run MCTS with a scripted engine and a scripted code
runner whose verdicts a test states, so each expected table follows from the script alone.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import sql
from pipeline.config import MCTSConfig
from pipeline.execution.sandbox import ExecResult
from pipeline.rules import sql as rules_sql
from pipeline.search import steps
from pipeline.search.mcts import MCTS, Problem
from pipeline.search.tree import Node as SearchNode
from pipeline.search.tree import add_child, make_root, select_child, to_rows, uct, walk

sys.path.insert(0, str(Path(__file__).parent))
from fakes import FixedScorer, SampledEngine, ScriptedEngine  # noqa: E402
from tree_builder import NODES_SCHEMA, Node, Tree, write_problems  # noqa: E402

# --------------------------------------------------------------------------- helpers


def step(name: str) -> str:
    """A code step text far (edit distance > 20) from every other name's."""
    return f"# {name}: {name * 25}\n{name.lower()}_part = {len(name)}\n<end_of_step>\n"


def answer(name: str, value: str = "1") -> str:
    return f"<answer>{name}: so the result is \\boxed{{{value}}}<end_of_answer>"


def write_rows(path: Path, trees: Sequence[Tree], q: dict[str, float] | None = None) -> Path:
    """The trees as a `nodes` file; ``q`` sets the Q of nodes by node_id (N = 10, W = 10 Q)."""
    rows = [row for tree in trees for row in tree.rows()]
    for row in rows:
        if q and row["node_id"] in q:
            row["q"] = q[row["node_id"]]
            row["visits"], row["value_sum"] = 10, round(10 * q[row["node_id"]], 12)
    pq.write_table(pa.Table.from_pylist(rows, NODES_SCHEMA), path)
    return path


def derived(tmp_path: Path, derive: Callable, trees: Sequence[Tree],
            q: dict[str, float] | None, **options) -> list[dict]:  # fmt: skip
    """The rows ``derive`` (sql.derive_pairs or sql.derive_sft) writes for ``trees``."""
    nodes = write_rows(tmp_path / "nodes.parquet", trees, q)
    problems = write_problems(tmp_path / "problems.parquet", *trees)
    out = tmp_path / "derived.parquet"
    count = derive(nodes, problems, out, **options)
    rows = pq.read_table(out).to_pylist()
    assert count == len(rows)
    return rows


def pairs_of(
    tmp_path: Path, *trees: Tree, q: dict[str, float] | None = None, **options
) -> list[dict]:
    return derived(tmp_path, sql.derive_pairs, trees, q, **options)


def sft_of(
    tmp_path: Path, *trees: Tree, q: dict[str, float] | None = None, per_problem: int = 2
) -> list[dict]:
    return derived(tmp_path, sql.derive_sft, trees, q, per_problem=per_problem)


def named(rows: list[dict], names: dict[str, str]) -> list[tuple]:
    """(where, chosen, rejected, margin, weight), nodes and steps given by their names."""
    return [
        (names[r["node_id"]], names[r["chosen"]], names[r["rejected"]], r["margin"], r["weight"])
        for r in rows
    ]


def names_of(tree: Tree, **nodes: Node) -> dict[str, str]:
    """Names by node_id and by step text, the root named 'root'."""
    found = {tree.root.node_id: "root"}
    for name, node in nodes.items():
        found[node.node_id] = name
        found[node.step_text] = name
    return found


# --------------------------------------------------------------------------- pairs: selection


def test_ties_in_q_go_to_the_lower_child_index_on_both_sides(tmp_path):
    t = Tree("p1")
    kids = {}
    # (name, ppm, correct): Q = (ppm + 1) / 2 for a right answer, (ppm - 1) / 2 for a wrong one.
    for name, ppm, correct in [
        ("A", 0.0, True), ("D", 0.0, False), ("B", 1.0, True),
        ("E", -1.0, False), ("C", 0.0, True), ("F", 0.0, False),
    ]:  # fmt: skip
        kids[name] = t.step(t.root, step(name), ppm=ppm)
        t.answer(kids[name], answer(name + "x", "1" if correct else "0"), correct=correct)
    # Q: A .5 (index 0), D -.5 (1), B 1 (2), E -1 (3), C .5 (4), F -.5 (5).
    # Positives by Q descending: B, then A before C (tie, lower index): B, A.
    # Negatives by Q ascending: E, then D before F (tie, lower index): E, D. 2 x 2, weight 1/4.
    # Continuations end at the +1 / -1 answer, so every best mean > every worst mean.
    rows = pairs_of(tmp_path, t, min_edit=20)
    assert named(rows, names_of(t, **kids)) == [
        ("root", "B", "E", 2.0, 0.25),
        ("root", "B", "D", 1.5, 0.25),
        ("root", "A", "E", 1.5, 0.25),
        ("root", "A", "D", 1.0, 0.25),
    ]
    assert [(r["chosen_q"], r["rejected_q"]) for r in rows] == [
        (1.0, -1.0), (1.0, -0.5), (0.5, -1.0), (0.5, -0.5),
    ]  # fmt: skip


def test_one_positive_takes_four_negatives_by_q_ascending(tmp_path):
    t = Tree("p1")
    kids = {"P": t.step(t.root, step("P"))}
    t.answer(kids["P"], answer("Px"), correct=True)
    for name, ppm in [("N0", 0.0), ("N1", None), ("N2", 0.0), ("N3", 1.0), ("N4", None)]:
        kids[name] = t.step(t.root, step(name), ppm=ppm)
        t.answer(kids[name], answer(name + "x", "0"), correct=False)
    # Q: P 1; N0 -.5, N1 -1, N2 -.5, N3 0, N4 -1 (child indexes 1..5).
    # One positive: up to 4 negatives, Q ascending, ties by index: N1, N4, N0, N2. weight 1/4.
    rows = pairs_of(tmp_path, t)
    assert named(rows, names_of(t, **kids)) == [
        ("root", "P", "N1", 2.0, 0.25),
        ("root", "P", "N4", 2.0, 0.25),
        ("root", "P", "N0", 1.5, 0.25),
        ("root", "P", "N2", 1.5, 0.25),
    ]


@pytest.mark.parametrize(
    ("n_pos", "n_neg", "taken", "weight"),
    [(3, 1, (3, 1), 1 / 3), (1, 1, (1, 1), 1.0), (1, 2, (1, 2), 0.5), (2, 2, (2, 2), 0.25),
     (5, 1, (4, 1), 0.25), (3, 3, (2, 2), 0.25), (2, 5, (2, 2), 0.25)],
)  # fmt: skip
def test_how_many_of_each_side_are_taken(tmp_path, n_pos, n_neg, taken, weight):
    t = Tree("p1")
    for i in range(n_pos):
        t.answer(t.step(t.root, step(f"P{i}")), answer(f"P{i}x"), correct=True)
    for i in range(n_neg):
        t.answer(t.step(t.root, step(f"N{i}")), answer(f"N{i}x", "0"), correct=False)
    # All positives Q 1, all negatives Q -1: every combination taken is a pair, margin 2.
    rows = pairs_of(tmp_path, t)
    assert len(rows) == taken[0] * taken[1]
    assert len({r["chosen"] for r in rows}) == taken[0]
    assert len({r["rejected"] for r in rows}) == taken[1]
    assert {r["weight"] for r in rows} == {weight}
    # The first ones by child index (all Q tie).
    assert sorted({r["chosen"] for r in rows}) == sorted(step(f"P{i}") for i in range(taken[0]))


def test_invalid_terminals_are_neither_correct_nor_wrong(tmp_path):
    t = Tree("p1")
    kids = {"X": t.step(t.root, step("X"))}
    kids["X1"] = t.step(kids["X"], step("Xa"))
    t.answer(kids["X1"], answer("X1x"), correct=True)
    t.invalid(kids["X"], step("Xe"), kind="too_many_errors")
    t.invalid(kids["X"], step("Xd"), kind="too_deep")
    t.invalid(kids["X"], step("Xu"), kind="unparsable")
    kids["W"] = t.step(t.root, step("W"))
    t.answer(kids["W"], answer("Wx", "0"), correct=False)
    kids["V"] = t.step(t.root, step("V"))
    t.invalid(kids["V"], step("Vd"), kind="too_deep")
    kids["U"] = t.step(t.root, step("U"), ppm=-1.0)
    t.invalid(kids["U"], step("Uu"), kind="unparsable")
    # Q: X 1 (its invalid children are -1 on themselves only), W -1, V 0, U -1.
    # X has a right answer and only invalid terminals besides: not mixed, no pairs below it.
    # V and U hold no graded answer: neither side. Root: 1 positive X, 1 negative W.
    rows = pairs_of(tmp_path, t)
    assert named(rows, names_of(t, **kids)) == [("root", "X", "W", 2.0, 1.0)]


def test_breadth_first_into_mixed_children_with_prefixes(tmp_path):
    t = Tree("p1", question="How many apples?")
    n = {"A": t.step(t.root, step("A"))}
    n["A0"] = t.step(n["A"], step("Aa"))
    n["A00"] = t.answer(n["A0"], answer("A00"), correct=True)
    n["A01"] = t.answer(n["A0"], answer("A01", "0"), correct=False)
    n["A1"] = t.answer(n["A"], answer("A1", "0"), correct=False)
    n["B"] = t.step(t.root, step("B"))
    n["B0"] = t.answer(n["B"], answer("B0"), correct=True)
    n["B1"] = t.answer(n["B"], answer("B1", "0"), correct=False)
    n["C"] = t.step(t.root, step("C"))
    n["C0"] = t.answer(n["C"], answer("C0", "0"), correct=False)
    # Q: A0 0, A -1/3, A1 -1, B 0, C -1.
    # Root: positives B (0), A (-1/3); negatives C (-1), A (-1/3), B (0): 2 x 2, weight 1/4.
    #   B-C margin 1, best B,B0 = .5 > worst C,C0 = -1: kept. B-A margin 1/3 < .5: dropped.
    #   A-C margin 2/3, best A,A0,A00 = 2/9 > -1: kept. A-A margin 0: no.
    # Depth 1 (mixed: A, B; C is one-sided and not visited):
    #   A: positive A0; negatives A1 (-1), A0 (0): one positive, so both. weight 1/2.
    #     A0-A1 margin 1: kept; A0-A0 no.
    #   B: B0-B1, weight 1, margin 2.
    # Depth 2: A0 (mixed): A00-A01, weight 1, margin 2.
    # (min_edit 0: the answer texts differ in a few characters only.)
    rows = pairs_of(tmp_path, t, min_edit=0)
    names = names_of(t, **n)
    assert named(rows, names) == [
        ("root", "B", "C", 1.0, 0.25),
        ("root", "A", "C", pytest.approx(2 / 3), 0.25),
        ("A", "A0", "A1", 1.0, 0.5),
        ("B", "B0", "B1", 2.0, 1.0),
        ("A0", "A00", "A01", 2.0, 1.0),
    ]
    prompt = "<|user|>:\nHow many apples?\n<|assistant|>: Let's think step by step and solve the problem with code."
    head = prompt + "\n<code>\n"
    assert [r["prefix"] for r in rows] == [
        head, head, head + step("A"), head + step("B"), head + step("A") + step("Aa"),
    ]  # fmt: skip
    assert {(r["problem_id"], r["round"], r["split"]) for r in rows} == {("p1", 1, "train")}


# --------------------------------------------------------------------------- pairs: filters


def test_equal_q_is_no_pair_even_at_min_margin_zero(tmp_path):
    t = Tree("p1")
    n = {"P": t.step(t.root, step("P"), ppm=-1.0)}
    t.answer(n["P"], answer("Px"), correct=True)
    n["M"] = t.step(t.root, step("M"))
    t.answer(n["M"], answer("Mx", "0"), correct=False)
    n["N"] = t.step(t.root, step("N"), ppm=1.0)
    t.answer(n["N"], answer("Nx", "0"), correct=False)
    # Q: P 0, M -1, N 0. One positive, negatives M, N: weight 1/2. P-N has margin 0: the rule
    # wants Q(pos) - Q(neg) > 0, whatever min_margin says.
    rows = pairs_of(tmp_path, t, min_margin=0.0)
    assert named(rows, names_of(t, **n)) == [("root", "P", "M", 1.0, 0.5)]


def continuation_tree(links: int) -> tuple[Tree, dict[str, Node]]:
    """P (ppm 1) -> `links` steps (ppm -1) -> right answer: Q(P) 1, each link 0, best
    continuation 2 / (links + 2). N -> N1 -> 7 right answers and 1 wrong: Q(N) = Q(N1) = 6/8,
    worst continuation N, N1, the wrong answer: (.75 + .75 - 1) / 3 = 1/6."""
    t = Tree("p1")
    n = {"P": t.step(t.root, step("P"), ppm=1.0)}
    walker = n["P"]
    for i in range(links):
        walker = t.step(walker, step(f"L{i}"), ppm=-1.0)
    t.answer(walker, answer("Pend"), correct=True)
    n["N"] = t.step(t.root, step("N"))
    n1 = t.step(n["N"], step("Nn"))
    for i in range(7):
        t.answer(n1, answer(f"C{i}"), correct=True)
    t.answer(n1, answer("Nw", "0"), correct=False)
    return t, n


@pytest.mark.parametrize(("links", "kept"), [(9, True), (10, False)])
def test_best_continuation_must_beat_the_worst_continuation(tmp_path, links, kept):
    t, n = continuation_tree(links)
    # Root: positives P (1), N (.75); one negative N: both positives, weight 1/2.
    # P-N: margin .25 (>= min_margin .25). Best from P: 2/11 = .18 > 1/6 with 9 links (kept);
    # 2/12 = 1/6, not above 1/6, with 10 links (dropped). N-N: margin 0, no pair.
    rows = pairs_of(tmp_path, t, min_margin=0.25)
    at_root = [r for r in rows if r["node_id"] == t.root.node_id]
    expected = [("root", "P", "N", 0.25, 0.5)] if kept else []
    assert named(at_root, names_of(t, **n)) == expected


def test_best_continuation_follows_the_best_child_not_the_first(tmp_path):
    # Q set by hand. P (1) has two children with a right answer below: Pa (Q -1, index 0) and
    # Pb (Q 1). N (.5) -> N0, N1, N2 (Q 1 each) -> Nx, wrong (-1).
    t = Tree("p1")
    n = {"P": t.step(t.root, step("P"))}
    pa = t.step(n["P"], step("Pa"))
    pax = t.answer(pa, answer("Pax"), correct=True)
    pb = t.step(n["P"], step("Pb"))
    pbx = t.answer(pb, answer("Pbx"), correct=True)
    n["N"] = t.step(t.root, step("N"))
    walker, chain = n["N"], []
    for i in range(3):
        walker = t.step(walker, step(f"N{i}"))
        chain.append(walker)
    nx = t.answer(walker, answer("Nx", "0"), correct=False)
    q = {
        n["P"].node_id: 1.0, pa.node_id: -1.0, pax.node_id: 1.0, pb.node_id: 1.0,
        pbx.node_id: 1.0, n["N"].node_id: 0.5, chain[0].node_id: 1.0, chain[1].node_id: 1.0,
        chain[2].node_id: 1.0, nx.node_id: -1.0,
    }  # fmt: skip
    # Root: one positive P, one negative N, weight 1, margin .5. Worst from N: N, N0, N1, N2,
    # Nx = 2.5 / 5 = .5. Best from P, by Q: P, Pb, Pbx = 1 > .5: kept. Following the first
    # child instead, P, Pa, Pax = 1/3, the pair would be dropped.
    rows = pairs_of(tmp_path, t, q=q)
    assert named(rows, names_of(t, **n)) == [("root", "P", "N", 0.5, 1.0)]


def test_margin_exactly_at_the_minimum_and_its_rounding_case_are_kept(tmp_path):
    t = Tree("p1")
    n = {}
    for name, correct in [("P", True), ("N", False), ("M", False)]:
        n[name] = t.step(t.root, step(name))
        t.answer(n[name], answer(name + "x", "1" if correct else "0"), correct=correct)
    answers = {
        node.node_id: (1.0 if node.correct else -1.0)
        for node in t.nodes
        if node.correct is not None
    }
    q = {**answers, n["P"].node_id: 0.7, n["N"].node_id: 0.2, n["M"].node_id: 0.21}
    assert 0.7 - 0.2 < 0.5  # the float case: 0.49999999999999994
    # One positive P (.7); negatives N (.2), M (.21) by Q ascending; weight 1/2.
    # P-N: margin 0.7 - 0.2, a rounding error under .5: kept. P-M: .49, dropped.
    rows = pairs_of(tmp_path, t, q=q, min_margin=0.5)
    assert named(rows, names_of(t, **n)) == [("root", "P", "N", 0.7 - 0.2, 0.5)]
    # Exactly at the minimum: P .75, N .25 (margin .5, kept), M .3 (.45, dropped).
    q.update({n["P"].node_id: 0.75, n["N"].node_id: 0.25, n["M"].node_id: 0.3})
    rows = pairs_of(tmp_path, t, q=q, min_margin=0.5)
    assert named(rows, names_of(t, **n)) == [("root", "P", "N", 0.5, 0.5)]
    q[n["P"].node_id] = 0.7  # margins .45 and .4
    assert pairs_of(tmp_path, t, q=q, min_margin=0.5) == []


@pytest.mark.parametrize(("distance", "kept"), [(20, True), (19, False), (21, True)])
def test_edit_distance_at_min_edit_is_kept_one_under_is_dropped(tmp_path, distance, kept):
    base = "# add the two parts\ntotal = " + "7" * 40 + "\n<end_of_step>\n"
    other = base.replace("7" * distance, "3" * distance, 1)  # `distance` substitutions
    t = Tree("p1")
    p = t.step(t.root, base)
    t.answer(p, answer("Px"), correct=True)
    n = t.step(t.root, other)
    t.answer(n, answer("Nx", "0"), correct=False)
    rows = pairs_of(tmp_path, t)  # min_edit defaults to 20
    assert [(r["chosen"], r["rejected"]) for r in rows] == ([(base, other)] if kept else [])


def test_edit_distance_shortcut_by_length_is_exact(tmp_path):
    # The SQL skips the edit distance when the lengths alone differ by min_edit: a text that
    # only grows by 20 characters is kept, by 19 dropped (insertions, no substitution).
    base = step("Q")
    t = Tree("p1")
    t.answer(t.step(t.root, base), answer("Px"), correct=True)
    t.answer(t.step(t.root, base + "#" * 19), answer("Nx", "0"), correct=False)
    t.answer(t.step(t.root, base + "#" * 20), answer("Mx", "0"), correct=False)
    rows = pairs_of(tmp_path, t)
    assert [r["rejected"] for r in rows] == [base + "#" * 20]


def test_pairs_of_several_problems_and_rounds_keep_their_own_trees(tmp_path):
    def tree(problem_id: str, round_: int, flip: bool) -> Tree:
        t = Tree(problem_id, round=round_, question=f"Question {problem_id}?")
        r = t.step(t.root, step("R"))
        t.answer(r, answer("Rx"), correct=not flip)
        w = t.step(t.root, step("W"))
        t.answer(w, answer("Wx", "0"), correct=flip)
        return t

    trees = [tree("p2", 1, False), tree("p1", 2, True), tree("p1", 1, False)]
    rows = pairs_of(tmp_path, *trees)
    # Ordered by problem, round; in p1 round 2 the right and wrong answers swap sides.
    assert [(r["problem_id"], r["round"], r["chosen"], r["rejected"]) for r in rows] == [
        ("p1", 1, step("R"), step("W")),
        ("p1", 2, step("W"), step("R")),
        ("p2", 1, step("R"), step("W")),
    ]
    assert rows[2]["prefix"].startswith(steps.sft_prompt("Question p2?"))


# --------------------------------------------------------------------------- sft and trajectories


def sft_tree() -> tuple[Tree, dict[str, Node], dict[str, float]]:
    t = Tree("p1")
    n: dict[str, Node] = {}
    q: dict[str, float] = {}

    def path(name: str, qs: list[float], *, correct: bool = True, error_at: int = -1) -> None:
        walker = t.root
        for i, value in enumerate(qs[:-1]):
            walker = t.step(walker, step(f"{name}{i}"), error=i == error_at)
            q[walker.node_id] = value
        n[name] = t.answer(walker, answer(name, "1" if correct else "0"), correct=correct)
        q[n[name].node_id] = qs[-1]

    path("A", [0.25, 1.0])  # mean .625, min .25, index path [0, 0]
    path("B", [0.5, 0.375, 1.0])  # mean .625, min .375
    path("C", [0.75, 1.0], error_at=0)  # mean .875, but an error step
    path("D", [1.0, 1.0, 1.0], error_at=1)  # mean 1, error deeper down
    path("E", [0.25, 1.0])  # ties A fully, later index
    path("F", [0.9, -1.0], correct=False)  # wrong answer
    path("H", [0.75, 1.0])  # mean .875, the best clean one
    return t, n, q


def test_sft_orders_by_mean_then_min_then_earliest_path(tmp_path):
    t, n, q = sft_tree()
    # Clean correct trajectories: H (.875), B (.625, min .375), A (.625, .25, index 0),
    # E (.625, .25, index 4). C and D have an error step; F is wrong.
    rows = sft_of(tmp_path, t, q=q, per_problem=4)
    assert [(r["rank"], r["mean_q"]) for r in rows] == [
        (1, 0.875),
        (2, 0.625),
        (3, 0.625),
        (4, 0.625),
    ]
    responses = [r["response"] for r in rows]
    assert responses == [
        "<code>\n" + step("H0") + answer("H"),
        "<code>\n" + step("B0") + step("B1") + answer("B"),
        "<code>\n" + step("A0") + answer("A"),
        "<code>\n" + step("E0") + answer("E"),
    ]
    assert {r["prompt"] for r in rows} == {steps.sft_prompt(t.question)}
    top2 = sft_of(tmp_path, t, q=q)
    assert [r["response"] for r in top2] == responses[:2]
    assert [r["rank"] for r in top2] == [1, 2]


def test_sft_per_problem_and_round_and_a_problem_never_solved(tmp_path):
    def tree(problem_id: str, round_: int, solved: int) -> Tree:
        t = Tree(problem_id, round=round_)
        for i in range(3):
            t.answer(t.step(t.root, step(f"S{i}")), answer(f"S{i}"), correct=i < solved)
        return t

    trees = [tree("p2", 1, 3), tree("p1", 2, 1), tree("p1", 1, 2), tree("p3", 1, 0)]
    rows = sft_of(tmp_path, *trees)
    # p3 has no right answer: no row. The others by (problem, round), at most 2 each.
    assert [(r["problem_id"], r["round"], r["rank"]) for r in rows] == [
        ("p1", 1, 1), ("p1", 1, 2), ("p1", 2, 1), ("p2", 1, 1), ("p2", 1, 2),
    ]  # fmt: skip


def test_trajectories_carry_mean_min_and_error(tmp_path):
    t, n, q = sft_tree()
    bare = t.step(t.root, step("G"))  # an exhausted step whose children are all invalid
    t.invalid(bare, step("Gd"), kind="too_deep")
    t.invalid(bare, step("Ge"), kind="too_many_errors")
    nodes = write_rows(tmp_path / "nodes.parquet", [t], q)
    out = tmp_path / "trajectories.parquet"
    rules_sql.derive_trajectories(nodes, out)
    rows = pq.read_table(out).to_pylist()
    got = {r["steps"][-1]: r for r in rows}
    assert len(rows) == 9  # A B C D E F H and the two invalid children of G, not G
    b = got[answer("B")]
    assert (b["mean_q"], b["min_q"], b["has_error"], b["correct"], b["final_answer"]) == (
        0.625, 0.375, False, True, "1",
    )  # fmt: skip
    assert b["q_values"] == [0.5, 0.375, 1.0]
    assert b["steps"] == [step("B0"), step("B1"), answer("B")]
    assert (got[answer("D")]["has_error"], got[answer("D")]["correct"]) == (True, True)
    assert got[answer("F", "0")]["correct"] is False
    assert got[answer("F", "0")]["mean_q"] == pytest.approx(-0.05)
    gd, ge = got[step("Gd")], got[step("Ge")]
    assert (gd["correct"], gd["has_error"], gd["final_answer"], gd["min_q"]) == (
        False, False, None, -1.0,
    )  # fmt: skip
    assert (ge["correct"], ge["has_error"]) == (False, True)


# --------------------------------------------------------------------------- the search


class ScriptedRunner:
    """Runs each program in this process; a program raises when its *last* line says `fail`,
    whatever its ancestors did, so the consecutive-error counter can be tested on its own."""

    def __init__(self) -> None:
        self.programs: list[str] = []

    def run_many(self, codes: Sequence[str]) -> list[ExecResult]:
        results = []
        for code in codes:
            self.programs.append(code)
            if code.rstrip().splitlines()[-1].startswith("fail"):
                results.append(ExecResult("", error="RuntimeError: scripted failure"))
                continue
            runnable = "\n".join(
                "pass" if line.startswith("fail") else line for line in code.splitlines()
            )
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(runnable, {})  # the tests' own code
            results.append(ExecResult(out.getvalue()))
        return results


RIGHT = "<answer>The answer is \\boxed{12}<end_of_answer>"
WRONG = "<answer>The answer is \\boxed{13}<end_of_answer>"


def run_search(
    script: Callable[[str], list[str]], scorer=None, **config
) -> tuple[SearchNode, ScriptedRunner]:
    runner = ScriptedRunner()
    search = MCTS(ScriptedEngine(script), runner, MCTSConfig(**config), scorer=scorer)
    (tree,) = search.search([Problem("p1", "What is 6 * 2?", "12")])
    check_backup(tree.root, ppm=scorer is not None)
    return tree.root, runner


def check_backup(root: SearchNode, ppm: bool) -> None:
    """N and W of every node follow from its subtree: [PPM init] + [invalid: -1] + graded answers
    below (+1 right, -1 wrong); a node is terminal when created so or when all its children are."""
    for node in walk(root):
        graded = [n for n in walk(node) if n.terminal_kind == "answer"]
        visits = len(graded) + (node.terminal_kind not in (None, "answer"))
        value = sum(1.0 if n.correct else -1.0 for n in graded)
        value -= node.terminal_kind not in (None, "answer")
        if node.ppm_score is not None:
            assert ppm and node.terminal_kind is None and node.parent is not None
            visits, value = visits + 1, value + node.ppm_score
        assert (node.visits, node.value_sum) == (visits, pytest.approx(value)), node.step_text
        if node.terminal_kind is None:
            all_done = bool(node.children) and all(c.is_terminal for c in node.children)
            assert node.is_terminal == all_done or (node.is_terminal and not node.children)


def texts(node: SearchNode) -> list[str]:
    return [child.step_text for child in node.children]


def test_an_answer_sample_is_kept_alone_and_graded_once():
    samples = ["x = 6\n<end_of_step>", "x = 6\n<end_of_step>", "y = 1\n<end_of_step>", WRONG, RIGHT]
    root, runner = run_search(lambda partial: samples, rollouts=4, n_children=5)
    # The expansion holds an <end_of_answer> sample: only the first one (13, wrong) is kept, the
    # code samples before it are dropped and never run. The root is then exhausted.
    assert texts(root) == [WRONG]
    (only,) = root.children
    assert (only.child_index, only.correct, only.final_answer, only.terminal_kind) == (
        0, False, "13", "answer",
    )  # fmt: skip
    assert (root.visits, root.value_sum, root.is_terminal, root.terminal_kind) == (
        1,
        -1.0,
        True,
        None,
    )
    assert runner.programs == []


def test_answers_are_graded_past_max_depth_and_code_runs_before_too_deep():
    def script(partial: str) -> list[str]:
        depth = partial.count("<end_of_step>")
        if depth == 0:
            return ["a = 6\n<end_of_step>"]
        if depth == 1:
            return ["b = a * 2\n<end_of_step>", "fail\n<end_of_step>"]
        return [RIGHT]

    root, runner = run_search(script, rollouts=3, n_children=2, max_depth=1, errors_threshold=1)
    (a,) = root.children
    b, f = a.children
    # Depth 2 > max_depth 1: both code steps run first (their programs are in the runner's log).
    # b runs clean, then is too_deep; f fails, and at errors_threshold 1 that is too_many_errors.
    assert runner.programs == ["a = 6", "a = 6\nb = a * 2", "a = 6\nfail"]
    assert (b.terminal_kind, b.is_error, b.visits, b.value_sum) == ("too_deep", False, 1, -1.0)
    assert (f.terminal_kind, f.is_error, f.visits, f.value_sum) == (
        "too_many_errors",
        True,
        1,
        -1.0,
    )
    # Invalid terminals touch only themselves: a and the root never got a visit; a is exhausted.
    assert (a.visits, a.is_terminal, a.terminal_kind) == (0, True, None)
    assert (root.visits, root.is_terminal) == (0, True)

    # An answer at depth 2 is graded and backed up to the root.
    def answers(partial: str) -> list[str]:
        return ["a = 6\n<end_of_step>"] if partial == "" else [RIGHT]

    root, _ = run_search(answers, rollouts=2, n_children=1, max_depth=1)
    (a,) = root.children
    (ans,) = a.children
    assert (ans.depth, ans.terminal_kind, ans.correct) == (2, "answer", True)
    assert [(n.visits, n.value_sum) for n in (root, a, ans)] == [(1, 1.0)] * 3


def test_errors_threshold_counts_consecutive_errors():
    chain = ["fail\n<end_of_step>", "x = 1\n<end_of_step>", "fail\n<end_of_step>",
             "fail\n<end_of_step>", "fail\n<end_of_step>"]  # fmt: skip

    def script(partial: str) -> list[str]:
        return [chain[partial.count("<end_of_step>")]]

    root, _ = run_search(script, rollouts=1, n_children=1, errors_threshold=2, max_depth=8)
    nodes = list(walk(root))[1:]
    # fail (1 in a row), x = 1 (clean: 0), fail (1), fail (2 = threshold): too_many_errors.
    assert [(n.is_error, n.consecutive_errors, n.terminal_kind) for n in nodes] == [
        (True, 1, None), (False, 0, None), (True, 1, None), (True, 2, "too_many_errors"),
    ]  # fmt: skip


def test_a_whole_search_by_hand_with_its_backups():
    # root -> A (a = 6), B (a = 7), U (unparsable: no stop marker, -1 on itself only).
    # Rollout 1: A and B at N = 0 tie (UCT = Q = 0): A. A -> A1 prints 12, A2 prints 13 (the
    #   third sample repeats A1 and is dropped); tie: A1 -> answer 12, right: +1 to A1, A, root.
    #   A1 is exhausted.
    # Rollout 2: root N 1, so ln N = 0: UCT(A) = Q = 1 > UCT(B) = 0: A, then A2 (A1 is
    #   terminal) -> answer 13, wrong: -1 to A2, A, root. A is exhausted.
    # Rollout 3: B -> B1 prints 14 -> answer 14, wrong. Every node is now terminal.
    def script(partial: str) -> list[str]:
        if partial == "":
            return ["a = 6\n<end_of_step>", "a = 7\n<end_of_step>", "a = 8 with no marker"]
        if partial.endswith("<end_of_output>\n"):
            printed = partial.rsplit("<output>", 1)[1].split("<end_of_output>")[0]
            return [f"<answer>The answer is \\boxed{{{printed}}}<end_of_answer>"]
        if partial == "a = 6\n<end_of_step>\n":
            return ["print(a * 2)\n<end_of_code>", "print(a * 2 + 1)\n<end_of_code>"]
        return ["print(a * 2)\n<end_of_code>"]

    root, _ = run_search(script, rollouts=5, n_children=3)
    a, b, u = root.children
    assert u.terminal_kind == "unparsable" and (u.visits, u.value_sum) == (1, -1.0)
    a1, a2 = a.children
    assert [(n.visits, n.value_sum) for n in (root, a, a1, a2, b)] == [
        (3, -1.0), (2, 0.0), (1, 1.0), (1, -1.0), (1, -1.0),
    ]  # fmt: skip
    assert a1.step_text == "print(a * 2)\n<end_of_code>\n<output>12<end_of_output>\n"
    assert [n.is_terminal and n.terminal_kind is None for n in (root, a, a1, a2, b)] == [True] * 5


def test_ppm_mode_initialises_each_new_non_terminal_child_once():
    def script(partial: str) -> list[str]:
        if partial == "":
            return ["a = 6\n<end_of_step>", "fail\n<end_of_step>", "no marker"]
        if partial.startswith("fail"):
            return ["fail\n<end_of_step>"]
        return [RIGHT]

    scorer = FixedScorer(0.25)
    root, _ = run_search(script, scorer=scorer, rollouts=3, n_children=3, errors_threshold=2)
    a, f, u = root.children
    (ff,) = f.children
    (ans,) = a.children
    # New non-terminal children a and f get update(.25); u (unparsable), ff (2 errors in a row)
    # and the answer are terminal: never scored. Rollout 1: a and f tie at Q .25 (root N 0): a,
    # then its right answer: a (2, 1.25). Rollout 2: f (UCT .25 + 2 sqrt(ln 1) = .25 vs a
    # terminal): ff, too many errors, -1 on itself.
    assert len(scorer.texts) == 2
    assert [(n.ppm_score, n.visits, n.value_sum) for n in (a, f, u, ff, ans)] == [
        (0.25, 2, 1.25), (0.25, 1, 0.25), (None, 1, -1.0), (None, 1, -1.0), (None, 1, 1.0),
    ]  # fmt: skip
    assert (root.visits, root.value_sum, root.ppm_score) == (1, 1.0, None)
    assert scorer.texts[0] == steps.generation_prefix(
        steps.sft_prompt("What is 6 * 2?"), [a.step_text]
    )


def test_uct_without_exploration_when_a_count_is_zero_and_ties_to_the_earliest():
    parent = make_root("p")
    kids = [add_child(parent, f"s{i}") for i in range(3)]
    kids[1].visits, kids[1].value_sum = 1, 0.5
    # Parent N 0: UCT = Q for all: .5 for s1 wins.
    assert uct(kids[1], 0, 2.0) == 0.5 and select_child(parent, 2.0) is kids[1]
    parent.visits = 4
    # Child N 0: UCT = Q = 0, no bonus; s1: .5 + 2 sqrt(ln 4 / 1).
    assert uct(kids[0], 4, 2.0) == 0.0
    assert uct(kids[1], 4, 2.0) == pytest.approx(0.5 + 2 * math.sqrt(math.log(4)))
    # Equal UCT: the earliest non-terminal child.
    for kid in kids:
        kid.visits, kid.value_sum = 2, 1.0
    assert select_child(parent, 2.0) is kids[0]
    kids[0].is_terminal = True
    assert select_child(parent, 2.0) is kids[1]
    assert select_child(parent, 0.0) is kids[1]


def test_rows_of_a_search_keep_terminal_kind_null_on_exhausted_nodes():
    def script(partial: str) -> list[str]:
        return ["a = 6\n<end_of_step>"] if partial == "" else [WRONG]

    root, _ = run_search(script, rollouts=2, n_children=1)
    rows = to_rows(root, "p1", 1)
    assert [(r["depth"], r["is_terminal"], r["terminal_kind"], r["correct"]) for r in rows] == [
        (0, True, None, None), (1, True, None, None), (2, True, "answer", False),
    ]  # fmt: skip


POOL = [
    *(f"v{i} = {i}\n<end_of_step>" for i in range(8)), "fail\n<end_of_step>",
    "fail\n<end_of_step>", "print(6 * 2)\n<end_of_code>", RIGHT, WRONG, "no stop marker at all",
    "<answer>no box here<end_of_answer>", "# so it is \\boxed{12}\n<end_of_step>",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_random_searches_keep_every_rule_of_the_tree(seed):
    config = MCTSConfig(rollouts=8, n_children=3, max_depth=3, errors_threshold=2, seed=seed)
    scorer = FixedScorer(-0.5) if seed % 2 else None
    search = MCTS(SampledEngine(lambda partial: POOL), ScriptedRunner(), config, scorer=scorer)
    trees = search.search([Problem(f"p{i}", f"What is 6 * 2, take {i}?", "12") for i in range(3)])
    for tree in trees:
        check_backup(tree.root, ppm=scorer is not None)
        for node in walk(tree.root):
            if node.terminal_kind is not None:
                assert not node.children and node.is_terminal
            if node.terminal_kind == "answer":
                assert node.correct == (node.final_answer == "12")
            if node.parent is not None and node.terminal_kind != "answer":
                assert node.depth <= config.max_depth or node.terminal_kind is not None
                errors = node.parent.consecutive_errors + 1 if node.is_error else 0
                if node.terminal_kind != "unparsable":
                    assert node.consecutive_errors == errors
                    assert (node.terminal_kind == "too_many_errors") == (errors >= 2)
            ended = [c for c in node.children if c.step_text.endswith("<end_of_answer>")]
            if ended:  # an <end_of_answer> sample is kept alone
                assert node.children == ended[:1]
            assert [c.child_index for c in node.children] == list(range(len(node.children)))
            assert len({c.step_text for c in node.children}) == len(node.children)
