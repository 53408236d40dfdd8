"""Evaluation methods on scripted policies, with the real sandbox and grader."""

from __future__ import annotations

import pytest

from pipeline.evaluate import EvalConfig, evaluate, vote
from pipeline.mcts import MCTSConfig, Problem
from pipeline.sandbox import Sandbox
from pipeline.tree import add_child, make_root
from tests.fakes import ScriptedEngine

RIGHT = "<answer>The answer is \\boxed{12}<end_of_answer>"
WRONG = "<answer>The answer is \\boxed{13}<end_of_answer>"


class TextScorer:
    """A PPM stand-in that prefers texts containing a marker string."""

    def __init__(self, preferred: str) -> None:
        self.preferred = preferred

    def score(self, texts):
        return [0.9 if self.preferred in text else -0.9 for text in texts]


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, timeout_s=3.0) as box:
        yield box


def test_every_method_is_scored_against_the_truth(sandbox):
    # Every chain reads the script's first sample (boxed 12), so a problem whose truth is 12 is
    # solved by every method and one whose truth is 13 by none: each accuracy is 1/2.
    engine = ScriptedEngine(lambda partial: [RIGHT, WRONG])
    problems = [Problem("p1", "What is 6 * 2?", "12"), Problem("p2", "What is 6 + 7?", "13")]
    config = EvalConfig(samples=2, mcts_rollouts=1, mcts_children=2, vote_top=3)
    metrics = evaluate(engine, sandbox, problems, MCTSConfig(), config, scorer=TextScorer("{13}"))
    # The PPM prefers 13, but an expansion keeps only its first answer (DESIGN.md 2), so the
    # PPM-guided search and best-of-N only ever see 12.
    assert metrics["accuracy"] == {
        "greedy": 0.5, "pass_at_2": 0.5, "sampled_pass_at_1": 0.5, "ppm_best_of_2": 0.5, "ppm_mcts": 0.5,
    }  # fmt: skip
    assert metrics["problems"] == 2 and metrics["greedy_outcomes"] == {"correct": 1, "wrong": 1}


def test_best_of_n_follows_the_ppm(sandbox):
    calls = {"n": 0}

    def alternate(partial):
        calls["n"] += 1
        return [RIGHT if calls["n"] % 2 else WRONG]

    engine = ScriptedEngine(alternate)
    problems = [Problem("p1", "What is 6 * 2?", "12")]
    config = EvalConfig(samples=2, mcts_rollouts=0)
    right = evaluate(engine, sandbox, problems, MCTSConfig(), config, scorer=TextScorer("{12}"))
    wrong = evaluate(engine, sandbox, problems, MCTSConfig(), config, scorer=TextScorer("{13}"))
    assert right["accuracy"]["ppm_best_of_2"] == 1.0
    assert wrong["accuracy"]["ppm_best_of_2"] == 0.0


def test_vote_takes_the_majority_of_the_top_scored_answers():
    root = make_root("p")
    leaves = []
    for answer, score in (("5", 0.9), ("7", 0.8), ("7.0", 0.7), ("5", -0.5), ("5", -0.6)):
        leaf = add_child(root, f"\\boxed{{{answer}}} {len(leaves)}")
        leaf.final_answer, leaf.ppm_score = answer, score
        leaves.append(leaf)
    assert vote(leaves, top=3) == "7"  # 7 and 7.0 agree among the three best
    assert vote(leaves, top=1) == "5"
    assert vote(leaves, top=5) == "5"  # three fives outvote two sevens
