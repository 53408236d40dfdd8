"""Answer extraction and grading (pipeline.grading.answer): what makes a terminal step +1 or -1."""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import threading
import time
from pathlib import Path

import pytest

import pipeline.grading._process as grading_process
from pipeline.grading.answer import (
    Grader,
    extract_answer,
    grade_many,
    is_equivalent,
    normalize_answer,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MATH500 = DATA / "math" / "math500_test.json"
MATH_TEST = DATA / "math" / "MATH_test.json"
GSM8K_TEST = DATA / "gsm8k" / "test.jsonl"

# --------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is \\boxed{72}", "72"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("\\boxed{\\sqrt{\\frac{a}{b^{2}}}} done", "\\sqrt{\\frac{a}{b^{2}}}"),
        ("first \\boxed{1}, then \\boxed{2}", "2"),  # the last box wins
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces are not structure
        ("$\\boxed 5$", "5"),  # no braces: up to `$`
        ("so \\boxed 42 is it", "42"),
        ("\\fbox{7}", "7"),
        ("\\boxed\n{18}", "18"),  # a line break before the brace is still the same box
        ("<answer>The answer is \\boxed{ 3 }<end_of_answer>", "3"),
    ],
)
def test_extract_answer_finds_last_boxed(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "no box here, the answer is 5",
        "",
        "\\boxed{\\frac{1}{2}",  # generation cut off inside the box
        "\\boxed{1} and then \\boxed{2",  # the last box is unbalanced
        "\\boxed{}",
        "\\boxed{   }",
        "\\boxedfoo{3}",
        None,
        42,
    ],
)
def test_extract_answer_is_none_without_a_readable_box(text: object) -> None:
    assert extract_answer(text) is None  # type: ignore[arg-type]


def test_extract_answer_handles_huge_text() -> None:
    text = "x" * 2_000_000 + "\\boxed{" + "{" * 10_000 + "}" * 10_000 + "}"
    assert extract_answer(text) == "{" * 10_000 + "}" * 10_000


# --------------------------------------------------------------------------- equivalence

EQUIVALENT = [
    # GSM8K: plain numbers, separators, money, units, the `####` answer line
    ("1080", "#### 1,080"),
    ("1,000", "1000"),
    ("1,450,000", "1450000"),
    ("\\$18", "18"),
    ("$18.00", "18"),
    ("18 dollars", "18"),
    ("18 \\text{ dollars}", "18"),
    ("18\\text{ cm}^2", "18"),
    ("72.0", "72"),  # what print() of a float shows
    ("-5", "−5"),
    ("50\\%", "50"),  # percent sign dropped (module docstring)
    ("50%", "50"),
    # fractions, decimals, Python-printed values
    ("\\frac{1}{2}", "0.5"),
    ("1/2", "\\frac12"),
    ("\\dfrac{3}{4}", "\\tfrac{3}{4}"),
    ("3/4", "0.75"),
    ("0.333333", "\\frac{1}{3}"),  # math-verify's 6-decimal float rule
    ("0.30000000000000004", "0.3"),
    ("4.999999999999999", "5"),  # float error in a printed result
    ("4.999999999999999", "\\sqrt{25}"),  # the same rule when math-verify decides
    ("5.0000001", "5"),  # equal to 6 decimals
    ("Rational(1, 2)", "\\frac{1}{2}"),
    ("sqrt(2)", "\\sqrt{2}"),
    ("2*sqrt(2)", "2\\sqrt{2}"),
    ("pi/2", "\\frac{\\pi}{2}"),
    ("x**5 - x**4 + 1", "x^5 - x^4 + 1"),
    ("1e2", "100"),
    ("5.5e-05", "0.000055"),
    ("oo", "\\infty"),
    ("6 - 5*I", "6 - 5i"),
    ("exp(1)", "e"),
    ("[-2, 1]", "1,-2"),  # a printed list of solutions
    ("{1, 2}", "\\{1,2\\}"),  # a printed set
    ("Interval.Ropen(0, oo)", "[0, \\infty)"),
    # MATH-style LaTeX
    ("x = 5", "5"),
    ("5", "x=5"),
    ("30^\\circ", "30"),
    ("90", "90^{\\circ}"),
    ("(1,2)", "\\left( 1, 2 \\right)"),
    ("[0,\\infty)", "[0, \\infty)"),
    ("\\{2,1\\}", "\\{1,2\\}"),  # sets ignore order
    ("7,5,3", "3, 5, 7"),
    ("\\sqrt{8}", "2\\sqrt{2}"),
    ("\\frac{\\pi}{2}", "\\pi/2"),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("2(k+1)", "2k+2"),
    ("\\pm 2021", "\\pm 2021"),
    ("\\emptyset", "\\varnothing"),  # two spellings of the empty set
    ("1 < x \\le 3", "(1, 3]"),  # an inequality answers the interval it describes
    ("x \\ge 3", "[3, \\infty)"),
    ("12/5525", "\\frac{12}{5,\\!525}"),  # MATH's `,\!` thousands separator inside a fraction
    ("2 1/2", "\\frac{5}{2}"),  # a mixed number: 2 + 1/2
    ("1 000 000", "10^6"),  # spaces as thousands separators
    ("5 million", "5000000"),
    ("3 dozen", "36"),
    ("\\text{5 inches}", "5"),  # the unit inside the text wrapper
    ("0.2 + 0.6i", "\\frac{1}{5} + \\frac{3}{5}i"),  # a complex number written with floats
    (
        "\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}",
        "\\begin{pmatrix} -\\frac13 \\\\ \\frac23 \\end{pmatrix}",
    ),
    ("Evelyn", "\\text{Evelyn}"),
    # choice letters
    ("B", "\\text{(B)}"),
    ("(B)", "B"),
    ("\\textbf{(B)}", "(B)"),
    # a whole answer step, as the MCTS has it
    ("<answer>The answer is \\boxed{\\frac{3}{4}}<end_of_answer>", "0.75"),
]

NOT_EQUIVALENT = [
    ("1081", "1080"),
    ("1000001", "1000000"),
    ("72.5", "72"),
    ("5.00001", "5"),
    ("0.33", "\\frac{1}{3}"),
    ("0.0000002", "0.0000001"),  # both round to 0 at 6 decimals
    ("0.5", "50\\%"),  # percent is dropped, not divided by 100
    ("-5", "5"),
    ("\\frac{2}{3}", "\\frac{3}{2}"),
    ("\\sqrt{3}", "\\sqrt{2}"),
    ("3.14", "\\pi"),
    ("(3,4)", "(3,4]"),
    ("\\{1, 2\\}", "\\{1, 3\\}"),
    ("C", "(B)"),
    ("(1, 2)", "(2, 1)"),  # an ordered pair: order matters
    # the brackets say what an answer is: an open interval or pair, a closed interval, a set
    ("(1,2)", "[1,2]"),
    ("[2,3]", "(2,3)"),
    ("(1,2)", "\\{2,1\\}"),
    ("(3,2,1)", "\\{1,2,3\\}"),
    ("x > 3", "[3, \\infty)"),  # 3 is in the interval, not in the inequality's set
    ("2x > 6", "(3, \\infty)"),  # not solved for x (as `2x + 1 = 5` is no answer for 2)
    ("2 1/2", "21/2"),  # the space separates a whole part, it does not join digits
    ("5 million", "5"),  # a scale word carries value, unlike a unit
    ("1.5 billion dollars", "1.5"),
    ("5\\text{ million dollars}", "5"),
    ("0.2 - 0.6i", "\\frac{1}{5} + \\frac{3}{5}i"),
    # docs/algorithm.md (deviations): known false positives of math-verify
    ("\\frac{1}{2006!}", "\\frac{1}{2004!}"),
    ("\\frac{1}{2^{98}}", "\\frac{1}{2^{99}}"),
    ("\\frac{1}{3 \\cdot 2^{2006}}", "\\frac{2^{2005}+1}{3 \\cdot 2^{2006}}"),
    ("x = \\frac{1}{2006!}", "x = \\frac{1}{2004!}"),
    ("x = 3", "x = 2"),
    ("y = 2", "x = 2"),
    ("2x + 1 = 5", "5"),  # an equation is an answer only when its left side is the unknown
    ("2021", "\\pm 2021"),
    ("\\pm 2021", "2021"),
    ("1 + \\sqrt{19}", "1 \\pm \\sqrt{19}"),
    # exact values differ by any amount, however small against their size
    ("\\sqrt{2} + 10^{-25}", "\\sqrt{2}"),
    ("\\pi", "\\pi + 10^{-30}"),
    # ... inside intervals and sets too
    ("(\\frac{1}{2006!}, 1)", "(\\frac{1}{2004!}, 1)"),
    ("\\{\\frac{1}{2006!}, 1\\}", "\\{1, \\frac{1}{2004!}\\}"),
    ("\\frac{1}{2006!}, 1", "\\frac{1}{2004!}, 1"),
]


@pytest.mark.parametrize(("pred", "truth"), EQUIVALENT)
def test_equivalent_answers(pred: str, truth: str) -> None:
    assert is_equivalent(pred, truth) is True


@pytest.mark.parametrize(("pred", "truth"), NOT_EQUIVALENT)
def test_different_answers(pred: str, truth: str) -> None:
    assert is_equivalent(pred, truth) is False


@pytest.mark.parametrize(
    ("pred", "truth"),
    [
        (None, "5"),
        ("", "5"),
        ("   ", "5"),
        ("5", ""),
        ("5", None),
        (["5"], "5"),
        (True, "1"),
        ("\\frac{1}{", "\\frac{1}{2}"),
        ("}}}{{{", "5"),
        ("\\boxed{5", "5"),
        ("\x00\udcff", "5"),
        ("\\left(", "\\right)"),
        ("9" * 1_000_000, "9" * 1_000_001),  # huge: compared as text only, never parsed
        ("1" + "+1" * 5_000, "1"),
    ],
)
def test_garbage_is_not_equivalent_and_never_raises(pred: object, truth: object) -> None:
    assert is_equivalent(pred, truth) is False  # type: ignore[arg-type]


def test_identical_garbage_is_equal_by_text() -> None:
    # Two answers that read the same are equal even when nothing can parse them.
    assert is_equivalent("\\frac{1}{0}", "\\frac{1}{0} ")
    assert is_equivalent("9" * 100_000, "9" * 100_000)


def test_numbers_from_json_are_taken_as_printed() -> None:
    assert is_equivalent("72", 72)  # type: ignore[arg-type]
    assert is_equivalent(0.5, "\\frac{1}{2}")  # type: ignore[arg-type]


def test_a_whole_gsm8k_worked_solution_is_graded_by_its_answer_line() -> None:
    worked = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = 72 in all.\n#### 72"
    assert is_equivalent("72", worked)
    assert not is_equivalent("24", worked)  # a number of the working is not the answer


def test_a_latex_command_whose_backslash_json_ate_still_reads() -> None:
    # MATH_test.json row 2913 holds "\left(\tfrac32, ...": JSON read `\t` as a tab.
    truth = "\\left(\tfrac32, -\\tfrac52\\right)"
    assert is_equivalent("(\\frac{3}{2}, -\\frac{5}{2})", truth)
    assert not is_equivalent("(\\frac{3}{2}, \\frac{5}{2})", truth)


def test_normalize_answer_gives_one_form_to_formatting_variants() -> None:
    variants = ["$1,080$", "\\$1{,}080", "1080.", "\\boxed{1,080}", "#### 1,080", " 1080 "]
    assert {normalize_answer(v) for v in variants} == {"1080"}
    assert normalize_answer("\\text{(B)}") == normalize_answer("B")
    assert normalize_answer("\\left( 1, \\dfrac{1}{2} \\right)") == "(1,\\frac{1}{2})"


# --------------------------------------------------------------------------- real answers


def _math500_answers() -> list[str]:
    if not MATH500.exists():
        pytest.skip(f"{MATH500} not found (the shared data folder is absent)")
    return [row["answer"] for row in json.loads(MATH500.read_text())]


def test_every_math500_answer_equals_itself_and_its_boxed_form() -> None:
    answers = _math500_answers()
    assert all(grade_many([(a, a) for a in answers]))
    assert all(grade_many([(f"so $\\boxed{{{a}}}$.", a) for a in answers]))


def _reformat(answer: str) -> str:
    """Write an answer differently without changing its value (math-verify has to decide)."""
    text = re.sub(r"\\frac\{([^{}]+)\}\{([^{}]+)\}", r"(\1)/(\2)", answer)
    text = re.sub(r"\\sqrt\{([^{}]+)\}", r"(\1)^{1/2}", text)
    return re.sub(r"^(-?\d+)$", r"\1.0", text)


def test_math500_answers_equal_a_reformatted_version() -> None:
    # Mixed numbers (`1\frac{4}{5}`) would change value when the fraction is rewritten.
    answers = [a for a in _math500_answers() if not re.search(r"\d\s*\\frac", a)]
    pairs = [(_reformat(a), a) for a in answers if _reformat(a) != a][::5]
    assert len(pairs) > 50
    verdicts = grade_many(pairs)
    assert [p for p, ok in zip(pairs, verdicts) if not ok] == []


def test_math500_answers_with_a_changed_digit_are_wrong() -> None:
    def bump(answer: str) -> str:
        digit = re.search(r"\d", answer)
        assert digit is not None
        return answer[: digit.start()] + str((int(digit.group()) + 1) % 10) + answer[digit.end() :]

    pairs = [(bump(a), a) for a in _math500_answers() if re.search(r"\d", a)][::6]
    assert len(pairs) > 50
    verdicts = grade_many(pairs)
    assert [p for p, ok in zip(pairs, verdicts) if ok] == []


def _stored_problems(path: Path) -> list[dict]:
    """The problems table as the pipeline stores it (answers as the loader writes them)."""
    if not path.exists():
        pytest.skip(f"{path} not found (the shared data folder is absent)")
    from pipeline.problems.sources import load_problems

    return load_problems(str(path)).to_dicts()


def test_every_math_test_answer_equals_its_boxed_form() -> None:
    # All 5000 MATH answers, list answers joined and one mangled `\tfrac` included.
    answers = [row["answer"] for row in _stored_problems(MATH_TEST)]
    assert len(answers) == 5000
    verdicts = grade_many([(f"Hence $\\boxed{{{a}}}$.", a) for a in answers])
    assert [a for a, ok in zip(answers, verdicts) if not ok] == []


def test_gsm8k_answers_equal_their_worked_solution_and_formatted_variants() -> None:
    rows = _stored_problems(GSM8K_TEST)
    records = [json.loads(line) for line in GSM8K_TEST.open()]
    raw = {record["question"].strip(): record["answer"] for record in records}  # worked solutions
    pairs = []
    for row in rows:
        value = int(row["answer"])  # GSM8K test answers are whole numbers
        truth = row["answer"]
        pairs += [(f"{value:,}", truth), (f"\\${value:,}.00", truth), (truth, raw[row["question"]])]
        if row["solution"] is not None:  # the reference solution's own box
            pairs.append((extract_answer(row["solution"]), truth))
    assert [p for p, ok in zip(pairs, grade_many(pairs)) if not ok] == []


def test_gsm8k_answer_lines_grade_printed_numbers() -> None:
    if not GSM8K_TEST.exists():
        pytest.skip(f"{GSM8K_TEST} not found (the shared data folder is absent)")
    lines = [json.loads(line)["answer"].splitlines()[-1] for line in GSM8K_TEST.open()][:300]
    numbers = [line.split("####")[-1].strip().replace(",", "") for line in lines]
    assert any("," in line for line in lines)  # the sample exercises thousands separators
    assert all(grade_many([(f"{n}.0", line) for n, line in zip(numbers, lines)]))
    assert not any(grade_many([(str(int(n) + 1), line) for n, line in zip(numbers, lines)]))


# --------------------------------------------------------------------------- bounds, threads


def test_pathological_input_returns_false_within_the_bound() -> None:
    is_equivalent("2", "\\sqrt{4}")  # the default worker is up before timing
    started = time.monotonic()
    assert is_equivalent("2^{2^{2^{100}}}", "5") is False
    assert time.monotonic() - started < 20  # the bound is 3 s; generous for a loaded machine


def test_grader_recovers_after_killing_a_stuck_worker() -> None:
    with Grader(timeout_s=0.5) as grader:
        verdicts = grader.grade_many(
            [
                ("10**10**10", "5"),
                ("\\sqrt{8}", "2\\sqrt{2}"),
                ("9^{9^{9^{9}}}", "1"),
                ("pi", "\\pi"),
            ]
        )
    assert verdicts == [False, True, False, True]


def test_grading_works_from_many_threads() -> None:
    cases = [(p, t, True) for p, t in EQUIVALENT[:12]] + [(p, t, False) for p, t in NOT_EQUIVALENT]
    results: dict[int, bool] = {}

    def grade(index: int, pred: str, truth: str) -> None:
        results[index] = is_equivalent(pred, truth)

    threads = [
        threading.Thread(target=grade, args=(i, pred, truth))
        for i, (pred, truth, _) in enumerate(cases)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == {i: expected for i, (_, _, expected) in enumerate(cases)}


def test_pathological_input_on_a_thread_is_bounded() -> None:
    result: list[bool] = []
    with Grader(timeout_s=0.5) as grader:
        thread = threading.Thread(
            target=lambda: result.append(grader.is_equivalent("10**10**10", "1"))
        )
        thread.start()
        thread.join(timeout=30)
    assert result == [False]


def _grade_in_child(queue: multiprocessing.Queue) -> None:
    queue.put(is_equivalent("\\frac{\\pi}{2}", "pi/2"))


def test_grading_works_in_a_forked_child() -> None:
    assert is_equivalent("\\sqrt{8}", "2\\sqrt{2}")  # the parent's worker exists before the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_grade_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert queue.get(timeout=5) is True
    assert is_equivalent("\\sqrt{8}", "2\\sqrt{2}")  # and the parent's worker still answers


def test_plain_numbers_are_graded_without_a_worker() -> None:
    with Grader() as grader:
        verdicts = grader.grade_many(
            [("1,000", "1000"), ("72.0", "72"), ("3", "4"), ("1/2", "0.5")]
        )
        assert verdicts == [True, True, False, True]
        assert grader._worker is None  # bulk numeric grading never pays for a process


def test_a_worker_that_cannot_start_is_reported(monkeypatch, caplog) -> None:
    monkeypatch.setattr(grading_process, "WORKER_MODULE", "pipeline._no_such_worker")
    with Grader() as grader, caplog.at_level(logging.ERROR, logger="pipeline.grading.answer"):
        assert grader.is_equivalent("\\pi", "pi") is False
    assert "grading worker exited" in caplog.text


@pytest.mark.parametrize(
    ("option", "value"), [("timeout_s", 0), ("timeout_s", -1.0), ("memory_mb", -5)]
)
def test_bad_grader_settings_are_rejected_with_the_parameter_named(
    option: str, value: float
) -> None:
    with pytest.raises(ValueError, match=option):
        Grader(**{option: value})
