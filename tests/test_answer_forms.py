"""Ways of writing an answer the grader once misjudged (docs/algorithm.md, grading).

- MATH writes thousands as ``11,\\! 111,\\! 111,\\! 100``, with a space after ``\\!``;
- a box without braces may end a sentence: ``\\boxed 5, so``;
- math-verify drops a base subscript, so ``52_9`` equalled ``52_8``;
- latex2sympy makes ``i`` a real symbol in ``2i\\sqrt{2}`` and a non-real one in
  ``2\\sqrt{2}i``, so the same complex number written two ways was judged wrong.
"""

from __future__ import annotations

import pytest

from pipeline.grading.answer import extract_answer, is_equivalent

MATH500_THOUSANDS = "11,\\! 111,\\! 111,\\! 100"  # MATH500 row 217, as stored


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed 5, which is the answer", "5"),
        ("\\boxed 5.", "5"),
        ("\\boxed 5;", "5"),
        ("\\boxed 12,000 apples", "12,000"),  # a comma inside the number stays
        ("\\boxed 2.5.", "2.5"),
    ],
)
def test_a_braceless_box_leaves_the_sentence_punctuation_out(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("pred", "truth", "expected"),
    [
        ("11111111100", MATH500_THOUSANDS, True),
        ("11,111,111,100", MATH500_THOUSANDS, True),
        ("\\boxed{11{,}111{,}111{,}100}", MATH500_THOUSANDS, True),
        ("1111111100", MATH500_THOUSANDS, False),
        ("11111111101", MATH500_THOUSANDS, False),
        ("so \\boxed 5, which is it", "5", True),
        ("so \\boxed 6, which is it", "5", False),
    ],
)
def test_thousands_and_braceless_boxes(pred: str, truth: str, expected: bool) -> None:
    assert is_equivalent(pred, truth) is expected


@pytest.mark.parametrize(
    ("pred", "truth", "expected"),
    [
        ("52_9", "52_8", False),
        ("52_{10}", "52_8", False),
        ("40_0", "40_9", False),
        ("4210_6", "4210_{5}", False),
        ("152A_{12}", "152A_{11}", False),
        ("52_{8}", "52_8", True),
        ("4210_5", "4210_{5}", True),
        ("52", "52_8", True),  # a missing subscript is read in the truth's base
        ("53_8", "52_8", False),
    ],
)
def test_numbers_in_different_bases_differ(pred: str, truth: str, expected: bool) -> None:
    assert is_equivalent(pred, truth) is expected


@pytest.mark.parametrize(
    ("pred", "truth", "expected"),
    [
        ("-128 - 128i\\sqrt{3}", "-128 - 128 \\sqrt{3} i", True),  # a MATH test answer
        ("2i\\sqrt{2}", "2\\sqrt{2}i", True),
        ("2\\sqrt{2}i", "2i\\sqrt{2}", True),
        ("5 \\cdot i", "5i", True),
        ("i\\sqrt{3}", "\\sqrt{-3}", True),
        ("-128 + 128i\\sqrt{3}", "-128 - 128 \\sqrt{3} i", False),
        ("3i\\sqrt{2}", "2\\sqrt{2}i", False),
        ("2\\sqrt{2}", "2\\sqrt{2}i", False),
    ],
)
def test_the_imaginary_unit_is_one_wherever_it_stands(
    pred: str, truth: str, expected: bool
) -> None:
    assert is_equivalent(pred, truth) is expected
