"""The SFT filter re-runs each picked program in the real sandbox and re-grades its answer."""

from __future__ import annotations

import pytest

from pipeline import steps
from pipeline.filter import summarise, verify_responses
from pipeline.sandbox import Sandbox


def solution(code: str, printed: str, answer: str) -> str:
    return steps.render_solution([steps.last_code_step(code, printed), steps.answer_step(answer)])


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, timeout_s=3.0) as box:
        yield box


def test_each_kind_of_bad_trajectory_is_dropped_with_its_reason(sandbox):
    responses = [
        solution("x = 6 * 7\nprint(x)", "42", "42"),  # clean, right
        solution("print(1 / 0)", "1", "1"),  # raises now
        solution("print(41)", "42", "42"),  # recorded output is not what the code prints
        solution("print(43)", "43", "43"),  # runs, but the answer is wrong
        solution("while True:\n    pass", "", "42"),  # never ends
        steps.render_solution([steps.last_code_step("print(42)", "42")]),  # no boxed answer
    ]
    verdicts = verify_responses(responses, ["42"] * len(responses), sandbox)
    assert [v.reason for v in verdicts] == [
        "ok", "code_error", "output_changed", "wrong_answer", "timeout", "no_answer",
    ]  # fmt: skip
    report = summarise(verdicts)
    assert report["kept"] == 1 and report["dropped"] == 5
    assert report["dropped_by_reason"]["code_error"] == 1


def test_multi_step_programs_run_whole(sandbox):
    response = steps.render_solution([
        steps.code_step("from fractions import Fraction\nhalf = Fraction(48, 2)"),
        steps.last_code_step("print(48 + half)", "72"),
        steps.answer_step("72"),
    ])  # fmt: skip
    (verdict,) = verify_responses([response], ["72"], sandbox)
    assert verdict.keep
