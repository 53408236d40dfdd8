"""The search of DESIGN.md section 2 on hand-made scripts, with the real sandbox."""

from __future__ import annotations

import pytest

from pipeline.mcts import MCTS, MCTSConfig, Problem, tree_rows
from pipeline.sandbox import Sandbox
from pipeline.tree import Node, add_child, backup_violations, make_root, select_child
from tests.fakes import FixedScorer, ScriptedEngine

ANSWER_12 = "<answer>The answer is \\boxed{12}<end_of_answer>"
ANSWER_14 = "<answer>The answer is \\boxed{14}<end_of_answer>"
ANSWER_5 = "<answer>The answer is \\boxed{5}<end_of_answer>"


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, timeout_s=5.0, memory_mb=512) as box:
        yield box


def two_branch_script(partial: str) -> list[str]:
    """Root: A (a = 6), B (a = 7), and a wrong answer C. A leads to 12 (right), B to 14."""
    if partial == "":
        return ["a = 6\n<end_of_step>", "a = 7\n<end_of_step>", ANSWER_5]
    if partial.endswith("<end_of_output>\n"):
        return [ANSWER_12 if "<output>12" in partial else ANSWER_14]
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
    root, a, b, c = nodes[""], nodes["a = 6"], nodes["a = 7"], nodes["<answer>The answer is \\boxed{5}<end_of_answer>"]
    # Rollout 1: root expands to A, B, C; C is graded wrong at once (root -1); A and B tie at
    # UCT 0, so A is followed to its answer 12 (+1 up to the root).
    # Rollout 2: only B is left; its answer 14 is wrong (-1). Then every node is terminal.
    assert (root.visits, root.value_sum) == (3, -1.0)
    assert (a.visits, a.value_sum, a.is_terminal, a.terminal_kind) == (1, 1.0, True, None)
    assert (b.visits, b.value_sum) == (1, -1.0)
    assert (c.visits, c.value_sum, c.correct, c.terminal_kind) == (1, -1.0, False, "answer")
    assert root.is_terminal and tree.done
    assert [child.child_index for child in root.children] == [0, 1, 2]
    a_code = a.children[0]
    assert a_code.step_text == "print(a * 2)\n<end_of_code>\n<output>12<end_of_output>\n"
    assert a_code.children[0].correct is True and a_code.children[0].final_answer == "12"
    assert backup_violations(tree_rows([tree], round_=1)) == []
    # Five rollouts were allowed but the tree was exhausted after two.
    assert tree.rollouts_left == 3


def test_trees_of_a_batch_share_generation_calls(sandbox):
    engine = ScriptedEngine(two_branch_script)
    search = MCTS(engine, sandbox, MCTSConfig(rollouts=2, n_children=3))
    problems = [Problem(f"p{i}", f"Question {i}: what is 6 * 2?", "12") for i in range(4)]
    trees = search.search(problems)
    # One tree needs 5 expansions (root, A, A's code step, B, B's code step); four trees in
    # lock-step need 5 calls of 4 prompts.
    assert [len(call) for call in engine.calls] == [4] * 5
    assert all(tree.root.visits == 3 for tree in trees)


def test_duplicates_dropped_and_only_first_answer_kept(sandbox):
    def script(partial):
        if partial == "":
            return ["x = 1\n<end_of_step>", "x = 1\n<end_of_step>", ANSWER_14, ANSWER_12, "y = 2\n<end_of_step>"]
        return [ANSWER_12]

    search = MCTS(ScriptedEngine(script), sandbox, MCTSConfig(rollouts=1, n_children=5))
    (tree,) = search.search([Problem("p", "q", "12")])
    texts = [child.step_text for child in tree.root.children]
    assert texts == ["x = 1\n<end_of_step>\n", ANSWER_14, "y = 2\n<end_of_step>\n"]
    assert tree.root.children[1].correct is False


def test_consecutive_errors_end_the_branch(sandbox):
    def script(partial):
        return ["y = x + 1\n<end_of_step>"] if partial else ["x = 1 / 0\n<end_of_step>"]

    search = MCTS(ScriptedEngine(script), sandbox, MCTSConfig(rollouts=3, n_children=2, errors_threshold=2))
    (tree,) = search.search([Problem("p", "q", "1")])
    first = tree.root.children[0]
    second = first.children[0]
    # The first error does not end the branch; its node only turns terminal once its one
    # child is terminal, and it keeps terminal_kind null (DESIGN.md section 3).
    assert first.is_error and first.terminal_kind is None and first.consecutive_errors == 1
    assert first.observation.startswith("ZeroDivisionError")
    assert second.terminal_kind == "too_many_errors" and second.consecutive_errors == 2
    # An invalid terminal is penalised on itself only.
    assert (second.visits, second.value_sum) == (1, -1.0)
    assert (first.visits, tree.root.visits) == (0, 0)
    assert tree.root.is_terminal


def test_nodes_deeper_than_max_depth_are_terminal_and_not_run(sandbox):
    runs = []

    class CountingSandbox:
        def run_many(self, codes):
            runs.extend(codes)
            return sandbox.run_many(codes)

    def script(partial):
        return [f"x{partial.count('<end_of_step>')} = 1\n<end_of_step>"]

    search = MCTS(ScriptedEngine(script), CountingSandbox(), MCTSConfig(rollouts=1, n_children=1, max_depth=2))
    (tree,) = search.search([Problem("p", "q", "1")])
    deepest = tree.root.children[0].children[0].children[0]
    assert deepest.depth == 3 and deepest.terminal_kind == "too_deep"
    assert (deepest.visits, deepest.value_sum) == (1, -1.0)
    assert len(runs) == 2  # depths 1 and 2 ran; the too-deep step did not


def test_unparsable_step_is_an_invalid_terminal(sandbox):
    def script(partial):
        return ["this step never stops"]

    search = MCTS(ScriptedEngine(script), sandbox, MCTSConfig(rollouts=1, n_children=1))
    (tree,) = search.search([Problem("p", "q", "1")])
    (child,) = tree.root.children
    assert child.terminal_kind == "unparsable" and child.value_sum == -1.0


def test_ppm_augmented_round_initialises_new_children(sandbox):
    scorer = FixedScorer(0.25)
    search = MCTS(ScriptedEngine(two_branch_script), sandbox, MCTSConfig(rollouts=5, n_children=3), scorer=scorer)
    (tree,) = search.search([Problem("p1", "What is 6 * 2?", "12")])
    nodes = by_text(tree.root)
    a, c = nodes["a = 6"], nodes["<answer>The answer is \\boxed{5}<end_of_answer>"]
    # A: update(0.25) at creation, then the correct answer below it (+1).
    assert (a.ppm_score, a.visits, a.value_sum) == (0.25, 2, 1.25)
    assert c.ppm_score is None  # terminals are graded, not scored
    # The PPM saw prompt + partial solution, in the SFT prompt format.
    assert scorer.texts and all(text.startswith("<|user|>:\nWhat is 6 * 2?") for text in scorer.texts)
    assert backup_violations(tree_rows([tree], round_=3)) == []


def test_backup_check_catches_a_corrupted_tree(sandbox):
    search = MCTS(ScriptedEngine(two_branch_script), sandbox, MCTSConfig(rollouts=5, n_children=3))
    (tree,) = search.search([Problem("p1", "What is 6 * 2?", "12")])
    rows = tree_rows([tree], round_=1)
    rows[0]["visits"] += 1
    problems = backup_violations(rows)
    assert len(problems) == 1 and "visits=4" in problems[0]
