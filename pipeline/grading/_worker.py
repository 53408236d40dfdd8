"""The math-verify side of grading, run inside a disposable worker process.

:mod:`pipeline.grading.answer` never calls math-verify in the caller's process: sympy can spend
unbounded time (and memory) on inputs such as ``2^{2^{2^{100}}}``, and math-verify's own timeout
uses SIGALRM, which fails off the main thread (docs/algorithm.md, deviations). So this module runs as a
child process (``python -m pipeline.grading._worker``) that the parent kills and replaces on
overrun.
Its signal-based timeouts are switched off (``parsing_timeout=None``, ``timeout_seconds=None``).

Protocol: one JSON object per line on stdin, ``{"pred": str, "truth": str}``; one line per
request on stdout, ``{"ok": bool}``. The worker prints ``{"ready": true}`` once its imports are
done, so the parent's per-call bound never pays for start-up. EOF on stdin ends the worker.

The module imports only the standard library, sympy, math-verify and the stdlib-only
:mod:`pipeline.grading._numbers`, never torch or the rest of the pipeline, so a fresh worker is ready in
about a second.
"""

from __future__ import annotations

import json
import logging
import re
import resource
import signal
import sys
from fractions import Fraction
from itertools import product
from typing import Any

from math_verify import LatexExtractionConfig, parse, verify
from sympy import And, Basic, Eq, Expr, FiniteSet, Float, I, Interval, N, S, Set, Symbol, Tuple
from sympy.core.evalf import PrecisionExhausted
from sympy.core.function import AppliedUndef
from sympy.core.relational import Relational

from pipeline.grading._numbers import numbers_agree

# Parse every answer as LaTeX: wrapped in \boxed{} it is taken whole, whatever it looks like.
_LATEX = [LatexExtractionConfig(boxed_match_priority=0)]

# Guard of docs/algorithm.md (deviations): math-verify compares exact numbers with `evalf(chop=True)`, so two
# tiny exact values (1/2004! and 1/2006!) both chop to 0 and pass. Exact numbers must agree
# exactly (see _exact_numbers_differ); where sympy cannot tell, to this relative precision,
# evaluated with this many digits.
_EXACT_REL_TOL = 1e-20
_DIGITS = 50
# Working precision (digits) up to which a difference of two exact numbers is sought.
_MAXN = 200
# Answers compared once before the worker says it is ready: sympy and latex2sympy load parts
# lazily, and a first call that paid for that could overrun the bound.
_WARM_UP = (
    ("1", "1"),
    ("\\frac{\\pi}{2}", "pi/2"),
    ("x = 0.5", "\\frac{1}{2}"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\{1, 2\\}", "(1, 2]"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(1, 2)"),
    ("6 - 5i", "x^2 + 1"),
)


# --------------------------------------------------------------------------- python output


_SCI = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)\b")
_RATIONAL = re.compile(r"Rational\(\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*\)")
_INTERVAL = re.compile(r"^Interval(?:\.(open|Lopen|Ropen))?\((.*)\)$")
_INTERVAL_BRACKETS = {None: "[]", "open": "()", "Lopen": "(]", "Ropen": "[)"}
# sympy's names -> LaTeX; `5*I` becomes `5i` so math-verify sees a complex number; sympy's
# log is the natural logarithm, while math-verify reads \log as base 10.
_NAMES = (
    (r"\bpi\b", r"\\pi "),
    (r"\boo\b", r"\\infty "),
    (r"\s*\*\s*I\b", "i"),
    (r"\bI\b", "i"),
    (r"\bE\b", "e"),
    (r"\blog\(", r"\\ln("),
)
_PYTHONISH = re.compile(
    r"\*\*|\bpi\b|\boo\b|\bI\b|\bE\b|\bexp\(|\blog\(|Rational\(|Interval|\d[eE][+-]?\d|^\[|^\{"
)


def python_to_latex(text: str) -> str | None:
    """LaTeX for an answer a program printed (``pi/2``, ``x**2``, ``[1, 2]``), else None.

    The policy's program prints Python and sympy values (docs/algorithm.md, the output block),
    which latex2sympy misreads (``pi`` is ``p*i``, ``x**5`` is nonsense). Translating the text is
    safer than ``sympy.parse_expr``, which runs ``eval`` on what a model wrote.
    """
    if "\\" in text or "^" in text or not _PYTHONISH.search(text):
        return None
    out = text.strip()
    interval = _INTERVAL.match(out)
    if interval:
        left, right = _INTERVAL_BRACKETS[interval.group(1)]
        out = left + interval.group(2) + right
    elif out.startswith("[") and out.endswith("]"):  # a list of solutions, e.g. from solve()
        out = out[1:-1]
    elif out.startswith("{") and out.endswith("}"):  # a Python or sympy set
        out = "\\{" + out[1:-1] + "\\}"
    out = _RATIONAL.sub(r"\\frac{\1}{\2}", out)
    out = _SCI.sub(r"\1\\times 10^{\2}", out)
    for pattern, latex in _NAMES:
        out = re.sub(pattern, latex, out)
    return _powers_to_latex(_exp_to_latex(out))


def _exp_to_latex(text: str) -> str:
    """``exp(x)`` -> ``e^{x}``."""
    at = re.search(r"\bexp\(", text)
    if at is None:
        return text
    close = _close_paren(text, at.end() - 1)
    argument = text[at.end() : close - 1]
    return text[: at.start()] + "e^{" + _exp_to_latex(argument) + "}" + _exp_to_latex(text[close:])


def _powers_to_latex(text: str) -> str:
    """``a**b**c`` -> ``a^{b^{c}}`` (Python's ``**`` is right-associative)."""
    at = text.find("**")
    if at == -1:
        return text
    end = _operand_end(text, at + 2)
    exponent = text[at + 2 : end]
    if exponent.startswith("(") and exponent.endswith(")"):
        exponent = exponent[1:-1]
    return text[:at] + "^{" + _powers_to_latex(exponent) + "}" + _powers_to_latex(text[end:])


def _operand_end(text: str, start: int) -> int:
    """End of the operand of ``**`` that starts at ``start``, including a chained ``**``."""
    i = start
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] in "+-":
        i += 1
    if i < len(text) and text[i] == "(":
        i = _close_paren(text, i)
    else:
        while i < len(text) and (text[i].isalnum() or text[i] in "._"):
            i += 1
        if i < len(text) and text[i] == "(":  # a call such as sqrt(2)
            i = _close_paren(text, i)
    if text.startswith("**", i):
        return _operand_end(text, i + 2)
    return i


def _close_paren(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    return len(text)


# --------------------------------------------------------------------------- comparison


def parse_answer(answer: str) -> list[Any]:
    """math-verify's readings of one answer: LaTeX, plus the Python translation if it applies."""
    readings = parse("\\boxed{" + answer + "}", extraction_config=_LATEX, parsing_timeout=None)
    translated = python_to_latex(answer)
    if translated is not None:
        readings += parse(
            "\\boxed{" + translated + "}", extraction_config=_LATEX, parsing_timeout=None
        )
    return readings


def equivalent(pred: str, truth: str) -> bool:
    """math-verify's verdict on two cleaned answers, with the false positives of 5b removed.

    Unbounded in time: call it only inside the worker process.
    """
    golds, preds = parse_answer(truth), parse_answer(pred)
    return any(_readings_equal(gold, guess) for gold, guess in product(golds, preds))


def _readings_equal(gold: Any, pred: Any) -> bool:
    # latex2sympy makes `i` a real symbol in `2i\sqrt{2}` and a non-real one in `2\sqrt{2}i`,
    # and two symbols that differ so never compare equal: both become the imaginary unit.
    gold, pred = _imaginary_unit(gold), _imaginary_unit(pred)
    floats = _compare_floats(gold, pred)
    if floats is not None:
        return floats
    # allow_set_relation_comp: `1 < x \le 3` answers `(1, 3]` (compared as sets, ends and all).
    return verify(
        gold, pred, allow_set_relation_comp=True, timeout_seconds=None
    ) and not _false_positive(gold, pred)


def _compare_floats(gold: Any, pred: Any) -> bool | None:
    """A float against a number follows the rule of :mod:`pipeline.grading._numbers` (as the fast path
    does), not math-verify's, which compares a Float with an Integer exactly. Complex values are
    compared part by part. None: not such a pair."""
    gold, pred = _imaginary_unit(gold), _imaginary_unit(pred)
    if not (_is_number(gold) and _is_number(pred)) or not (gold.has(Float) or pred.has(Float)):
        return None
    x, y = _exact(gold), _exact(pred)
    if x is None or y is None:
        return None
    return all(
        numbers_agree(x_part, gold.has(Float), y_part, pred.has(Float))
        for x_part, y_part in zip(x, y)
    )


def _imaginary_unit(value: Any) -> Any:
    """``0.2 + 0.6i`` as a complex number: latex2sympy leaves ``i`` a symbol, which the float
    rule cannot compare with ``\\frac{1}{5} + \\frac{3}{5}i``, and which is real or not
    depending on where it stands (``2i\\sqrt{2}``, ``2\\sqrt{2}i``)."""
    if isinstance(value, Basic) and {s.name for s in value.free_symbols} == {"i"}:
        try:
            return value.subs({s: I for s in value.free_symbols})
        except Exception:  # noqa: BLE001 - e.g. an interval cannot hold i: keep the reading
            return value
    return value


def _exact(number: Basic) -> tuple[Fraction, Fraction] | None:
    """Real and imaginary parts as fractions, through 50 digits; None when not finite."""
    value = N(number, _DIGITS)
    if not value.is_finite:
        return None
    real, imaginary = value.as_real_imag()
    if not (real.is_Number and imaginary.is_Number):
        return None
    return Fraction(str(real)), Fraction(str(imaginary))


def _names_the_unknown(side: Basic) -> bool:
    """The left side of an equation that states an answer: `x` in `x = 5`, `f(x)` in
    `f(x) = 2x + 3`."""
    return isinstance(side, (Symbol, AppliedUndef))


def _false_positive(gold: Any, pred: Any) -> bool:
    """True when math-verify accepted a pair that docs/algorithm.md (deviations) lists as wrongly accepted."""
    if not isinstance(gold, Basic) or not isinstance(pred, Basic):
        return False
    if isinstance(gold, Set) and isinstance(pred, (Relational, And)) and not isinstance(pred, Eq):
        # An inequality answers an interval (math-verify compared the two as sets) when it is
        # solved for the unknown: `x > 3` answers `(3, \infty)`, `2x > 6` does not.
        return not _solved(pred) or _numbers_differ(gold, pred.as_set())
    gold_eq, pred_eq = isinstance(gold, Relational), isinstance(pred, Relational)
    if pred_eq and not gold_eq:
        # `x = 5` answers `5`, but `2x + 1 = 5` does not (math-verify keeps only the right side).
        if not (isinstance(pred, Eq) and _names_the_unknown(pred.lhs)):
            return True
        pred = pred.rhs
    elif gold_eq and pred_eq:
        if isinstance(gold, Eq) and isinstance(pred, Eq):
            gold, pred = gold.rhs, pred.rhs
    elif isinstance(gold, Eq) and not isinstance(pred, Set):
        # The same rule the other way round: `5` answers `x = 5`, but not `x + y = 5`
        # (math-verify unwraps an equation whose left side is any expression of symbols).
        if not _names_the_unknown(gold.lhs):
            return True
        gold = gold.rhs
    return _numbers_differ(gold, pred)


def _solved(relation: Relational | And) -> bool:
    """Whether every comparison in ``relation`` has the bare unknown on one side and a number
    on the other (``-3 < x < 3`` is two such comparisons)."""
    parts = relation.args if isinstance(relation, And) else (relation,)
    return all(
        isinstance(part, Relational)
        and any(isinstance(side, Symbol) for side in part.args)
        and any(_is_number(side) for side in part.args)
        for part in parts
    )


def _numbers_differ(gold: Any, pred: Any) -> bool:
    """Two numbers (or tuples, intervals, sets of them) that math-verify's rounding and chopping
    made equal."""
    if isinstance(gold, Tuple) and isinstance(pred, Tuple) and len(gold) == len(pred):
        return any(_numbers_differ(g, p) for g, p in zip(gold.args, pred.args))
    if isinstance(gold, Interval) and isinstance(pred, Interval):
        return _numbers_differ(gold.start, pred.start) or _numbers_differ(gold.end, pred.end)
    if isinstance(gold, FiniteSet) and isinstance(pred, FiniteSet):
        # Order-free: some element of one has no equal in the other.
        return any(all(_numbers_differ(g, p) for g in gold.args) for p in pred.args) or any(
            all(_numbers_differ(g, p) for p in pred.args) for g in gold.args
        )
    if isinstance(gold, Eq) and isinstance(pred, Eq):  # `a = 1/2006!` in a list of equations
        return _numbers_differ(gold.lhs, pred.lhs) or _numbers_differ(gold.rhs, pred.rhs)
    if not _is_number(gold) or not _is_number(pred):
        return _differ_by_a_constant(gold, pred)
    if gold.has(Float) or pred.has(Float):
        agree = _compare_floats(gold, pred)
        return agree is False
    return _exact_numbers_differ(gold, pred)


def _differ_by_a_constant(gold: Any, pred: Any) -> bool:
    """Two exact expressions whose difference is a non-zero number: ``x^2 + 1/2004!`` and
    ``x^2 + 1/2006!``, which math-verify equates (the difference evaluates, chopped, to 0)."""
    if not (isinstance(gold, Expr) and isinstance(pred, Expr)):
        return False
    if gold.has(Float) or pred.has(Float):  # the float rule leaves tiny differences alone
        return False
    try:
        difference = gold - pred
    except Exception:  # noqa: BLE001 - e.g. expressions sympy cannot subtract: math-verify decides
        return False
    return _is_number(difference) and _exact_numbers_differ(difference, S.Zero)


def _exact_numbers_differ(gold: Basic, pred: Basic) -> bool:
    """Whether two exact numbers differ, by any amount: ``1 + 10^{-30}`` is not ``1``.

    sympy's evalf of the difference raises its working precision until the digits asked for are
    right, so a true difference (however small) comes back non-zero, while a true zero exhausts
    the precision (``strict=True`` raises) or comes back as 0. Where evalf cannot say, fall back
    to a relative comparison of the two values.
    """
    try:
        difference = N(gold - pred, 15, maxn=_MAXN, strict=True)
        if difference.is_Number and difference.is_finite:  # not oo - oo, which is nan
            return bool(difference != 0)
    except PrecisionExhausted:
        return False  # zero to _MAXN digits: equal, as math-verify says
    except Exception:  # noqa: BLE001 - sympy fails in many ways; use the relative rule below
        pass
    a, b = N(gold, _DIGITS), N(pred, _DIGITS)
    if not (a.is_finite and b.is_finite):
        return False
    return bool(abs(a - b) > _EXACT_REL_TOL * max(abs(a), abs(b)))


def _is_number(value: Any) -> bool:
    return isinstance(value, Basic) and getattr(value, "is_number", False) is True


# --------------------------------------------------------------------------- process loop


def _limit_memory(memory_mb: int) -> None:
    """Cap the address space, so a huge integer fails with MemoryError instead of eating RAM."""
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _answer(request: dict[str, Any]) -> bool:
    try:
        return equivalent(str(request["pred"]), str(request["truth"]))
    except BaseException:  # noqa: BLE001 - any failure (MemoryError, RecursionError) is "wrong"
        return False


def main(argv: list[str]) -> None:
    logging.disable(logging.CRITICAL)  # math-verify warns on every call with timeouts off
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends us
    _limit_memory(int(argv[1]) if len(argv) > 1 else 0)
    for pred, truth in _WARM_UP:
        _answer({"pred": pred, "truth": truth})
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            request = {}
        out.write('{"ok": true}\n' if _answer(request) else '{"ok": false}\n')
        out.flush()


if __name__ == "__main__":
    main(sys.argv)
