"""The SFT filter re-runs each picked program in the real sandbox and re-grades its answer."""

from __future__ import annotations

import pytest

from pipeline.execution.sandbox import Sandbox
from pipeline.rules.filter import Verdict, rerank, summarise, verify_responses
from pipeline.search import steps


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


class NothingRuns:
    """A code runner for tests that must fail before any program runs."""

    def run_many(self, codes):
        raise AssertionError(f"ran {len(codes)} programs")


def test_responses_without_a_ground_truth_each_are_refused():
    # zip() used to judge only the first response and leave the second without a verdict.
    response = solution("print(42)", "42", "42")
    with pytest.raises(ValueError, match="2 responses but 1 ground truths"):
        verify_responses([response, response], ["42"], NothingRuns())


def test_kept_picks_are_ranked_1_2_within_each_problem_and_round():
    ok, error = Verdict(True, "ok"), Verdict(False, "code_error")
    groups = [("p1", 1)] * 3 + [("p2", 1)] * 2 + [("p1", 2)]
    verdicts = [error, ok, ok, ok, error, ok]
    # p1 round 1: its rank-1 pick is dropped, so the next two become ranks 1 and 2 (a lone
    # rank 2 breaks the `sft` contract); p2: rank 1 stays, rank 2 is dropped; p1 round 2: 1.
    assert rerank(groups, verdicts) == [None, 1, 2, 1, None, 1]
    with pytest.raises(ValueError, match="3 candidates but 1 verdicts"):
        rerank(groups[:3], [ok])
