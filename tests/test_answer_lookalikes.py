"""Answers the grader once judged wrongly, each pinned against its rule (docs/algorithm.md, grading).

- math-verify chops a tiny exact difference to 0 inside expressions too, not only between two
  numbers: ``x^2 + 1/2004!`` is not ``x^2 + 1/2006!``, also in a list of equations;
- an equation is an answer for a number only when its left side is the unknown, whichever of
  the two is the ground truth: ``5`` does not answer ``2x + 1 = 5``;
- a comma followed by a space separates list items: ``1, 100`` is two answers, not 1100.
"""

from __future__ import annotations

import pytest

from pipeline.grading.answer import is_equivalent


@pytest.mark.parametrize(
    ("pred", "truth"),
    [
        # tiny exact constants that differ, inside expressions and equations
        ("x^2 + \\frac{1}{2004!}", "x^2 + \\frac{1}{2006!}"),
        ("y = x^2 + \\frac{1}{2006!}", "y = x^2 + \\frac{1}{2004!}"),
        ("x + \\sqrt{2}", "x + \\sqrt{2} + 10^{-30}"),
        ("a = \\frac{1}{2006!}, b = 1", "a = \\frac{1}{2004!}, b = 1"),
        # a number against an equation whose left side is not the unknown
        ("3", "x + y = 3"),
        ("5", "2x + 1 = 5"),
        # a list written with ", " against the number its digits would make
        ("1100", "1, 100"),
        ("1, 100", "1100"),
        ("10200", "10, 200"),
    ],
)
def test_false_positives_are_not_equivalent(pred: str, truth: str) -> None:
    assert is_equivalent(pred, truth) is False


@pytest.mark.parametrize(
    ("pred", "truth"),
    [
        ("x^2 + \\frac{1}{2}", "x^2 + 0.5"),
        ("x^2 + \\frac{1}{3}", "\\frac{1}{3} + x^2"),
        ("y = 2x + 3", "2x + 3"),
        ("2x + 3", "y = 2x + 3"),
        ("5", "x = 5"),
        ("2x + 3", "f(x) = 2x + 3"),  # a function's value is the unknown too
        ("f(x) = 2x + 3", "2x + 3"),
        ("a = 1, b = 2", "b = 2, a = 1"),
        ("1, 100", "100, 1"),  # a list, in any order
        ("1,100", "1100"),  # no space: still a thousands separator
        ("\\$1,000", "1000"),
    ],
)
def test_their_true_neighbours_stay_equivalent(pred: str, truth: str) -> None:
    assert is_equivalent(pred, truth) is True
