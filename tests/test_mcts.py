"""The search of docs/algorithm.md on hand-made scripts, with the real sandbox."""

from __future__ import annotations

import pytest

from pipeline import ids
from pipeline.config import MCTSConfig
from pipeline.execution.sandbox import Sandbox
from pipeline.rules.checks.sql_checks import backup_violations
from pipeline.search import steps
from pipeline.search.mcts import MCTS, Problem, tree_rows
from pipeline.search.tree import Node, add_child, make_root, select_child, uct, walk
from tests.fakes import FixedScorer, SampledEngine, ScriptedEngine

ANSWER_12 = "<answer>The answer is \\boxed{12}<end_of_answer>"
ANSWER_14 = "<answer>The answer is \\boxed{14}<end_of_answer>"
ANSWER_5 = "<answer>The answer is \\boxed{5}<end_of_answer>"


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, timeout_s=5.0, memory_mb=512) as box:
        yield box


ANSWER_AFTER_OUTPUT = {"12": ANSWER_12, "14": ANSWER_14, "5.0": ANSWER_5}


def two_branch_script(partial: str) -> list[str]:
    """Root: A (a = 6), B (a = 7), C (a = 2.5); each prints a * 2, then answers what it printed:
    A 12 (right), B 14 and C 5 (both wrong)."""
    if partial == "":
        return ["a = 6\n<end_of_step>", "a = 7\n<end_of_step>", "a = 2.5\n<end_of_step>"]
    if partial.endswith("<end_of_output>\n"):
        printed = partial.rsplit("<output>", 1)[1].split("<end_of_output>")[0]
        return [ANSWER_AFTER_OUTPUT[printed]]
    return ["print(a * 2)\n<end_of_code>"]


def by_text(tree_root: Node) -> dict[str, Node]:
    found, stack = {}, [tree_root]
    while stack:
        node = stack.pop()
        found[node.step_text.split("\n")[0]] = node
        stack.extend(node.children)
    return found


def test_uct_prefers_exploration_then_earliest_child_on_ties():
    parent = make_root("p")
    first, second, third = (add_child(parent, f"s{i}") for i in range(3))
    # Unvisited children: Q = 0 and no exploration term, so the earliest wins the tie.
    assert select_child(parent, c_puct=2.0) is first
    parent.visits, parent.value_sum = 10, 0.0
    first.visits, first.value_sum = 5, 2.5  # 0.5 + 2*sqrt(ln 10 / 5) = 1.857
    second.visits, second.value_sum = 1, -1.0  # -1 + 2*sqrt(ln 10 / 1) = 2.035
    third.visits, third.value_sum = 0, 0.0  # 0
    assert select_child(parent, c_puct=2.0) is second
    second.is_terminal = True  # terminal children are never selected
    assert select_child(parent, c_puct=2.0) is first


def test_terminal_guided_backup_by_hand(sandbox):
    engine = ScriptedEngine(two_branch_script)
    search = MCTS(engine, sandbox, MCTSConfig(rollouts=5, n_children=3, c_puct=2.0))
    (tree,) = search.search([Problem("p1", "What is 6 * 2?", "12")])
    nodes = by_text(tree.root)
    root, a, b, c = nodes[""], nodes["a = 6"], nodes["a = 7"], nodes["a = 2.5"]
    # Rollout 1: root expands to A, B, C, all unvisited: UCT is Q = 0 for each and the tie goes
    # to A, which is followed to its answer 12 (+1 up to the root). A's one child is then
    # terminal, so A is too.
    # Rollout 2: B and C tie at N = 0: B, followed to its answer 14 (-1 up to the root).
    # Rollout 3: only C is left; its answer 5 is wrong (-1). Then every node is terminal.
    assert (root.visits, root.value_sum) == (3, -1.0)
    assert (a.visits, a.value_sum, a.is_terminal, a.terminal_kind) == (1, 1.0, True, None)
    assert (b.visits, b.value_sum) == (1, -1.0)
    assert (c.visits, c.value_sum, c.terminal_kind) == (1, -1.0, None)
    c_answer = c.children[0].children[0]
    assert (c_answer.correct, c_answer.terminal_kind, c_answer.final_answer) == (
        False,
        "answer",
        "5",
    )
    assert root.is_terminal and tree.done
    assert [child.child_index for child in root.children] == [0, 1, 2]
    a_code = a.children[0]
    assert a_code.step_text == "print(a * 2)\n<end_of_code>\n<output>12<end_of_output>\n"
    assert a_code.children[0].correct is True and a_code.children[0].final_answer == "12"
    assert backup_violations(tree_rows([tree], round_=1)) == []
    # Five rollouts were allowed but the tree was exhausted after three.
    assert tree.rollouts_left == 2


def test_trees_of_a_batch_share_generation_calls(sandbox):
    engine = ScriptedEngine(two_branch_script)
    search = MCTS(engine, sandbox, MCTSConfig(rollouts=3, n_children=3))
    problems = [Problem(f"p{i}", f"Question {i}: what is 6 * 2?", "12") for i in range(4)]
    trees = search.search(problems)
    # One tree needs 7 expansions (the root, then each of A, B and C and its code step); four
    # trees in lock-step need 7 calls of 4 prompts.
    assert [len(call) for call in engine.calls] == [4] * 7
    assert all(tree.root.visits == 3 for tree in trees)


def test_duplicates_dropped_without_an_answer():
    samples = ["x = 1\n<end_of_step>", "x = 1\n<end_of_step>", "y = 2\n<end_of_step>"]
    engine = ScriptedEngine(lambda partial: samples)
    search = MCTS(engine, _NoRuns(), MCTSConfig(rollouts=1, n_children=3, max_depth=1))
    (tree,) = search.search([Problem("p", "q", "12")])
    assert [child.step_text for child in tree.root.children] == [
        "x = 1\n<end_of_step>\n", "y = 2\n<end_of_step>\n",
    ]  # fmt: skip


def test_mixed_expansion_keeps_only_the_first_answer(sandbox):
    # Code, an answer 14, another answer 12, more code: the reference keeps the first sample that
    # stopped at <end_of_answer> alone and drops every other sample, code steps included. The
    # root's one child is graded wrong, so the tree is finished after one rollout.
    samples = ["x = 1\n<end_of_step>", ANSWER_14, ANSWER_12, "y = 2\n<end_of_step>"]
    search = MCTS(
        ScriptedEngine(lambda partial: samples), sandbox, MCTSConfig(rollouts=3, n_children=4)
    )
    (tree,) = search.search([Problem("p", "q", "12")])
    (only,) = tree.root.children
    assert (only.step_text, only.child_index, only.correct) == (ANSWER_14, 0, False)
    assert (tree.root.visits, tree.root.value_sum, tree.root.is_terminal) == (1, -1.0, True)
    assert backup_violations(tree_rows([tree], round_=1)) == []


def test_an_unparsable_answer_also_ends_the_expansion(sandbox):
    # "<answer>... <end_of_answer>" without \boxed{} stopped at <end_of_answer> too: it alone is
    # kept, as an unparsable terminal (update(-1) on itself only).
    samples = ["x = 1\n<end_of_step>", "<answer>I do not know<end_of_answer>"]
    search = MCTS(
        ScriptedEngine(lambda partial: samples), sandbox, MCTSConfig(rollouts=1, n_children=2)
    )
    (tree,) = search.search([Problem("p", "q", "12")])
    (only,) = tree.root.children
    assert (only.terminal_kind, only.visits, only.value_sum) == ("unparsable", 1, -1.0)
    assert tree.root.visits == 0


class _NoRuns:
    """A code runner for searches whose steps never need a result: every program prints ''."""

    def run_many(self, codes):
        from pipeline.execution.sandbox import ExecResult

        return [ExecResult(stdout="", error=None, timed_out=False, duration_s=0.0) for _ in codes]


def test_consecutive_errors_end_the_branch(sandbox):
    def script(partial):
        return ["y = x + 1\n<end_of_step>"] if partial else ["x = 1 / 0\n<end_of_step>"]

    search = MCTS(
        ScriptedEngine(script), sandbox, MCTSConfig(rollouts=3, n_children=2, errors_threshold=2)
    )
    (tree,) = search.search([Problem("p", "q", "1")])
    first = tree.root.children[0]
    second = first.children[0]
    # The first error does not end the branch; its node only turns terminal once its one
    # child is terminal, and it keeps terminal_kind null (docs/data-contracts.md).
    assert first.is_error and first.terminal_kind is None and first.consecutive_errors == 1
    assert first.observation.startswith("ZeroDivisionError")
    assert second.terminal_kind == "too_many_errors" and second.consecutive_errors == 2
    # An invalid terminal is penalised on itself only.
    assert (second.visits, second.value_sum) == (1, -1.0)
    assert (first.visits, tree.root.visits) == (0, 0)
    assert tree.root.is_terminal


def test_code_deeper_than_max_depth_runs_then_is_too_deep(sandbox):
    runs = []

    class CountingSandbox:
        def run_many(self, codes):
            runs.extend(codes)
            return sandbox.run_many(codes)

    def script(partial):
        return [f"x{partial.count('<end_of_step>')} = 1\n<end_of_step>"]

    search = MCTS(
        ScriptedEngine(script), CountingSandbox(), MCTSConfig(rollouts=1, n_children=1, max_depth=2)
    )
    (tree,) = search.search([Problem("p", "q", "1")])
    deepest = tree.root.children[0].children[0].children[0]
    assert deepest.depth == 3 and deepest.terminal_kind == "too_deep"
    assert (deepest.visits, deepest.value_sum) == (1, -1.0)
    # Depths 1, 2 and 3 ran: the reference runs a step's code before it applies max_depth.
    assert len(runs) == 3 and runs[-1] == "x0 = 1\nx1 = 1\nx2 = 1"


def test_failing_code_past_max_depth_ends_as_too_many_errors(sandbox):
    # Depth 1 fails (1 consecutive error); depth 2 = max_depth + 1 fails again, which reaches the
    # threshold: too_many_errors, not too_deep.
    def script(partial):
        return ["y = x\n<end_of_step>"] if partial else ["x = 1 / 0\n<end_of_step>"]

    config = MCTSConfig(rollouts=1, n_children=1, max_depth=1, errors_threshold=2)
    (tree,) = MCTS(ScriptedEngine(script), sandbox, config).search([Problem("p", "q", "1")])
    second = tree.root.children[0].children[0]
    assert (second.depth, second.terminal_kind, second.consecutive_errors) == (
        2,
        "too_many_errors",
        2,
    )


def test_unparsable_step_is_an_invalid_terminal(sandbox):
    def script(partial):
        return ["this step never stops"]

    search = MCTS(ScriptedEngine(script), sandbox, MCTSConfig(rollouts=1, n_children=1))
    (tree,) = search.search([Problem("p", "q", "1")])
    (child,) = tree.root.children
    assert child.terminal_kind == "unparsable" and child.value_sum == -1.0


def test_ppm_augmented_round_initialises_new_children(sandbox):
    scorer = FixedScorer(0.25)
    search = MCTS(
        ScriptedEngine(two_branch_script),
        sandbox,
        MCTSConfig(rollouts=5, n_children=3),
        scorer=scorer,
    )
    (tree,) = search.search([Problem("p1", "What is 6 * 2?", "12")])
    nodes = by_text(tree.root)
    a, c = nodes["a = 6"], nodes["<answer>The answer is \\boxed{5}<end_of_answer>"]
    # A: update(0.25) at creation, then the correct answer below it (+1).
    assert (a.ppm_score, a.visits, a.value_sum) == (0.25, 2, 1.25)
    assert c.ppm_score is None  # terminals are graded, not scored
    # The PPM saw prompt + partial solution, in the SFT prompt format.
    assert scorer.texts and all(
        text.startswith("<|user|>:\nWhat is 6 * 2?") for text in scorer.texts
    )
    assert backup_violations(tree_rows([tree], round_=3)) == []


def test_backup_check_catches_a_corrupted_tree(sandbox):
    search = MCTS(ScriptedEngine(two_branch_script), sandbox, MCTSConfig(rollouts=5, n_children=3))
    (tree,) = search.search([Problem("p1", "What is 6 * 2?", "12")])
    rows = tree_rows([tree], round_=1)
    # One visit too many at the root, with q kept consistent: only the subtree rule can tell.
    rows[0]["visits"] += 1
    rows[0]["q"] = rows[0]["value_sum"] / rows[0]["visits"]
    (broken,) = backup_violations(rows)
    assert broken["check"] == "visits and value_sum follow from the subtree"
    assert (broken["node_id"], broken["visits"], broken["expected_visits"]) == (
        rows[0]["node_id"], 4, 3,
    )  # fmt: skip


# --------------------------------------------------------------------------- hand-worked trees
#
# Each table below is one whole search worked out by hand from docs/algorithm.md; every row is
# (label, depth, child_index, visits, value_sum, is_terminal, terminal_kind, correct, ppm_score,
# is_error) in pre-order, and q must be value_sum / visits (0 when unvisited).

ERROR_STEP = "x = 1 / 0\n<end_of_step>"  # A: a code error below the root
GOOD_STEP = "x = 6\n<end_of_step>"  # B
PRINT_STEP = "print(x * 2)\n<end_of_code>"  # B1: closes the code block, prints 12
TRIPLE_STEP = "print(x * 3)\n<end_of_code>"  # B2: closes the code block, prints 18
LABELS = {
    "": "root",
    ERROR_STEP + "\n": "A",
    ANSWER_5: "A1",
    GOOD_STEP + "\n": "B",
    PRINT_STEP + "\n<output>12<end_of_output>\n": "B1",
    ANSWER_12: "B1a",
    TRIPLE_STEP + "\n<output>18<end_of_output>\n": "B2",
    ANSWER_14: "B2a",
}


def error_then_answer_script(partial: str) -> list[str]:
    """root -> A (1 / 0), B (x = 6); A's samples are more code and the answer 5, so A keeps only
    A1 (5, wrong); B -> B1 (prints 12), B2 (prints 18); B1 -> B1a (12, right); B2 -> B2a (14)."""
    if partial == "":
        return [ERROR_STEP, GOOD_STEP]
    if partial == ERROR_STEP + "\n":
        return ["y = x\n<end_of_step>", ANSWER_5]
    if partial == GOOD_STEP + "\n":
        return [PRINT_STEP, TRIPLE_STEP]
    return [ANSWER_12 if "<output>12" in partial else ANSWER_14]


def search_table(sandbox, script, scorer=None, **config) -> list[tuple]:
    """Run one problem (truth 12) and return its nodes table as labelled tuples."""
    search = MCTS(ScriptedEngine(script), sandbox, MCTSConfig(**config), scorer=scorer)
    (tree,) = search.search([Problem("p1", "What is 6 * 2?", "12")])
    rows = tree_rows([tree], round_=1)
    assert backup_violations(rows) == []
    check_ids_and_statistics(rows)
    return [
        (
            LABELS[row["step_text"]], row["depth"], row["child_index"], row["visits"],
            row["value_sum"], row["is_terminal"], row["terminal_kind"], row["correct"],
            row["ppm_score"], row["is_error"],
        )
        for row in rows
    ]  # fmt: skip


def check_ids_and_statistics(rows: list[dict]) -> None:
    """Content ids, parent links, q and tokens as the `nodes` contract states (docs/data-contracts.md)."""
    by_id = {row["node_id"]: row for row in rows}
    root = rows[0]
    assert (root["node_id"], root["parent_id"], root["tokens"]) == (ids.root_id("p1"), None, 0)
    for row in rows[1:]:
        assert row["node_id"] == ids.node_id(row["parent_id"], row["step_text"])
        assert row["depth"] == by_id[row["parent_id"]]["depth"] + 1
        # ScriptedEngine counts a completion's whitespace-separated words as its tokens.
        generated = row["step_text"].split("\n<output>")[0].removesuffix("\n")
        assert row["tokens"] == len(generated.split())
    for row in rows:
        assert row["q"] == (row["value_sum"] / row["visits"] if row["visits"] else 0.0)


HAND_WORKED_TABLE = [
    ("root", 0, 0, 3, -1.0, True, None, None, None, False),
    ("A", 1, 0, 1, -1.0, True, None, None, None, True),
    ("A1", 2, 0, 1, -1.0, True, "answer", False, None, False),
    ("B", 1, 1, 2, 0.0, True, None, None, None, False),
    ("B1", 2, 0, 1, 1.0, True, None, None, None, False),
    ("B1a", 3, 0, 1, 1.0, True, "answer", True, None, False),
    ("B2", 2, 1, 1, -1.0, True, None, None, None, False),
    ("B2a", 3, 0, 1, -1.0, True, "answer", False, None, False),
]


def test_hand_worked_search_error_branch_then_correct_answer(sandbox):
    # rollouts 3, children 2, errors_threshold 2, max_depth 3, c = 2, truth 12.
    # Rollout 1: root expands to A (ZeroDivisionError, 1 consecutive error) and B; both have
    #   N = 0, so UCT is Q = 0 for both and the tie goes to A. A's samples are a code step and
    #   the answer 5: the answer alone is kept (A1). It is wrong: A1, A and root each get
    #   N += 1, W -= 1. A's only child is terminal, so A turns terminal (terminal_kind stays
    #   null); the rollout ends.
    # Rollout 2: B is root's only non-terminal child. B expands: B1 closes the code block and
    #   gets <output>12<end_of_output>, B2 gets <output>18<end_of_output>. They tie at N = 0:
    #   B1, which expands to B1a at depth 3: 12 is right (B1a, B1, B, root: +1).
    # Rollout 3: B2, which expands to B2a: 14 is wrong (B2a, B2, B, root: -1). Every node is
    #   now terminal.
    table = search_table(
        sandbox, error_then_answer_script, rollouts=3, n_children=2, max_depth=3, errors_threshold=2
    )
    assert table == HAND_WORKED_TABLE


def test_hand_worked_search_answer_past_max_depth_is_graded(sandbox):
    # The same search with max_depth 2: B1a and B2a sit at depth 3 = max_depth + 1. The depth
    # rule applies only to steps that are not answers, so both are graded and backed up to the
    # root exactly as before: the same table.
    table = search_table(
        sandbox, error_then_answer_script, rollouts=3, n_children=2, max_depth=2, errors_threshold=2
    )
    assert table == HAND_WORKED_TABLE


def test_hand_worked_ppm_augmented_search(sandbox):
    # The first search with a PPM that scores every prefix 0.5. New non-terminal children (A, B,
    # B1, B2) get update(0.5) once; terminals (A1, B1a, B2a) are never scored.
    # Rollout 1: A and B both have Q = 0.5, root N = 0 (no exploration term): tie, A. A1 wrong:
    #   A (2, 0.5 - 1), root (1, -1).
    # Rollout 2: B expands: B1 and B2 (1, 0.5) each; B has N = 1, so ln N = 0: tie, B1. B1a
    #   right: B1 (2, 1.5), B (2, 1.5), root (2, 0).
    # Rollout 3: B2; B2a wrong: B2 (2, -0.5), B (3, 0.5), root (3, -1).
    table = search_table(
        sandbox, error_then_answer_script, scorer=FixedScorer(0.5),
        rollouts=3, n_children=2, max_depth=3, errors_threshold=2,
    )  # fmt: skip
    assert table == [
        ("root", 0, 0, 3, -1.0, True, None, None, None, False),
        ("A", 1, 0, 2, -0.5, True, None, None, 0.5, True),
        ("A1", 2, 0, 1, -1.0, True, "answer", False, None, False),
        ("B", 1, 1, 3, 0.5, True, None, None, 0.5, False),
        ("B1", 2, 0, 2, 1.5, True, None, None, 0.5, False),
        ("B1a", 3, 0, 1, 1.0, True, "answer", True, None, False),
        ("B2", 2, 1, 2, -0.5, True, None, None, 0.5, False),
        ("B2a", 3, 0, 1, -1.0, True, "answer", False, None, False),
    ]


def test_hand_worked_error_that_closes_the_code_block(sandbox):
    # root -> A (print(1 / 0) <end_of_code>), B (print(6 * 2) <end_of_code>); rollouts 2,
    # children 2. Both close the code block, so both carry their observation as an output
    # block, the error text included. A's two samples are the same answer 14: one child, wrong
    # (A, root: -1). B's samples are 12 then 14: both reached <end_of_answer>, only the first
    # (12, right) is kept (B, root: +1). Root: N = 2, W = 0.
    def script(partial):
        if partial == "":
            return ["print(1 / 0)\n<end_of_code>", "print(6 * 2)\n<end_of_code>"]
        return [ANSWER_14] if "ZeroDivisionError" in partial else [ANSWER_12, ANSWER_14]

    search = MCTS(ScriptedEngine(script), sandbox, MCTSConfig(rollouts=2, n_children=2))
    (tree,) = search.search([Problem("p1", "What is 6 * 2?", "12")])
    a, b = tree.root.children
    assert a.step_text == (
        "print(1 / 0)\n<end_of_code>\n<output>ZeroDivisionError: division by zero<end_of_output>\n"
    )
    assert (a.is_error, a.consecutive_errors, a.terminal_kind) == (True, 1, None)
    assert b.step_text == "print(6 * 2)\n<end_of_code>\n<output>12<end_of_output>\n"
    assert [(c.step_text, c.correct) for c in a.children] == [(ANSWER_14, False)]
    assert [(c.step_text, c.correct) for c in b.children] == [(ANSWER_12, True)]
    stats = [(n.visits, n.value_sum) for n in (tree.root, a, a.children[0], b, b.children[0])]
    assert stats == [(2, 0.0), (1, -1.0), (1, -1.0), (1, 1.0), (1, 1.0)]
    assert backup_violations(tree_rows([tree], round_=1)) == []


def test_unvisited_child_gets_no_exploration_bonus():
    # Root N = 3; A was visited once with a wrong answer, B never: UCT(A) = -1 + 2 * sqrt(ln 3)
    # = 1.096 beats UCT(B) = Q = 0, since an unvisited child has no exploration term.
    parent = make_root("p")
    a, b = add_child(parent, "a"), add_child(parent, "b")
    parent.visits, parent.value_sum = 3, -1.0
    a.visits, a.value_sum = 1, -1.0
    assert uct(a, 3, 2.0) == pytest.approx(1.0963, abs=1e-4)
    assert select_child(parent, c_puct=2.0) is a
    # PPM-initialised children under a parent with N = 0: no exploration, Q alone decides.
    parent.visits, parent.value_sum = 0, 0.0
    a.visits, a.value_sum = 1, 0.3
    b.visits, b.value_sum = 1, 0.6
    assert uct(b, 0, 2.0) == 0.6 and select_child(parent, c_puct=2.0) is b


# --------------------------------------------------------------------------- prompts and seeds


def test_few_shot_prompt_style_searches_the_asked_question(sandbox):
    engine = ScriptedEngine(two_branch_script)
    scorer = FixedScorer(0.0)
    config = MCTSConfig(rollouts=5, n_children=3, prompt_style="few_shot")
    (tree,) = MCTS(engine, sandbox, config, scorer=scorer).search(
        [Problem("p1", "What is 6 * 2?", "12")]
    )
    # The prompt holds the instruction and worked examples, then the question; the search
    # continues after the question, so the tree is the one of the SFT prompt (root: +1 -1 -1).
    assert all(p.startswith(steps.INSTRUCTION.format()) for call in engine.calls for p in call)
    assert all("Question: What is 6 * 2?\n" in text for text in scorer.texts)
    assert (tree.root.visits, tree.root.value_sum) == (3, -1.0)
    assert sorted(n.final_answer for n in walk(tree.root) if n.terminal_kind == "answer") == [
        "12", "14", "5",
    ]  # fmt: skip


def choice_script(partial: str) -> list[str]:
    """Many different first steps, each followed by the right answer."""
    if partial == "":
        return [f"a = {value}\n<end_of_step>" for value in range(10)] + [ANSWER_14]
    return [ANSWER_12]


def test_search_is_deterministic_given_the_seed(sandbox):
    def run(seed: int | None, config_seed: int = 0) -> list[dict]:
        config = MCTSConfig(rollouts=3, n_children=3, seed=config_seed)
        search = MCTS(SampledEngine(choice_script), sandbox, config)
        return tree_rows(search.search([Problem("p1", "q", "12")], seed=seed), round_=1)

    first = run(seed=1)
    assert run(seed=1) == first
    assert run(seed=None, config_seed=1) == first  # no seed given: mcts.seed is used
    # Another seed samples other first steps (11 choices, 3 samples): other node ids.
    assert {r["node_id"] for r in run(seed=2)} != {r["node_id"] for r in first}


# --------------------------------------------------------------------------- bad input


def test_negative_per_problem_rollouts_is_an_error(sandbox):
    search = MCTS(ScriptedEngine(lambda partial: [ANSWER_12]), sandbox, MCTSConfig())
    with pytest.raises(ValueError, match="problem p1: rollouts must not be negative, got -1"):
        search.search([Problem("p1", "q", "12", rollouts=-1)])


def test_engine_that_loses_prompts_is_an_error(sandbox):
    class LosingEngine(ScriptedEngine):
        def generate(self, prompts, n=1, **options):
            return super().generate(prompts, n, **options)[:-1]

    search = MCTS(LosingEngine(lambda partial: [ANSWER_12]), sandbox, MCTSConfig())
    with pytest.raises(ValueError, match="completions for 0 prompts, expected 1"):
        search.search([Problem("p1", "q", "12")])


@pytest.mark.parametrize("score", [1.5, float("nan")])
def test_ppm_score_outside_its_range_is_an_error(sandbox, score):
    search = MCTS(
        ScriptedEngine(two_branch_script), sandbox, MCTSConfig(), scorer=FixedScorer(score)
    )
    with pytest.raises(ValueError, match="outside \\[-1, 1\\]"):
        search.search([Problem("p1", "q", "12")])


# --------------------------------------------------------------------------- backup check


def test_backup_check_keeps_rounds_apart(sandbox):
    # The same problem searched in two rounds gives the same node ids (root id and step texts
    # repeat) with different statistics; a table of both rounds is still consistent.
    problem = Problem("p1", "What is 6 * 2?", "12")
    plain = MCTS(ScriptedEngine(two_branch_script), sandbox, MCTSConfig(rollouts=5, n_children=3))
    scored = MCTS(
        ScriptedEngine(two_branch_script), sandbox, MCTSConfig(rollouts=5, n_children=3),
        scorer=FixedScorer(0.25),
    )  # fmt: skip
    rows = tree_rows(plain.search([problem]), round_=1) + tree_rows(
        scored.search([problem]), round_=2
    )
    assert rows[0]["node_id"] == rows[len(rows) // 2]["node_id"]
    assert backup_violations(rows) == []


def test_backup_check_reports_q_and_missing_parents(sandbox):
    search = MCTS(ScriptedEngine(two_branch_script), sandbox, MCTSConfig(rollouts=5, n_children=3))
    rows = tree_rows(search.search([Problem("p1", "What is 6 * 2?", "12")]), round_=1)
    rows[0]["q"] = 0.5  # root: W / N = -1 / 3
    (broken,) = backup_violations(rows)
    assert broken["check"].startswith("q = value_sum / visits") and broken["q"] == 0.5
    # Without the root, the answers below A (12), B (14) and C (5) each stop at a missing
    # parent: the three children of the root are reported; the remaining nodes' own counts
    # still follow from their subtrees, so nothing else is.
    orphaned = backup_violations(rows[1:])
    assert len(orphaned) == 3
    assert all(row["check"].startswith("parent_id names a node") for row in orphaned)
    assert all(row["parent_id"] == rows[0]["node_id"] for row in orphaned)


def test_backup_check_accepts_evaluation_trees_that_back_up_ppm_scores(sandbox):
    # terminal_reward="ppm": an answer backs up its PPM score instead of +1 / -1 (the rule of
    # the nodes check in pipeline.rules.checks.rules).
    search = MCTS(
        ScriptedEngine(two_branch_script), sandbox, MCTSConfig(rollouts=5, n_children=3),
        scorer=FixedScorer(0.25), terminal_reward="ppm",
    )  # fmt: skip
    (tree,) = search.search([Problem("p1", "What is 6 * 2?", "12")])
    # Root: three answers back up 0.25 each.
    assert (tree.root.visits, tree.root.value_sum) == (3, 0.75)
    assert backup_violations(tree_rows([tree], round_=0)) == []


def test_batched_trees_match_trees_searched_alone(sandbox):
    # A batch advances all trees together; each keeps its own rollout budget, truth and
    # statistics. p2 (truth 14, one rollout) stops after rollout 1 of the hand-worked search
    # above: root (1, -1), A exhausted, B still open and unvisited.
    config = MCTSConfig(rollouts=2, n_children=2, max_depth=3, errors_threshold=2)
    problems = [
        Problem("p1", "What is 6 * 2?", "12"),
        Problem("p2", "What is 7 * 2?", "14", rollouts=1),
    ]

    def rows(batch):
        return tree_rows(
            MCTS(ScriptedEngine(error_then_answer_script), sandbox, config).search(batch), 1
        )

    together = rows(problems)
    assert together == rows(problems[:1]) + rows(problems[1:])
    p2 = {LABELS[row["step_text"]]: row for row in together if row["problem_id"] == "p2"}
    assert sorted(p2) == ["A", "A1", "B", "root"]
    assert (p2["root"]["visits"], p2["root"]["value_sum"], p2["root"]["is_terminal"]) == (
        1,
        -1.0,
        False,
    )
    assert (p2["B"]["visits"], p2["B"]["is_terminal"], p2["A"]["is_terminal"]) == (0, False, True)
