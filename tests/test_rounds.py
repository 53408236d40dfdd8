"""The round schedule (pipeline.search.rounds): each round's search settings and problems."""

from __future__ import annotations

from dataclasses import replace

import polars as pl
import pytest

from pipeline.config import CurriculumConfig, ParamsError
from pipeline.evaluation.sharded import round_eval_config
from pipeline.search.mcts import Problem
from pipeline.search.rounds import (
    bootstrap_problem_ids,
    mcts_with_overrides,
    round_config,
    search_config,
    training_problems,
)  # fmt: skip
from stages.rollout import problem_status

PARAMS = {
    "mcts": {"n_children": 12, "temperature": 0.7, "errors_threshold": 2, "max_depth": 16},
    "rounds": {
        "r1": {"policy": "base", "rollouts": 8, "prompt_style": "few_shot"},
        "r3": {
            "policy": "r2",
            "ppm": "r2",
            "rollouts": 16,
            "mcts": {"temperature": 1.0, "errors_threshold": 1},
        },
    },  # fmt: skip
}


def test_a_round_overrides_only_the_mcts_keys_it_names():
    first, third = search_config(PARAMS, "r1"), search_config(PARAMS, "r3")
    assert (first.temperature, first.errors_threshold) == (0.7, 2)
    assert (third.temperature, third.errors_threshold) == (1.0, 1)
    # Keys the round leaves alone come from `mcts`; rollouts and the prompt from the round.
    assert (third.n_children, third.max_depth) == (12, 16)
    assert (first.rollouts, first.prompt_style, third.rollouts, third.prompt_style) == (
        8, "few_shot", 16, "sft",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"temprature": 1.0}, "rounds.r3.mcts: unknown key(s) temprature"),
        ({"rollouts": 4}, "rounds.r3.mcts: unknown key(s) rollouts"),  # the round's own key
        ({"max_depth": 0}, "rounds.r3.mcts.max_depth must be >= 1, got 0"),  # named where it is
    ],
)
def test_a_bad_override_is_a_one_line_error_naming_it(override, message):
    params = {**PARAMS, "rounds": {"r3": {"mcts": override}}}
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        search_config(params, "r3")


def test_a_missing_round_or_a_non_mapping_override_is_an_error():
    with pytest.raises(ParamsError, match="no rounds.r9"):
        round_config(PARAMS, "r9")
    with pytest.raises(ParamsError, match="rounds.r1.mcts must be a mapping"):
        search_config({"rounds": {"r1": {"mcts": [1]}}}, "r1")


def test_a_round_overrides_the_evaluate_keys_it_names():
    evaluate = {"problems": 200, "samples": 0, "mcts_rollouts": 0,
                "rounds": {"r4": {"samples": 4, "mcts_rollouts": 2}}}  # fmt: skip
    params = {"evaluate": evaluate, "rounds": {"r1": {}, "r4": {}}}
    first, last = round_eval_config(params, "r1"), round_eval_config(params, "r4")
    assert (first.problems, first.samples, first.mcts_rollouts) == (200, 0, 0)
    assert (last.problems, last.samples, last.mcts_rollouts) == (200, 4, 2)
    evaluate["rounds"]["r4"] = {"sampels": 4}
    with pytest.raises(ParamsError, match=r"evaluate.rounds.r4'. unknown key\(s\) sampels"):
        round_eval_config(params, "r4")
    evaluate["rounds"]["r4"] = {"samples": -1}
    with pytest.raises(ParamsError, match="evaluate.rounds.r4.samples must be >= 0, got -1"):
        round_eval_config(params, "r4")


def test_unsolved_problems_get_their_own_budget():
    problems = pl.DataFrame({
        "problem_id": ["a", "b", "c", "d"], "question": ["qa", "qb", "qc", "qd"],
        "answer": ["1", "2", "3", "4"], "split": ["train", "train", "train", "test"],
    })  # fmt: skip
    status = pl.DataFrame({"problem_id": ["a", "b", "c"], "solved_ever": [True, False, False]})
    config = round_config({"rounds": {"r4": {"rollouts": 2, "unsolved_rollouts": 6}}}, "r4")
    budgets = {p.problem_id: p.rollouts for p in training_problems(problems, config, status)}
    assert budgets == {"a": 2, "b": 6, "c": 6}  # d is a test problem


def test_evaluation_overrides_the_mcts_group_the_same_way():
    search = mcts_with_overrides(PARAMS, {"temperature": 1.0, "n_children": 32}, "evaluate.mcts")
    assert (search.temperature, search.n_children, search.max_depth) == (1.0, 32, 16)
    with pytest.raises(ParamsError, match="evaluate.mcts: unknown key"):
        mcts_with_overrides(PARAMS, {"depth": 3}, "evaluate.mcts")


def curriculum_frame() -> pl.DataFrame:
    levels = [1, 2, 3, 1, 2, 3, 1]
    return pl.DataFrame({
        "problem_id": [f"p{i}" for i in range(7)],
        "question": [f"q{i}" for i in range(7)], "answer": ["1"] * 7,
        "split": ["train"] * 6 + ["test"],
        "solution": ["s", "s", "s", None, "s", "s", "s"],
        "meta": [f'{{"level": {level}}}' for level in levels],
    })  # fmt: skip


def test_bootstrap_set_is_train_problems_with_solutions_at_the_bootstrap_levels():
    frame = curriculum_frame()
    # Levels 1 and 2 in train with a solution: p0 (1), p1 (2), p4 (2); p3 has no solution, p6
    # is a test problem.
    assert bootstrap_problem_ids(frame, CurriculumConfig(bootstrap_levels=[1, 2])) == [
        "p0",
        "p1",
        "p4",
    ]
    assert bootstrap_problem_ids(
        frame, CurriculumConfig(bootstrap_levels=[1, 2], bootstrap_problems=2)
    ) == ["p0", "p1"]
    assert len(bootstrap_problem_ids(frame, CurriculumConfig())) == 5


def test_a_cap_takes_the_levels_in_turn():
    # By problem_id the first three are all level 3; a cap of 3 takes one problem of each level.
    levels = [3, 3, 3, 1, 2]
    frame = pl.DataFrame({
        "problem_id": [f"p{i}" for i in range(5)], "question": ["q"] * 5, "answer": ["1"] * 5,
        "split": ["train"] * 5, "solution": [None] * 5,
        "meta": [f'{{"level": {level}}}' for level in levels],
    })  # fmt: skip
    config = round_config({"rounds": {"r1": {"rollouts": 2, "problems": 3}}}, "r1")
    assert [p.problem_id for p in training_problems(frame, config, None)] == ["p0", "p3", "p4"]


def test_rounds_can_leave_the_bootstrap_set_out():
    frame = curriculum_frame()
    curriculum = CurriculumConfig(bootstrap_levels=[1, 2], rounds_exclude_bootstrap=True)
    config = round_config({"rounds": {"r1": {"rollouts": 2, "problems": 2}}}, "r1")
    searched = [p.problem_id for p in training_problems(frame, config, None, curriculum)]
    # The cap of 2 applies after the bootstrap problems (p0, p1, p4) are left out.
    assert searched == ["p2", "p3"]
    # By default the rounds search them too.
    kept = replace(curriculum, rounds_exclude_bootstrap=False)
    assert [p.problem_id for p in training_problems(frame, config, None, kept)] == ["p0", "p1"]


def test_skip_solved_fills_the_cap_with_problems_no_round_solved():
    levels = [1, 1, 1, 2, 2, 2]
    frame = pl.DataFrame({
        "problem_id": [f"p{i}" for i in range(6)], "question": ["q"] * 6, "answer": ["1"] * 6,
        "split": ["train"] * 6, "solution": [None] * 6,
        "meta": [f'{{"level": {level}}}' for level in levels],
    })  # fmt: skip
    status = pl.DataFrame({"problem_id": ["p0", "p3"], "solved_ever": [True, False]})
    entry = {"rollouts": 2, "unsolved_rollouts": 5, "problems": 2}
    again = round_config({"rounds": {"r2": entry}}, "r2")
    assert [p.problem_id for p in training_problems(frame, again, status)] == ["p0", "p3"]
    skipping = round_config({"rounds": {"r2": entry | {"skip_solved": True}}}, "r2")
    searched = training_problems(frame, skipping, status)
    # p0 is solved: the next level-1 problem takes its place; p3 keeps its extra rollouts.
    assert [(p.problem_id, p.rollouts) for p in searched] == [("p1", 2), ("p3", 5)]


def test_status_keeps_solved_problems_a_round_did_not_search():
    previous = pl.DataFrame({
        "problem_id": ["a", "b", "c"], "solved": [True, False, False],
        "solved_ever": [True, False, False], "solved_first": [True, False, False],
        "rounds_attempted": [1, 1, 1],
    })  # fmt: skip
    nodes = pl.DataFrame({"problem_id": ["b", "d"], "correct": [True, None]})
    searched = [Problem(pid, "q", "1") for pid in ("b", "d")]
    status = problem_status(nodes, searched, previous).sort("problem_id")
    # a: solved in an earlier round and not searched now, so still known as solved; c: never
    # solved and left out by this round, so it drops out, as before.
    assert status.to_dicts() == [
        {"problem_id": "a", "solved": False, "solved_ever": True, "solved_first": False,
         "rounds_attempted": 1},
        {"problem_id": "b", "solved": True, "solved_ever": True, "solved_first": True,
         "rounds_attempted": 2},
        {"problem_id": "d", "solved": False, "solved_ever": False, "solved_first": False,
         "rounds_attempted": 1},
    ]  # fmt: skip
