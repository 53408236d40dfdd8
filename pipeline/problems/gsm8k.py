"""GSM8K worked solutions -> reference solutions in the step format (docs/algorithm.md, warm start).

A GSM8K solution is prose with calculator annotations and a final ``#### N`` line::

    Natalia sold 48/2 = <<48/2=24>>24 clips in May.
    Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.
    #### 72

Each line that calculates becomes one code step: the prose is its comment, each calculation is
assigned to a variable, and a number that an earlier line computed (and the question does not
mention) is replaced by that line's variable, so the steps form one real program::

    # Step 1: Natalia sold 48/2 = 24 clips in May.
    clips = 48 / 2
    # Step 2: Natalia sold 48+24 = 72 clips altogether in April and May.
    clips_2 = 48 + clips
    print(round(clips_2))

Lines without a calculation are kept as comments of the next step. Expressions are parsed and
evaluated here with Python's own arithmetic (never ``eval``), so the output block holds exactly
what the program prints, and a solution whose program would not print the ``####`` answer is
refused (``solution=None`` with a reason) rather than emitted wrong.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import math
import operator
import re
import warnings
from dataclasses import dataclass
from fractions import Fraction

from pipeline.search.steps import answer_step, code_step, last_code_step, render_solution

Number = int | float

FINAL_MARK = "####"

_ANNOTATION = re.compile(r"<<([^<>]*)>>")
# A prose calculation's right side, e.g. "= $36" or "= 40%".
_PROSE_RESULT = re.compile(
    r"=\s*\$?\s*(-?(?:\d+\s+\d+/\d+|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+))(\s*%)?"
)
# Unit words between a number and an operator: "4 hours * 60 minutes/hour =" -> "4 * 60 =".
_UNITS = re.compile(r"(\d%?|\))\s+(?:[A-Za-z][\w/'.]*\s+){0,2}?[A-Za-z][\w/'.]*(?=\s*[-+*/×÷−–=)])")
_MIXED = re.compile(r"(?<![\d./])(\d+)\s+(\d+)/(\d+)")
_IMPLICIT_TIMES = re.compile(r"(?<=[\d)])\s*(?=\()")
_PROSE_CHARS = frozenset("0123456789.,$%()+-*/xX×÷−–· ")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TIMES = re.compile(r"(?<=[\d)%])\s*[xX×·]\s*(?=[\d($.])")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*%(?!\s*[\d(.])")
_LEADING_ZEROS = re.compile(r"(?<![\d.])0+(?=\d)")
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+")
_WORD = re.compile(r"[A-Za-z]+")

# Numbers a question states in words: substituting an earlier result for them would misname it.
_WORD_NUMBERS = {
    "half": 2,
    "twice": 2,
    "double": 2,
    "triple": 3,
    "dozen": 12,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "quarter": 4,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
}
# Constants too common to be read as "the result of an earlier step".
_COMMON_CONSTANTS = frozenset({0, 1, 2, 100})
# Bounds on what a calculation may be: GSM8K's longest annotation has 36 characters and its
# numbers stay far below 1e15. Beyond them Python's parser and float() raise (RecursionError,
# OverflowError) instead of refusing, which would end a whole load with a traceback.
_MAX_EXPRESSION_CHARS = 200
_MAX_DEPTH = 40
_MAX_VALUE = 1e15

_STOPWORDS = frozenset(
    word
    for line in (
        "a an and are as at be but by each every for from had has have he her his if in into is",
        "it its more less of on or our per she so than that the their them then there they this",
        "those to was we were which who will with would you your after before over under about",
        "times while when where what how much many all also only just",
    )
    for word in line.split()
)
_RESERVED = frozenset(keyword.kwlist) | frozenset(dir(builtins))

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class GSM8KFormatError(ValueError):
    """The text is not a GSM8K worked solution (no ``####`` answer line)."""


@dataclass(frozen=True)
class Conversion:
    """Result of converting one worked solution; ``solution`` is None when it was refused."""

    answer: str
    solution: str | None
    reason: str | None = None  # why the solution was refused
    literal_steps: int = 0  # calculations kept as their annotated result (expression unusable)


@dataclass(frozen=True)
class _Calculation:
    expression: str
    result: str  # as written, without "$"; may end in "%"
    annotated: bool
    name_hint: str | None


# --------------------------------------------------------------------------- answers


def final_answer(worked: str) -> str:
    """The ``#### N`` answer with thousands separators removed (``1,000`` -> ``1000``)."""
    if FINAL_MARK not in worked:
        raise GSM8KFormatError("no '#### <answer>' line in the worked solution")
    answer = worked.rsplit(FINAL_MARK, 1)[1].strip()
    return _THOUSANDS.sub("", answer).replace("$", "").strip()


def looks_like_gsm8k(answer: object) -> bool:
    """True when an answer field holds a GSM8K worked solution rather than a bare answer."""
    return isinstance(answer, str) and FINAL_MARK in answer


# --------------------------------------------------------------------------- expressions


def to_python(expression: str) -> ast.expr | None:
    """Parse a calculator expression as written in GSM8K into a Python AST, or None.

    Handles ``$``, thousands commas, ``x``/``×`` for times, ``÷``, unicode minus signs, ``^``
    for powers and ``N%`` for N/100. Only numbers and arithmetic are accepted.
    """
    text = expression.replace("$", "").replace("÷", "/").replace("−", "-").replace("–", "-")
    text = _THOUSANDS.sub("", text)
    text = _MIXED.sub(r"(\1 + \2/\3)", text)
    text = _TIMES.sub(" * ", text).replace("^", "**")
    text = _IMPLICIT_TIMES.sub(" * ", text)
    text = _PERCENT.sub(r"(\1 / 100)", text)
    text = _LEADING_ZEROS.sub("", text).strip()
    if not text or len(text) > _MAX_EXPRESSION_CHARS:
        return None
    try:
        with warnings.catch_warnings():  # "1ex" warns "invalid decimal literal" on stderr
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: a NUL byte
        return None
    return tree if _depth(tree) <= _MAX_DEPTH and _is_arithmetic(tree) else None


def _depth(tree: ast.AST) -> int:
    """Nesting depth of an AST, counted without recursion (the tree may be very deep)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _is_arithmetic(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float) and abs(node.value) <= _MAX_VALUE  # inf too
    if isinstance(node, ast.Name):
        return True
    if isinstance(node, ast.BinOp):
        return type(node.op) in _BINARY and _is_arithmetic(node.left) and _is_arithmetic(node.right)
    if isinstance(node, ast.UnaryOp):
        return type(node.op) in _UNARY and _is_arithmetic(node.operand)
    return False


def _has_operator(node: ast.expr) -> bool:
    return any(isinstance(sub, (ast.BinOp, ast.UnaryOp)) for sub in ast.walk(node))


def evaluate(node: ast.expr, env: dict[str, Number]) -> Number:
    """Evaluate an arithmetic AST exactly as Python would run it (same int/float results).

    Raises ArithmeticError or ValueError for what the program could not print sensibly:
    division by zero, unknown names, huge powers, non-finite results.
    """
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise ValueError(f"unknown name {node.id!r}")
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](evaluate(node.operand, env))
    assert isinstance(node, ast.BinOp)
    left, right = evaluate(node.left, env), evaluate(node.right, env)
    if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 10**6):
        raise ArithmeticError("power too large")
    value = _BINARY[type(node.op)](left, right)
    if isinstance(value, complex) or not math.isfinite(value) or abs(value) > _MAX_VALUE:
        raise ArithmeticError("not a finite real number of sensible size")
    return value


def _substitute(node: ast.expr, known: dict[float, str], stated: set[Fraction]) -> ast.expr:
    """Replace numbers that an earlier step computed (and the question does not state)."""

    class Substitute(ast.NodeTransformer):
        def visit_Constant(self, constant: ast.Constant) -> ast.AST:
            value = constant.value
            if value in _COMMON_CONSTANTS or Fraction(value) in stated:
                return constant
            name = known.get(float(value))
            return ast.Name(id=name, ctx=ast.Load()) if name else constant

    return Substitute().visit(node)


# --------------------------------------------------------------------------- lines


def _calculations(line: str) -> list[_Calculation]:
    """Annotated calculations of a line; failing those, prose ones like ``20/4 = $5``."""
    found = []
    for match in _ANNOTATION.finditer(line):
        expression, _, result = match.group(1).rpartition("=")
        hint = _name_hint(line[match.end() :])
        found.append(_Calculation(expression, result.replace("$", "").strip(), True, hint))
    if found:
        return found
    line = _UNITS.sub(r"\1", line)
    for match in _PROSE_RESULT.finditer(line):
        left = _prose_left_side(line[: match.start()])
        if left:
            result = match.group(1) + ("%" if match.group(2) else "")
            found.append(_Calculation(left, result, False, _name_hint(line[match.end() :])))
    return found


def _prose_left_side(before: str) -> str:
    """The arithmetic immediately left of an ``=``: the longest run of number/operator chars."""
    start = len(before)
    while start > 0 and before[start - 1] in _PROSE_CHARS:
        start -= 1
    left = before[start:].rsplit(", ", 1)[-1]
    left = re.sub(r"^[^\d$(.]*", "", left).rstrip()
    while left.startswith("(") and left.count("(") > left.count(")"):
        left = left[1:]
    return left


def _name_hint(after: str) -> str | None:
    """A variable name from the words after a result: ``24 clips in May`` -> ``clips``."""
    after = re.sub(r"^\s*\$?\s*-?[\d,]*\.?\d*\s*%?", "", after)
    words = [word.lower() for word in _WORD.findall(after[:40])]
    if not words:
        return None
    if words[0] == "per" and len(words) > 1 and words[1] not in _STOPWORDS:
        return f"per_{words[1]}"
    word = words[0]
    if len(word) < 3 or word in _STOPWORDS or word in _RESERVED:
        return None
    return word


def _prose(line: str) -> str:
    """A line's text for a comment: annotations dropped, whitespace collapsed."""
    return " ".join(_ANNOTATION.sub("", line).split())


def _parse_result(result: str) -> tuple[Fraction, Fraction] | None:
    """The annotated/prose result as a number and the rounding it was written with."""
    percent = result.endswith("%")
    text = _THOUSANDS.sub("", result.rstrip("%").strip())
    whole, _, fraction = text.partition(" ")
    try:
        value = Fraction(whole) + Fraction(fraction or 0)
    except (ValueError, ZeroDivisionError):
        return None
    if abs(value) > _MAX_VALUE:  # "1e309": no program prints it, and float() would overflow
        return None
    decimals = len(text.split(".", 1)[1]) if "." in text else 0
    tolerance = Fraction(1, 2 * 10**decimals)
    if percent:
        value, tolerance = value / 100, tolerance / 100
    return value, tolerance


def _stated_numbers(question: str) -> set[Fraction]:
    numbers = {Fraction(_THOUSANDS.sub("", text)) for text in _NUMBER.findall(question)}
    words = {word.lower() for word in _WORD.findall(question)}
    numbers.update(Fraction(value) for word, value in _WORD_NUMBERS.items() if word in words)
    return numbers


# --------------------------------------------------------------------------- conversion


@dataclass
class _Program:
    """The program being built: variables, their values, and the steps so far."""

    stated: set[Fraction]
    values: dict[str, Number]
    percent: dict[str, bool]
    known: dict[float, str]
    literal_steps: int = 0

    def name(self, hint: str | None) -> str:
        base = hint or f"step{len(self.values) + 1}"
        name, suffix = base, 2
        while name in self.values or name in _RESERVED:
            name, suffix = f"{base}_{suffix}", suffix + 1
        return name

    def assign(self, calculation: _Calculation) -> str | None:
        """One line of code for a calculation, or None when a prose one does not check out."""
        parsed = _parse_result(calculation.result)
        tree = to_python(calculation.expression)
        value: Number | None = None
        if tree is not None and (calculation.annotated or _has_operator(tree)):
            tree = _substitute(tree, self.known, self.stated)
            try:
                value = evaluate(tree, self.values)
            except (ArithmeticError, ValueError, TypeError):
                value = None
        if value is not None and parsed and abs(Fraction(value) - parsed[0]) > parsed[1]:
            value = None  # the expression does not give the written result
        if value is None and not calculation.annotated:
            return None
        if value is None:  # annotated but unusable: keep the calculator's result literally
            if parsed is None:
                return None
            self.literal_steps += 1
            value = _literal(parsed[0])
            code = f"{value!r}  # as written: {calculation.expression.strip()}"
        else:
            code = ast.unparse(tree)
        name = self.name(calculation.name_hint)
        self.values[name] = value
        self.percent[name] = calculation.result.endswith("%")
        self.known[float(value)] = name
        return f"{name} = {code}"


def _literal(value: Fraction) -> Number:
    return int(value) if value.denominator == 1 else float(value)


def _print_line(program: _Program, answer: str) -> tuple[str, str] | None:
    """``print(...)`` of the latest variable that holds the answer, and what it prints."""
    try:
        target = Fraction(answer)
    except (ValueError, ZeroDivisionError):
        return None
    decimals = len(answer.split(".", 1)[1]) if "." in answer else 0
    for name in reversed(list(program.values)):
        value = program.values[name]
        for scale in (1, 100) if program.percent[name] else (1,):
            expression = name if scale == 1 else f"{name} * 100"
            scaled = value * scale
            if abs(Fraction(scaled) - target) > Fraction(1, 10**6) * max(1, abs(target)):
                continue
            if isinstance(scaled, int):
                return f"print({expression})", str(scaled)
            if decimals == 0:
                return f"print(round({expression}))", str(round(scaled))
            return f"print(round({expression}, {decimals}))", str(round(scaled, decimals))
    return None


def convert_worked_solution(question: str, worked: str) -> Conversion:
    """Convert one GSM8K worked solution into the step format, or refuse with a reason."""
    answer = final_answer(worked)
    body = worked.rsplit(FINAL_MARK, 1)[0]
    program = _Program(_stated_numbers(question), {}, {}, {})
    steps: list[tuple[list[str], list[str]]] = []
    pending: list[str] = []
    for line in body.splitlines():
        prose = _prose(line)
        if not prose:
            continue
        code = [c for c in map(program.assign, _calculations(line)) if c is not None]
        if code:
            steps.append((pending + [prose], code))
            pending = []
        else:
            pending.append(prose)
    if not steps:
        return Conversion(answer, None, "no calculation in the worked solution")
    printed = _print_line(program, answer)
    if printed is None:
        return Conversion(
            answer, None, "no calculation gives the final answer", program.literal_steps
        )
    print_code, output = printed
    steps[-1][1].extend(["# " + text for text in pending] + [print_code])
    texts = [
        _render_step(number, comments, code) for number, (comments, code) in enumerate(steps, 1)
    ]
    texts[-1] = last_code_step(texts[-1], output)
    texts = [code_step(text) for text in texts[:-1]] + [texts[-1], answer_step(answer)]
    return Conversion(answer, render_solution(texts), None, program.literal_steps)


def _render_step(number: int, comments: list[str], code: list[str]) -> str:
    lines = [f"# Step {number}: {comments[0]}"] + [f"# {text}" for text in comments[1:]]
    return "\n".join(lines + code)
