"""The seed generator: exact answers, runnable reference solutions, determinism, variety."""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter
from fractions import Fraction

import pytest

from pipeline.problems.generator import KINDS, LEVELS, format_answer, generate_problems
from pipeline.search.steps import (
    END_OF_OUTPUT,
    OUTPUT,
    parse_step,
    solution_program,
    split_solution,
)


def _answer_value(answer: str) -> Fraction:
    """Parse the generator's answer format (``42``, ``-\\frac{7}{2}``) without its help."""
    match = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", answer)
    if match:
        sign = -1 if match.group(1) else 1
        return sign * Fraction(int(match.group(2)), int(match.group(3)))
    return Fraction(int(answer))


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def _tickets(p: dict) -> Fraction:
    """adults + children = total and pa * adults + pc * children = revenue, by elimination."""
    adults = Fraction(
        p["revenue"] - p["child_price"] * p["total"], p["adult_price"] - p["child_price"]
    )
    return adults if p["asked"] == "adult" else p["total"] - adults


def _consecutive(p: dict) -> Fraction:
    """n + (n + g) + ... + (n + (k-1)g) = total, so n = (total - g k (k-1) / 2) / k."""
    k, gap = p["count"], p["gap"]
    smallest = Fraction(p["total"] - gap * k * (k - 1) // 2, k)
    return smallest + gap * (k - 1) if p["ask"] == "largest" else smallest


# The answer of each kind from its structured parameters, written out independently.
EXPECTED = {
    "add": lambda p: p["a"] + p["b"],
    "subtract": lambda p: p["a"] - p["b"],
    "multiply": lambda p: p["groups"] * p["each"],
    "divide": lambda p: Fraction(p["total"], p["people"]),
    "buy_change": lambda p: p["paid"] - p["count"] * p["price"],
    "groups_plus_extra": lambda p: p["groups"] * p["each"] + p["extra"],
    "gain_then_lose": lambda p: p["start"] + p["gained"] - p["lost"],
    "keep_then_share": lambda p: Fraction(p["total"] - p["kept"], p["friends"]),
    "two_items_change": lambda p: p["paid"] - p["n1"] * p["p1"] - p["n2"] * p["p2"],
    "wage_weeks": lambda p: p["hours"] * p["days"] * p["rate"] * p["weeks"],
    "average_needed": lambda p: p["target"] * p["tests"] - sum(_ints(p["scores"])),
    "reading_plan": lambda p: (
        p["book"] - p["monday"] - 2 * p["monday"] - (2 * p["monday"] - p["fewer"])
    ),
    "fraction_then_percent": lambda p: (
        Fraction(p["total"])
        * Fraction(p["den"] - p["num"], p["den"])
        * Fraction(100 - p["percent"], 100)
    ),
    "discount_coupon": lambda p: Fraction(p["price"] * (100 - p["percent"]), 100) - p["coupon"],
    "travel_time": lambda p: Fraction(p["dist1"], p["speed1"]) + Fraction(p["dist2"], p["speed2"]),
    "unit_rate": lambda p: Fraction(p["cost"]) / p["known"] * p["wanted"],
    "ratio_share": lambda p: Fraction(p["total"] * p["a"], p["a"] + p["b"]),
    "linear_equation": lambda p: Fraction(p["d"] - p["b"], p["a"] - p["c"]),
    "tickets_system": lambda p: _tickets(p),
    "work_rate": lambda p: 1 / (Fraction(1, p["first"]) + Fraction(1, p["second"])),
    "reverse_percent": lambda p: (
        p["left"] / (Fraction(p["den"] - p["num"], p["den"]) * Fraction(100 - p["percent"], 100))
    ),
    "consecutive_sum": lambda p: _consecutive(p),
}


@pytest.fixture(scope="module")
def problems():
    return generate_problems(500, seed=0)


def test_every_kind_has_an_independent_check():
    assert set(EXPECTED) == {
        kind.__name__.lstrip("_") for kinds in KINDS.values() for kind in kinds
    }


def test_answers_match_a_recomputation_from_the_structured_parameters(problems):
    for problem in problems:
        expected = Fraction(EXPECTED[problem.kind](problem.params))
        assert _answer_value(problem.answer) == expected, problem.question
        assert problem.meta["level"] == problem.level and problem.meta["kind"] == problem.kind


def test_questions_state_the_numbers_the_answer_is_computed_from(problems):
    for problem in problems:
        for name, value in problem.params.items():
            if isinstance(value, int) and abs(value) >= 2 and name != "gap":
                assert str(abs(value)) in problem.question, (name, value, problem.question)


def test_reference_programs_print_the_answer_under_plain_exec(problems):
    for problem in problems:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(solution_program(problem.solution), {})  # noqa: S102 - our own generated code
        shown = problem.solution.split(OUTPUT)[1].split(END_OF_OUTPUT)[0]
        assert printed.getvalue().strip() == shown
        assert Fraction(shown) == _answer_value(problem.answer)


def test_solutions_have_two_to_five_commented_code_steps_then_the_answer(problems):
    for problem in problems:
        steps = split_solution(problem.solution)
        codes, answer = steps[:-1], steps[-1]
        assert 2 <= len(codes) <= 5
        parsed = [parse_step(text.split(OUTPUT)[0]) for text in codes]
        assert all(step.kind == "code" for step in parsed)
        assert [step.ends_code for step in parsed] == [False] * (len(codes) - 1) + [True]
        assert all(step.code.startswith(f"# Step {i}: ") for i, step in enumerate(parsed, 1))
        assert "print(" in parsed[-1].code
        assert answer.endswith("\\boxed{" + problem.answer + "}<end_of_answer>")


def test_same_seed_same_problems_and_a_larger_n_extends_a_smaller_one():
    first = generate_problems(60, seed=7)
    assert [p.question for p in first] == [p.question for p in generate_problems(60, seed=7)]
    assert [p.solution for p in first] == [p.solution for p in generate_problems(90, seed=7)[:60]]
    other = generate_problems(60, seed=8)
    assert sum(a.question == b.question for a, b in zip(first, other)) < 3


def test_two_thousand_problems_are_distinct_and_varied():
    many = generate_problems(2000, seed=1)
    assert len({p.question for p in many}) == 2000
    # Wording varies beyond the numbers: questions with digits blanked out are mostly different.
    shapes = {re.sub(r"\d+", "#", p.question) for p in many}
    assert len(shapes) > 1400
    openings = Counter(" ".join(p.question.split()[:2]) for p in many)
    assert openings.most_common(1)[0][1] < 100


def test_levels_are_balanced_every_kind_appears_and_levels_can_be_restricted(problems):
    assert Counter(p.level for p in problems) == {level: 100 for level in LEVELS}
    assert {p.kind for p in problems} == set(EXPECTED)
    hard = generate_problems(40, seed=0, levels=[4, 5])
    assert {p.level for p in hard} == {4, 5}
    fractions = [p for p in problems if p.value.denominator != 1]
    assert fractions and all(p.level >= 4 for p in fractions)


def test_answer_format_is_latex_for_fractions_and_plain_for_integers():
    assert format_answer(Fraction(42)) == "42"
    assert format_answer(Fraction(-3)) == "-3"
    assert format_answer(Fraction(7, 2)) == "\\frac{7}{2}"
    assert format_answer(Fraction(-7, 2)) == "-\\frac{7}{2}"


def test_bad_levels_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="levels"):
        generate_problems(5, levels=[6])
    with pytest.raises(ValueError, match="levels"):
        generate_problems(5, levels=[])


def test_every_reference_solution_passes_in_the_sandbox_and_the_grader(problems):
    """The check of docs/algorithm.md, on every one of 500 problems: run, print, grade."""
    sandbox = pytest.importorskip("pipeline.execution.sandbox")
    answer = pytest.importorskip("pipeline.grading.answer")
    programs = [solution_program(p.solution) for p in problems]
    with sandbox.Sandbox(workers=2, timeout_s=30, memory_mb=1024) as box:
        results = box.run_many(programs)
    failures = [
        (p.question, r.stdout, r.error)
        for p, r in zip(problems, results)
        if r.error or r.timed_out or not answer.is_equivalent(r.stdout.strip(), p.answer)
    ]
    assert not failures, failures[:3]
    for p in problems:  # the answer step is graded the same way
        assert answer.is_equivalent(answer.extract_answer(split_solution(p.solution)[-1]), p.answer)
