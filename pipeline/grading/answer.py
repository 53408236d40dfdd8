"""Answer extraction and grading: the +1 / -1 of a terminal step (docs/algorithm.md).

``extract_answer`` takes the last ``\\boxed{...}`` of a step; ``is_equivalent`` says whether a
predicted answer equals the ground truth, for MATH's LaTeX answers, GSM8K's plain numbers and
what a program prints (``72.0``, ``3/4``, ``sqrt(2)``, ``pi/2``).

Grading runs in two tiers, so bulk grading stays fast and no input can hang the caller:

1. a fast path here, without sympy: answers equal after cheap normalisation, or both plain
   numbers (``1,080``, ``72.0``, ``\\frac{3}{4}``, ``$18``), are decided in microseconds;
2. everything else goes to math-verify in a worker process (:mod:`pipeline.grading._worker`),
   bounded per call by ``timeout_s`` and killed and replaced on overrun (docs/algorithm.md, deviations).

Conventions a user should know (each has a test):

- a percent sign is dropped: ``50\\%`` == ``50`` (GSM8K and MATH answers are written so), but
  ``50\\%`` != ``0.5``;
- ``x = 5`` == ``5`` and ``f(x) = 2x + 3`` == ``2x + 3``, either side the ground truth, but
  ``2x + 1 = 5`` != ``5`` and ``x + y = 3`` != ``3``;
- a float equals a number when they agree to 6 decimals (math-verify's rule) and to a relative
  1e-4 (so ``0.333333`` == ``1/3``, ``4.999999999999999`` == ``5``, ``1e-7`` != ``2e-7``);
  exact values must agree exactly (so ``1/2004!`` != ``1/2006!``, and ``x^2 + 1/2004!`` !=
  ``x^2 + 1/2006!``); see :mod:`pipeline.grading._numbers`;
- a thousands separator is a separator: ``1,000`` == ``1000`` (not the list ``1, 0``), and so
  are ``1{,}000``, ``1,\\!000`` and ``1 000``; a space between other digits is not: ``2 1/2`` is
  the mixed number 5/2, and a comma followed by a space separates a list: ``1, 100`` != ``1100``;
- a scale word carries value, a unit does not: ``5 million`` == ``5000000``, ``5 cm`` == ``5``;
- brackets around a whole answer say what it is: ``(1,2)``, ``[1,2]`` and ``\\{1,2\\}`` differ
  from each other (an unbracketed ``1, 2`` is a list of answers, in any order);
- an inequality answers the interval it describes: ``1 < x \\le 3`` == ``(1, 3]``;
- numbers written in different bases differ: ``52_9`` != ``52_8`` (``52`` == ``52_8``: a
  missing subscript is read in the ground truth's base);
- a ground truth may be a whole GSM8K worked solution: its ``#### N`` line is the answer.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import threading
import weakref
from collections.abc import Iterable
from fractions import Fraction
from typing import Self

from pipeline.grading._numbers import numbers_agree
from pipeline.grading._process import WorkerProcess, WorkerStartError

DEFAULT_TIMEOUT_S = 3.0
DEFAULT_MEMORY_MB = 1024
DEFAULT_STARTUP_TIMEOUT_S = 60.0
# No real answer is this long; longer text is compared only by the fast path, never parsed.
MAX_ANSWER_CHARS = 1000

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- extraction

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def has_box(text: str) -> bool:
    """Whether ``text`` holds a ``\\boxed`` or ``\\fbox`` command (readable or not)."""
    return any(command in text for command in _BOX_COMMANDS)


def extract_answer(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{}``) in ``text``, braces balanced.

    ``\\boxed 5`` without braces gives ``5`` (up to whitespace or ``$``, less a trailing ``.,;:``
    that ends the sentence). None when there is no
    box, the last box is unbalanced (a truncated generation) or empty: a terminal step without a
    readable answer is graded wrong, never guessed at.
    """
    if not isinstance(text, str):
        return None
    start, command = max((text.rfind(c), c) for c in _BOX_COMMANDS)
    if start == -1:
        return None
    at = start + len(command)
    if at < len(text) and text[at].isalpha():  # \boxedfoo is another command
        return None
    while at < len(text) and text[at].isspace():  # `\boxed {5}`, `\boxed\n{5}`
        at += 1
    if at < len(text) and text[at] == "{":
        content = _braced(text, at)
    else:
        # `\boxed 5, so` or `\boxed 5.`: the punctuation ends the sentence, not the answer.
        content = re.match(r"[^\s$]*", text[at:]).group(0)  # type: ignore[union-attr]
        content = content.rstrip(".,;:")
    if content is None or not content.strip():
        return None
    return content.strip()


def _braced(text: str, open_at: int) -> str | None:
    """Text inside the brace group opening at ``open_at``; ``\\{`` and ``\\}`` do not count."""
    depth, i = 0, open_at
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
        i += 1
    return None


# --------------------------------------------------------------------------- normalisation

_SPACING = re.compile(r"(?<!\\)\\[!,;: ]|\\q?quad\b|~")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])")
# LaTeX's thousands separators, `5,\\!525` (MATH's habit, also `11,\\! 111`) and `5{,}525`:
# unlike a bare comma they never separate list items, so they go wherever they are
# (`\\frac{12}{5,\\!525}`).
_GLUED_THOUSANDS = re.compile(r"(?<=\d)(?:,\\!\s*|\{,\})(?=\d{3}(?!\d))")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree\b")  # not a bare \circ: f \circ g
# A number followed by plain words, e.g. `18 dollars`; math words are not units. Written so no
# string can make it backtrack (digits, separators and words cannot be split two ways).
_WORD_UNITS = re.compile(
    r"([+-]?(?:\d[\d,]*(?:\.\d+)?|\.\d+))\s+([A-Za-z]{2,}\.?(?:\s+[A-Za-z]{2,}\.?)*)"
)
_NOT_UNITS = {"pi", "sqrt", "ln", "log", "exp", "sin", "cos", "tan", "oo", "inf", "infty", "and"}
# Words that carry value, unlike units: `5 million` is 5000000, never 5.
_SCALES = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "dozen": 12}
_SCALED = re.compile(  # `5 million`, `5\\text{ million}`: the brace closes only what opened
    r"(?P<number>\d+(?:\.\d+)?)\s*(?P<open>\\(?:text|mbox|textrm|mathrm)\{\s*)?"
    r"(?P<scale>hundred|thousand|million|billion|dozen)s?\b(?(open)[^{}]*\})"
)
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox|textrm)\{([^{}]*)\}")
# `1,000,000` or `1 000 000` (`1\\,000` after spacing), one separator throughout.
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:(?P<sep>[, ])\d{3})(?:(?P=sep)\d{3})*(?:\.\d+)?")
# A space that does not stand between two digits; one that does separates two numbers.
_LOOSE_SPACE = re.compile(r"(?<!\d) | (?!\d)")


# A LaTeX command whose backslash JSON read as an escape: `"\tfrac"` gives a tab + `frac`
# (MATH_test.json has one such answer). A control character before a letter is never meant.
_LOST_BACKSLASH = re.compile(r"[\t\f\b\r](?=[A-Za-z])")
_LOST_ESCAPES = {"\t": "\\t", "\f": "\\f", "\b": "\\b", "\r": "\\r"}


def restore_lost_backslashes(text: str) -> str:
    """``"\\tfrac"`` read by JSON as TAB + ``frac`` becomes ``\\tfrac`` again (answers only:
    questions may hold real tabs before words)."""
    return _LOST_BACKSLASH.sub(lambda match: _LOST_ESCAPES[match.group()], text)


def _clean(text: str) -> str:
    """Formatting that never carries value; the result is what math-verify is given."""
    text = restore_lost_backslashes(text)
    if has_box(text):
        text = extract_answer(text) or ""
    if "####" in text:  # a GSM8K answer line, or a whole worked solution ending in one
        text = text.rsplit("####", 1)[1]
    text = text.strip()
    text = text.replace("−", "-").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = text.replace("\\varnothing", "\\emptyset")  # math-verify reads \varnothing as a symbol
    text = _LEFT_RIGHT.sub("", text)
    text = _GLUED_THOUSANDS.sub("", text)
    text = _SPACING.sub(" ", text)
    text = _DEGREES.sub("", text)
    # Percent is dropped (module docstring); money signs carry no value either.
    text = re.sub(r"\\?%", "", text).replace("\\$", "").replace("$", "")
    text = text.strip().rstrip(".").strip()
    if len(text) <= MAX_ANSWER_CHARS:
        text = _SCALED.sub(_scaled_value, text)
    wrapped = _TEXT_WRAPPER.fullmatch(text)
    if wrapped and _WORD_UNITS.fullmatch(wrapped.group(1).strip()):
        text = wrapped.group(1).strip()  # `\text{5 inches}` is `5 inches`
    units = _WORD_UNITS.fullmatch(text) if len(text) <= MAX_ANSWER_CHARS else None
    if units and not _NOT_UNITS & {word.strip(".").lower() for word in units.group(2).split()}:
        text = units.group(1)
    return text


def _scaled_value(match: re.Match[str]) -> str:
    """``1.5 million`` -> ``1500000``; a value that is not whole stays a product."""
    number, scale = match.group("number"), _SCALES[match.group("scale")]
    value = Fraction(number) * scale
    return str(value.numerator) if value.denominator == 1 else f"{number} \\times {scale}"


def normalize_answer(text: str) -> str:
    """A canonical string for cheap comparison: two answers with equal forms are equal.

    On top of the cleaning given to math-verify: no whitespace, no ``\\text{}`` wrapper, no
    thousands separators, ``(B)`` -> ``B``. Not a parser: unequal forms may still be equivalent.
    """
    if not isinstance(text, str):
        return ""
    return _normal_form(_clean(text))


def _normal_form(text: str) -> str:
    text = _TEXT_WRAPPER.sub(r"\1", text)
    # Spaces go, except between two digits: `2 1/2` is a mixed number, not `21/2`.
    spaced = re.sub(r"\s+", " ", text)
    text = _LOOSE_SPACE.sub("", spaced)
    thousands = _THOUSANDS.fullmatch(text)
    # A comma followed by a space separates list items: `1, 100` is two answers, not 1100.
    if thousands and not (thousands.group("sep") == "," and re.search(r"\d, \d", spaced)):
        text = text.replace(thousands.group("sep"), "")
    choice = re.fullmatch(r"\(([A-Za-z])\)", text)
    return choice.group(1) if choice else text


# --------------------------------------------------------------------------- plain numbers

_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_FRACTION = re.compile(r"([+-]?)(?:(\d+)/(\d+)|\\frac\{(\d+)\}\{(\d+)\}|\\frac(\d)(\d))")
# A mixed number, `2 1/2` or `2\\frac{1}{2}` (normal forms): 5/2, never 21/2 or 2 * 1/2.
_MIXED = re.compile(r"([+-]?)(\d+)(?: (\d+)/(\d+)|\\frac\{(\d+)\}\{(\d+)\})")


def _as_number(form: str) -> tuple[Fraction, bool] | None:
    """A normal form that is a plain number, as (exact value, written as a decimal?)."""
    if len(form) > 64:
        return None
    if _DECIMAL.fullmatch(form):
        return Fraction(form), "." in form
    match = _FRACTION.fullmatch(form) or _MIXED.fullmatch(form)
    if match is None:
        return None
    sign, *parts = match.groups()
    numbers = [int(part) for part in parts if part is not None]
    whole, (numerator, denominator) = (numbers[0] if len(numbers) == 3 else 0), numbers[-2:]
    if denominator == 0 or (len(numbers) == 3 and numerator >= denominator):
        return None  # `2 3/2` is no mixed number: math-verify decides
    value = whole + Fraction(numerator, denominator)
    return (-value if sign == "-" else value), False


_OPENERS, _CLOSERS = "([{", ")]}"
# A number written in a base, `52_8`, `4210_{5}`, `152A_{11}`, `0.0011_{2}` (normal forms).
_BASED = re.compile(r"[+-]?\d[0-9A-Za-z]*(?:\.[0-9A-Za-z]+)?_(?:(\d+)|\{(\d+)\})")


def _base(form: str) -> int | None:
    """The base of a normal form that is one number written in a base, else None."""
    match = _BASED.fullmatch(form)
    return int(match.group(1) or match.group(2)) if match else None


def _enclosure(form: str) -> str | None:
    """The brackets around a whole normal form (``(]`` for ``(1,3]``, ``{}`` for ``\\{1\\}``).

    None when the form is not one bracketed group: ``(1,2)\\cup(3,4)`` is two.
    """
    tokens = re.findall(r"\\[{}]|\\.|.", form)
    depth = 0
    for index, token in enumerate(tokens):
        bracket = token[-1] if len(token) == 1 or token[-1] in "{}" else ""
        if bracket and bracket in _OPENERS:
            depth += 1
        elif bracket and bracket in _CLOSERS:
            depth -= 1
            if depth == 0 and index < len(tokens) - 1:
                return None
        elif index == 0:
            return None
    if depth != 0 or len(tokens) < 2:
        return None
    return tokens[0][-1] + tokens[-1][-1]


def _as_text(value: object) -> str | None:
    """Answers are text; a Python number (a ground truth read from JSON) is taken as printed."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, Fraction)) and not isinstance(value, bool):
        return str(value)
    return None


def _fast_verdict(pred: object, truth: object) -> bool | tuple[str, str]:
    """Decide a pair without sympy, or hand back the cleaned pair for the worker."""
    pred, truth = _as_text(pred), _as_text(truth)
    if pred is None or truth is None:
        return False
    pred_clean, truth_clean = _clean(pred), _clean(truth)
    if not pred_clean or not truth_clean:
        return False
    pred_form, truth_form = _normal_form(pred_clean), _normal_form(truth_clean)
    if pred_form == truth_form:
        return True
    pred_number, truth_number = _as_number(pred_form), _as_number(truth_form)
    if pred_number is not None and truth_number is not None:
        return numbers_agree(*pred_number, *truth_number)
    if len(pred_clean) > MAX_ANSWER_CHARS or len(truth_clean) > MAX_ANSWER_CHARS:
        return False
    pred_base, truth_base = _base(pred_form), _base(truth_form)
    if pred_base is not None and truth_base is not None and pred_base != truth_base:
        return False  # math-verify drops the subscript: `52_9` would equal `52_8`
    pred_brackets, truth_brackets = _enclosure(pred_form), _enclosure(truth_form)
    if pred_brackets and truth_brackets and pred_brackets != truth_brackets:
        # A pair, an interval, a set and a list differ: `(1,2)` is not `[1,2]` nor `\\{1,2\\}`
        # (math-verify equates an open interval with any two-element set or list).
        return False
    return _for_worker(pred_clean, pred_form, pred_number), _for_worker(
        truth_clean, truth_form, truth_number
    )


def _for_worker(clean: str, form: str, number: tuple[Fraction, bool] | None) -> str:
    """What math-verify is given: a plain number in a form it reads as that number
    (``1 000`` and ``2 1/2`` are not LaTeX for 1000 and 5/2), else the cleaned answer."""
    if number is None:
        return clean
    if _MIXED.fullmatch(form):
        return f"{number[0].numerator}/{number[0].denominator}"
    return form


# --------------------------------------------------------------------------- grader


class Grader:
    """Grades answers with a bounded math-verify worker; safe to share between threads.

    Calls from several threads queue on one worker process. Use it as a context manager, or
    call :meth:`close`, to stop the worker; the module functions share one default grader.
    """

    def __init__(
        self,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if memory_mb < 0:
            raise ValueError(f"memory_mb must be >= 0 (0: no limit), got {memory_mb!r}")
        if not startup_timeout_s > 0:
            raise ValueError(
                f"startup_timeout_s must be a positive number of seconds, got {startup_timeout_s!r}"
            )
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb)
        self.startup_timeout_s = float(startup_timeout_s)
        self._lock = threading.Lock()
        self._worker: WorkerProcess | None = None
        self._owner_pid = os.getpid()
        _live_graders.add(self)

    def is_equivalent(self, pred: str | None, truth: str) -> bool:
        """True when ``pred`` is a correct answer for ``truth``; never raises, never hangs."""
        return self.grade_many([(pred, truth)])[0]

    def grade_many(self, pairs: Iterable[tuple[str | None, str]]) -> list[bool]:
        """:meth:`is_equivalent` for many ``(pred, truth)`` pairs, in order.

        Pairs the fast path cannot decide share one lock acquisition and one warm worker; a
        malformed pair is simply False.
        """
        verdicts: list[bool] = []
        pending: list[tuple[int, str, str]] = []
        for pair in pairs:
            try:
                pred, truth = pair
                verdict = _fast_verdict(pred, truth)
            except Exception:  # noqa: BLE001 - grading never raises
                verdict = False
            if isinstance(verdict, tuple):
                pending.append((len(verdicts), *verdict))
                verdict = False
            verdicts.append(verdict)
        if pending:
            with self._lock:
                for index, pred, truth in pending:
                    verdicts[index] = self._ask_worker(pred, truth)
        return verdicts

    def _ask_worker(self, pred: str, truth: str) -> bool:
        """One bounded call; a worker that overruns is killed and a fresh one started at once."""
        try:
            worker = self._live_worker()
            verdict = worker.ask(pred, truth, self.timeout_s, self.startup_timeout_s)
        except WorkerStartError as error:
            logger.error("answer grading unavailable, counting the answer wrong: %s", error)
            self._stop_worker()
            return False
        except Exception as error:  # noqa: BLE001 - e.g. a pipe broken by a dying worker
            logger.warning("grading worker failed (%s); starting a fresh one", error)
            self._stop_worker()
            return False
        if verdict is None:
            logger.debug("grading overran %.1f s: %r vs %r", self.timeout_s, pred[:80], truth[:80])
            self._stop_worker()
            self._worker = WorkerProcess(self.memory_mb)  # warms up while the caller goes on
            return False
        return verdict

    def _live_worker(self) -> WorkerProcess:
        if os.getpid() != self._owner_pid:  # forked: the worker and its pipes are the parent's
            if self._worker is not None:
                self._worker.abandon()
            self._worker, self._owner_pid = None, os.getpid()
        if self._worker is None:
            self._worker = WorkerProcess(self.memory_mb)
        return self._worker

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            with contextlib.suppress(Exception):  # a worker that is already gone is stopped
                worker.kill()

    def close(self) -> None:
        """Stop the worker process (a later call starts a new one)."""
        with self._lock:
            if os.getpid() == self._owner_pid:
                self._stop_worker()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_default_grader: Grader | None = None
_default_lock = threading.Lock()
_live_graders: weakref.WeakSet[Grader] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A lock held by another thread at fork time would stay held forever in the child."""
    global _default_lock
    _default_lock = threading.Lock()
    for grader in list(_live_graders):
        grader._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def default_grader() -> Grader:
    """The grader behind the module functions, created on first use, stopped at exit."""
    global _default_grader
    with _default_lock:
        if _default_grader is None:
            _default_grader = Grader()
            atexit.register(_default_grader.close)
        return _default_grader


def is_equivalent(pred: str | None, truth: str) -> bool:
    """True when the predicted answer ``pred`` is equivalent to the ground truth ``truth``.

    Never raises (bad input is simply not equivalent) and never hangs: each call that needs
    math-verify is bounded by :data:`DEFAULT_TIMEOUT_S`; build a :class:`Grader` for another
    bound. Safe from any thread.
    """
    try:
        return default_grader().is_equivalent(pred, truth)
    except Exception:  # noqa: BLE001
        return False


def grade_many(pairs: Iterable[tuple[str | None, str]]) -> list[bool]:
    """:func:`is_equivalent` for many ``(pred, truth)`` pairs, in order."""
    return default_grader().grade_many(pairs)
