"""Rounds compared problem by problem: the exact McNemar test and the `rstar results` table."""

from __future__ import annotations

import json
from math import comb

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.evaluation.paired import mcnemar_p_value, paired_change
from pipeline.evaluation.results import paired_table, read_evaluations


def brute_force_p(gained: int, lost: int) -> float:
    """Two-sided: the probability, under fair coin flips, of a split at least this uneven."""
    n = gained + lost
    extreme = abs(gained - lost)
    return sum(comb(n, k) for k in range(n + 1) if abs(2 * k - n) >= extreme) / 2**n


@pytest.mark.parametrize(("gained", "lost"), [(0, 0), (5, 0), (1, 4), (3, 3), (21, 3), (9, 2)])
def test_the_p_value_is_the_exact_binomial_tail(gained, lost):
    assert mcnemar_p_value(gained, lost) == pytest.approx(brute_force_p(gained, lost))
    assert mcnemar_p_value(gained, lost) == mcnemar_p_value(lost, gained)


def test_negative_counts_are_an_error():
    with pytest.raises(ValueError, match="counts must be >= 0"):
        mcnemar_p_value(-1, 2)


def evaluation(solved: dict[str, bool]) -> dict:
    return {
        "accuracy": {"greedy": sum(solved.values()) / len(solved)},
        "by_problem": {pid: {"greedy": right} for pid, right in solved.items()},
    }


def test_only_problems_both_evaluated_count():
    before = evaluation({"a": True, "b": False, "c": False, "d": True, "x": False})
    after = evaluation({"a": True, "b": True, "c": True, "d": False, "y": True})
    assert paired_change(before, after) == {
        "problems": 4, "gained": 2, "lost": 1, "p_value": 1.0,
    }  # fmt: skip
    assert paired_change({"accuracy": {"greedy": 0.5}}, after) is None  # no per-problem results


def test_the_table_compares_neighbours_then_the_first_rounds_with_the_last():
    rounds = {
        0: evaluation({"a": False, "b": False, "c": False}),
        1: evaluation({"a": True, "b": False, "c": False}),
        2: {"accuracy": {"greedy": 0.5}},  # written before per-problem results: no rows with it
        3: evaluation({"a": True, "b": True, "c": True}),
    }
    lines = paired_table(rounds).splitlines()
    assert lines[0] == "| same problems: from -> to | problems | net | gained | lost | McNemar p |"
    assert lines[2:] == [
        "| r0 greedy -> r1 greedy | 3 | +1 | 1 | 0 | 1.0000 |",
        "| r1 greedy -> r3 greedy | 3 | +2 | 2 | 0 | 0.5000 |",
        "| r0 greedy -> r3 greedy | 3 | +3 | 3 | 0 | 0.2500 |",
    ]
    assert paired_table({1: {"accuracy": {}}}) == ""
    many = {pid: False for pid in map(str, range(25))}
    certain = paired_table({1: evaluation(many), 2: evaluation(dict.fromkeys(many, True))})
    assert certain.splitlines()[2] == "| r1 greedy -> r2 greedy | 25 | +25 | 25 | 0 | < 0.0001 |"


def test_the_last_round_compares_each_ppm_method_with_greedy_and_majority_vote():
    methods = ("greedy", "maj_at_4", "pass_at_4", "ppm_mcts")
    solved = {
        "a": (False, True, True, True),
        "b": (False, False, True, True),
        "c": (True, True, True, False),
    }
    last = {
        "accuracy": dict.fromkeys(methods, 0.5),
        "by_problem": {pid: dict(zip(methods, row)) for pid, row in solved.items()},
    }
    lines = paired_table({1: evaluation({"a": False, "b": False, "c": False}), 2: last})
    assert lines.splitlines()[2:] == [
        "| r1 greedy -> r2 greedy | 3 | +1 | 1 | 0 | 1.0000 |",
        "| r2 greedy -> r2 ppm_mcts | 3 | +1 | 2 | 1 | 1.0000 |",
        "| r2 maj_at_4 -> r2 ppm_mcts | 3 | +0 | 1 | 1 | 1.0000 |",
    ]


def test_rstar_results_prints_the_paired_table_from_the_files(tmp_path):
    metrics, evals = tmp_path / "metrics", tmp_path / "eval"
    metrics.mkdir()
    evals.mkdir()
    (metrics / "r1.json").write_text(json.dumps({"round": 1, "accuracy": {"greedy": 1.0}}))
    (evals / "r0.json").write_text(json.dumps(evaluation({"a": False, "b": False})))
    (evals / "r1.json").write_text(json.dumps(evaluation({"a": True, "b": True})))
    assert set(read_evaluations(evals)) == {0, 1}
    (evals / "r0.json").write_text(json.dumps({"round": 0, "problems": 0}))  # not evaluated
    assert set(read_evaluations(evals)) == {1}
    (evals / "r0.json").write_text(json.dumps(evaluation({"a": False, "b": False})))
    arguments = ["results", "--metrics", str(metrics), "--evaluations", str(evals)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "| r0 greedy -> r1 greedy | 2 | +2 | 2 | 0 | 0.5000 |" in result.output
    (evals / "r1.json").write_text("{broken")
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2 and "r1.json: not a JSON file" in result.output
