"""Evaluation methods on scripted policies, with the real sandbox and grader."""

from __future__ import annotations

import pytest

from pipeline.config import MCTSConfig, ParamsError
from pipeline.evaluation.evaluate import (
    Chain,
    EvalConfig,
    best_of_n,
    evaluate,
    majority,
    method_summary,
    vote,
    voted_mcts_runs,
    wilson_interval,
)  # fmt: skip
from pipeline.execution.sandbox import Sandbox
from pipeline.search.mcts import Problem
from pipeline.search.tree import add_child, make_root
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
    # The PPM prefers 13, but an expansion keeps only its first answer (docs/algorithm.md), so the
    # PPM-guided search and best-of-N only ever see 12.
    assert metrics["accuracy"] == {
        "greedy": 0.5, "pass_at_2": 0.5, "maj_at_2": 0.5, "sampled_pass_at_1": 0.5,
        "ppm_best_of_2": 0.5, "ppm_mcts": 0.5,
    }  # fmt: skip
    # One of two problems right: the Wilson interval of 1/2 is [0.0945, 0.9055].
    assert metrics["ci95"]["greedy"] == {"low": 0.0945, "high": 0.9055}
    assert metrics["correct"]["ppm_mcts"] == 1
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


class RecordingScorer(TextScorer):
    """A TextScorer that records the texts of each call."""

    def __init__(self, preferred: str) -> None:
        super().__init__(preferred)
        self.calls: list[list[str]] = []

    def score(self, texts):
        self.calls.append(list(texts))
        return super().score(texts)


def answered_chain(problem: Problem, step: str, correct: bool) -> Chain:
    leaf = add_child(make_root(problem.problem_id), step)
    leaf.terminal_kind, leaf.correct = "answer", correct
    return Chain(problem, leaf)


def test_best_of_n_scores_every_problem_in_one_call_and_picks_per_problem():
    first, second, third = (Problem(f"p{i}", f"What is {i} + {i}?", str(2 * i)) for i in (1, 2, 3))
    chains = [
        [answered_chain(first, "wrong one", False), answered_chain(first, "right PICK", True)],
        [Chain(second, None), Chain(second, None)],  # no answer: nothing to score, not solved
        [answered_chain(third, "wrong PICK", False), answered_chain(third, "right one", True)],
    ]
    scorer = RecordingScorer("PICK")
    assert best_of_n(chains, scorer, "sft") == [True, False, False]
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 4


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


def two_code_steps_then_answers(partial: str) -> list[str]:
    """Root -> A (x = 12), B (x = 13); each then answers its own x."""
    if partial == "":
        return ["x = 12\n<end_of_step>", "x = 13\n<end_of_step>"]
    return [RIGHT if "x = 12" in partial else WRONG]


@pytest.mark.parametrize(("preferred", "correct"), [("{12}", True), ("{13}", False)])
def test_voted_runs_take_each_searchs_best_scored_answer(sandbox, preferred, correct):
    # Each of the 3 runs searches 2 rollouts: A's answer 12, then B's answer 13. The PPM's
    # favourite is each run's answer, so all three runs vote for it.
    config = EvalConfig(mcts_rollouts=2, mcts_children=2, mcts_runs=3)
    problems = [Problem("p1", "What is 6 * 2?", "12")]
    engine = ScriptedEngine(two_code_steps_then_answers)
    result = voted_mcts_runs(engine, sandbox, problems, TextScorer(preferred), MCTSConfig(), config)
    assert result == [correct]
    # The three runs are independent trees searched in one batch: 3 prompts per call.
    assert {len(call) for call in engine.calls} == {3}


def test_voted_runs_follow_the_majority_of_runs(sandbox):
    # One rollout, one child per run: run answers alternate 12, 13, 12 over the batch, so two
    # of three runs say 12 and the vote is right; shifted by one (13, 12, 13) it is wrong.
    def answers_in_turn(start: int):
        count = {"n": start}

        def script(partial):
            count["n"] += 1
            return [RIGHT if count["n"] % 2 else WRONG]

        return script

    config = EvalConfig(mcts_rollouts=1, mcts_children=1, mcts_runs=3)
    problems = [Problem("p1", "What is 6 * 2?", "12")]
    scorer = TextScorer("{12}")
    right = voted_mcts_runs(
        ScriptedEngine(answers_in_turn(0)), sandbox, problems, scorer, MCTSConfig(), config
    )
    wrong = voted_mcts_runs(
        ScriptedEngine(answers_in_turn(1)), sandbox, problems, scorer, MCTSConfig(), config
    )
    assert (right, wrong) == ([True], [False])


def test_majority_groups_equivalent_answers_and_breaks_ties_by_first_seen():
    assert majority(["7", "5", "7.0", "5"]) == "7"  # 7 and 7.0 agree: 2 against 2, 7 first
    assert majority(["5", "1/2", "0.5"]) == "1/2"
    assert majority([]) is None


def test_evaluation_reports_the_voted_runs_beside_the_other_methods(sandbox):
    engine = ScriptedEngine(two_code_steps_then_answers)
    problems = [Problem("p1", "What is 6 * 2?", "12")]
    config = EvalConfig(samples=2, mcts_rollouts=2, mcts_children=2, mcts_runs=2)
    metrics = evaluate(engine, sandbox, problems, MCTSConfig(), config, scorer=TextScorer("{12}"))
    assert metrics["accuracy"]["ppm_mcts_vote_of_2"] == 1.0
    assert {"greedy", "pass_at_2", "ppm_best_of_2", "ppm_mcts"} <= set(metrics["accuracy"])


def test_no_samples_leaves_greedy_and_the_ppm_guided_search(sandbox):
    # `samples: 0` is the cheap per-round evaluation: no pass@N, maj@N or best-of-N at all,
    # rather than scores of 0 that a plot would draw as real.
    engine = ScriptedEngine(lambda partial: [RIGHT, WRONG])
    problems = [Problem("p1", "What is 6 * 2?", "12")]
    config = EvalConfig(samples=0, mcts_rollouts=1, mcts_children=2)
    metrics = evaluate(engine, sandbox, problems, MCTSConfig(), config, scorer=TextScorer("{12}"))
    assert metrics["accuracy"] == {"greedy": 1.0, "ppm_mcts": 1.0}
    assert metrics["sampled_outcomes"] == {}


def test_negative_evaluation_budgets_are_errors():
    with pytest.raises(ValueError, match="evaluate.mcts_runs must be >= 0, got -1"):
        EvalConfig(mcts_runs=-1)
    with pytest.raises(ValueError, match="evaluate.samples must be >= 0, got -2"):
        EvalConfig(samples=-2)


def test_wilson_interval_matches_worked_values():
    # 5 of 10: centre 0.5, half-width 1.96 * sqrt(0.025 + 0.0096) / 1.384 = 0.2634.
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    # 0 of 10 still has an upper bound (3.84 / 13.84 = 0.2775), unlike the normal interval.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(200, 200)[1] == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)


def test_majority_of_samples_is_its_own_method(sandbox):
    # Three samples per problem in turn: 13, 12, 12. pass@3 and maj@3 are right; greedy (the
    # first sample of its own call) says 13.
    count = {"n": 0}

    def in_turn(partial):
        count["n"] += 1
        return [WRONG if count["n"] % 3 == 1 else RIGHT]

    config = EvalConfig(samples=3, mcts_rollouts=0)
    metrics = evaluate(
        ScriptedEngine(in_turn), sandbox, [Problem("p1", "6 * 2?", "12")], MCTSConfig(), config
    )
    assert (metrics["accuracy"]["greedy"], metrics["accuracy"]["maj_at_3"]) == (0.0, 1.0)


def test_summary_breaks_every_method_down_by_level():
    levels = {"p0": "1", "p1": "1", "p2": "2", "p3": "2"}
    summary = method_summary({"greedy": [True, True, False, True]}, list(levels), levels)
    assert summary["accuracy"] == {"greedy": 0.75} and summary["correct"] == {"greedy": 3}
    assert summary["by_level"]["1"]["greedy"]["accuracy"] == 1.0
    assert summary["by_level"]["2"]["greedy"] | {} == {
        "accuracy": 0.5, "ci95_low": 0.0945, "ci95_high": 0.9055, "correct": 1, "problems": 2,
    }  # fmt: skip


def test_held_out_problems_take_the_levels_in_turn(tmp_path, monkeypatch):
    import polars as pl

    from pipeline import layout
    from pipeline.evaluation.evaluate import held_out_problems

    # Test problems: three of level 1, one of level 2, two of level 3; a validation problem.
    levels = {"a": 1, "b": 1, "c": 1, "d": 2, "e": 3, "f": 3, "v": 2}
    frame = pl.DataFrame({
        "problem_id": list(levels), "question": list(levels), "answer": ["1"] * 7,
        "split": ["test"] * 6 + ["validation"],
        "meta": [f'{{"level": {level}}}' for level in levels.values()],
    })  # fmt: skip
    frame.write_parquet(tmp_path / "problems.parquet")
    monkeypatch.setattr(layout, "PROBLEMS", tmp_path / "problems.parquet")
    problems, by_level = held_out_problems(EvalConfig(problems=4))
    # First of each level (a, d, e), then the second of each (b, f): a cut at 4 keeps all three.
    assert [p.problem_id for p in problems] == ["a", "d", "e", "b"]
    assert by_level == {"a": "1", "d": "2", "e": "3", "b": "1"}
    validation, _ = held_out_problems(EvalConfig(problems=0, split="validation"))
    assert [p.problem_id for p in validation] == ["v"]


def worker_spec_of(monkeypatch, params: dict, config: EvalConfig, policy, ppm=None):
    """The WorkerSpec run_evaluation builds; it stops before any engine or problem loads."""
    from pipeline.evaluation import sharded

    class Captured(Exception):
        pass

    specs = []

    def capture(kind, spec, ray):
        specs.append(spec)
        raise Captured

    monkeypatch.setattr(sharded, "make_executor", capture)
    with pytest.raises(Captured):
        sharded.run_evaluation(params, config, policy, ppm)
    return specs[0]


@pytest.mark.parametrize(
    ("methods", "loads_ppm"),
    [({"samples": 0, "mcts_rollouts": 0}, False), ({"samples": 2, "mcts_rollouts": 0}, True),
     ({"samples": 0, "mcts_rollouts": 1}, True)],
)  # fmt: skip
def test_the_ppm_is_loaded_only_when_a_method_asks_for_it(
    monkeypatch, tmp_path, methods, loads_ppm
):
    spec = worker_spec_of(
        monkeypatch, {}, EvalConfig(**methods), tmp_path / "policy", tmp_path / "ppm"
    )
    assert (spec.ppm_path is not None) == loads_ppm


@pytest.mark.parametrize(
    ("evaluate_engine", "kind", "options"),
    [({}, "vllm", {"dtype": "float32"}),
     ({"kind": "transformers", "batch_size": 16}, "transformers", {"batch_size": 16})],
)  # fmt: skip
def test_evaluation_runs_its_own_engine_group_when_it_has_one(
    monkeypatch, tmp_path, evaluate_engine, kind, options
):
    params = {"engine": {"kind": "vllm", "dtype": "float32"}}
    spec = worker_spec_of(
        monkeypatch, params, EvalConfig(engine=evaluate_engine), tmp_path / "policy"
    )
    assert (spec.engine_kind, spec.engine_options) == (kind, options)


def test_a_wrong_evaluation_engine_is_an_error_naming_its_key():
    with pytest.raises(ParamsError, match=r"^evaluate\.engine\.kind must be one of"):
        EvalConfig(engine={"kind": "llamacpp"})
    with pytest.raises(ParamsError, match=r"^evaluate\.engine\.kv_cache_gib must be > 0"):
        EvalConfig(engine={"kind": "vllm", "kv_cache_gib": 0})


def test_problems_of_a_file_that_are_training_seeds_too_are_flagged(tmp_path, monkeypatch, capsys):
    import contextlib
    import json

    import polars as pl

    from pipeline import layout
    from pipeline.evaluation import sharded
    from pipeline.evaluation.evaluate import held_out_problems, seen_in_training
    from pipeline.ids import problem_id

    trained, tested = "What is 2 + 3?", "What is 4 + 4?"
    seeds = pl.DataFrame({
        "problem_id": [problem_id(trained), problem_id(tested)], "question": [trained, tested],
        "answer": ["5", "8"], "split": ["train", "test"], "meta": ["{}", "{}"],
    })  # fmt: skip
    seeds.write_parquet(tmp_path / "problems.parquet")
    monkeypatch.setattr(layout, "PROBLEMS", tmp_path / "problems.parquet")
    rows = [{"question": "what is  2 + 3?", "answer": "5"},  # the same once normalised
            {"question": tested, "answer": "8"}, {"question": "What is 9 - 1?", "answer": "8"}]  # fmt: skip
    file = tmp_path / "held_out.jsonl"
    file.write_text("".join(json.dumps(row) + "\n" for row in rows))

    config = EvalConfig(source=str(file), problems=0, samples=0, mcts_rollouts=0)
    problems, _ = held_out_problems(config)
    assert seen_in_training(problems, config.source) == [problem_id(trained)]
    own_split, _ = held_out_problems(EvalConfig(problems=0))
    assert seen_in_training(own_split, "seeds") == []

    monkeypatch.setattr(sharded, "make_executor", lambda *args: contextlib.nullcontext())
    monkeypatch.setattr(sharded, "evaluate_sharded", lambda *args: {"problems": 3})
    metrics = sharded.run_evaluation({}, config, tmp_path / "policy")
    assert metrics["seen_in_training"] == [problem_id(trained)]
    assert "warning: 1 of the 3 problems of" in capsys.readouterr().err
