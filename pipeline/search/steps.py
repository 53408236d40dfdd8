"""The step format of code-augmented chain of thought (docs/algorithm.md).

A solution is a sequence of *step texts*; concatenated after the prompt they form the text
the policy continues. Each code step ends with its marker and a newline; the step that closes
the code block carries the program's printed output; the answer step holds ``\\boxed{}``::

    <code>
    # Step 1: half of 48
    clips_may = 48 / 2
    <end_of_step>
    # Step 2: total, and print it
    print(48 + clips_may)
    <end_of_code>
    <output>72.0<end_of_output>
    <answer>The answer is \\boxed{72}<end_of_answer>

The opening ``<code>`` belongs to the scaffold (:data:`SOLUTION_OPEN`), not to the first step,
so every stored step text is exactly what one generation call produced (plus its observation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

CODE = "<code>"
END_OF_STEP = "<end_of_step>"
END_OF_CODE = "<end_of_code>"
OUTPUT = "<output>"
END_OF_OUTPUT = "<end_of_output>"
ANSWER = "<answer>"
END_OF_ANSWER = "<end_of_answer>"

MARKERS = (CODE, END_OF_STEP, END_OF_CODE, OUTPUT, END_OF_OUTPUT, ANSWER, END_OF_ANSWER)
STOP_STRINGS = (END_OF_STEP, END_OF_CODE, END_OF_ANSWER)
SOLUTION_OPEN = CODE + "\n"

# Observations are shown back to the model; a runaway print must not flood the context.
MAX_OBSERVATION_CHARS = 1024

SFT_PROMPT = "<|user|>:\n{question}\n<|assistant|>: Let's think step by step and solve the problem with code."

INSTRUCTION = (
    "Solve the math problem with Python code, one small step at a time. Each step is a few lines "
    "of code whose comments explain the reasoning, followed by <end_of_step>. The last step prints "
    "the result and ends with <end_of_code>. After the printed output, give the final answer as "
    "<answer>The answer is \\boxed{{...}}<end_of_answer>."
)

_FEW_SHOT_EXAMPLES = (
    (
        "A baker makes 24 muffins and sells 3/4 of them. How many muffins are left?",
        [
            "# Step 1: muffins sold are 3/4 of 24\nsold = 24 * 3 // 4\n" + END_OF_STEP + "\n",
            "# Step 2: the rest are left; print it\nleft = 24 - sold\nprint(left)\n"
            + END_OF_CODE
            + "\n"
            + OUTPUT
            + "6"
            + END_OF_OUTPUT
            + "\n",
            ANSWER + "The answer is \\boxed{6}" + END_OF_ANSWER,
        ],
    ),
    (
        "Solve for x: 3x + 7 = 25.",
        [
            "# Step 1: set up the equation with sympy\nfrom sympy import symbols, Eq, solve\n"
            "x = symbols('x')\nequation = Eq(3 * x + 7, 25)\n" + END_OF_STEP + "\n",
            "# Step 2: solve it and print the root\nprint(solve(equation, x)[0])\n"
            + END_OF_CODE
            + "\n"
            + OUTPUT
            + "6"
            + END_OF_OUTPUT
            + "\n",
            ANSWER + "The answer is \\boxed{6}" + END_OF_ANSWER,
        ],
    ),
)


def sft_prompt(question: str) -> str:
    """The prompt of rounds after the bootstrap (docs/algorithm.md)."""
    return SFT_PROMPT.format(question=question.strip())


def few_shot_prompt(question: str) -> str:
    """Round-1 prompt for a model that has not been trained on the step format."""
    parts = [INSTRUCTION.format()]
    for example_question, steps in _FEW_SHOT_EXAMPLES:
        parts.append(f"Question: {example_question}\n{render_solution(steps)}")
    # No newline after the question: generation_prefix adds it, so the question meets its
    # solution exactly as in the examples ("Question: ...\n<code>").
    parts.append(f"Question: {question.strip()}")
    return "\n\n".join(parts)


def build_prompt(question: str, style: Literal["sft", "few_shot"] = "sft") -> str:
    if style == "sft":
        return sft_prompt(question)
    if style == "few_shot":
        return few_shot_prompt(question)
    raise ValueError(f"unknown prompt style {style!r}: expected 'sft' or 'few_shot'")


def render_solution(step_texts: list[str]) -> str:
    """The text of a (partial) solution: the opening marker plus the step texts in order."""
    return SOLUTION_OPEN + "".join(step_texts)


def generation_prefix(prompt: str, step_texts: list[str]) -> str:
    """What the policy continues to produce the next step (also what the PPM scores)."""
    return prompt + "\n" + render_solution(step_texts)


# --------------------------------------------------------------------------- building steps


def code_step(code: str) -> str:
    """A step whose code continues the program."""
    return code.rstrip() + "\n" + END_OF_STEP + "\n"


def last_code_step(code: str, output: str) -> str:
    """The step that closes the code block, with the program's printed output."""
    return code.rstrip() + "\n" + END_OF_CODE + "\n" + output_block(output)


def output_block(output: str) -> str:
    text = output.strip("\n")
    if len(text) > MAX_OBSERVATION_CHARS:
        text = text[:MAX_OBSERVATION_CHARS] + "..."
    return OUTPUT + text + END_OF_OUTPUT + "\n"


def answer_step(answer: str) -> str:
    return ANSWER + "The answer is \\boxed{" + answer + "}" + END_OF_ANSWER


# --------------------------------------------------------------------------- parsing steps

StepKind = Literal["code", "answer", "unparsable"]


@dataclass(frozen=True)
class ParsedStep:
    """One generated step, classified (docs/algorithm.md, expansion)."""

    kind: StepKind
    text: str  # normalised step text: ends at its stop marker, followed by one newline
    code: str = ""  # python of this step alone ("" for answer and unparsable steps)
    ends_code: bool = False  # the step closed the code block with <end_of_code>
    reason: str = ""  # why a step is unparsable


_BOXED = "\\boxed{"


def parse_step(generated: str) -> ParsedStep:
    """Classify one generated step.

    ``generated`` is the engine's completion including the stop string it hit, if any. A step
    with ``\\boxed{`` is an answer; a step that stops at ``<end_of_step>`` or ``<end_of_code>``
    is code; anything else (cut off by the token limit, stray markers, empty) is unparsable.
    """
    text = _cut_after_first_stop(generated)
    body = text.strip()
    if _BOXED in body:
        return ParsedStep("answer", _normalise(text))
    if body.endswith(END_OF_ANSWER):
        return ParsedStep("unparsable", _normalise(text), reason="answer without \\boxed{}")
    for marker, ends_code in ((END_OF_STEP, False), (END_OF_CODE, True)):
        if body.endswith(marker):
            code = body[: -len(marker)]
            if code.startswith(CODE):  # models often repeat the opening marker
                code = code[len(CODE) :]
            code = code.strip("\n")
            if not code.strip():
                return ParsedStep("unparsable", _normalise(text), reason="empty step")
            if any(m in code for m in MARKERS):
                return ParsedStep("unparsable", _normalise(text), reason="stray marker in code")
            return ParsedStep("code", _normalise(text), code=code, ends_code=ends_code)
    if not body:
        return ParsedStep("unparsable", "", reason="empty step")
    return ParsedStep("unparsable", _normalise(text), reason="no stop marker")


def _cut_after_first_stop(text: str) -> str:
    """Drop anything an engine produced after the first stop string."""
    cut = len(text)
    for stop in STOP_STRINGS:
        at = text.find(stop)
        if at != -1:
            cut = min(cut, at + len(stop))
    return text[:cut]


def _normalise(text: str) -> str:
    body = text.strip("\n")
    if body.endswith(END_OF_ANSWER) or not body:
        return body
    return body + "\n"


def with_observation(step: ParsedStep, observation: str) -> str:
    """Step text as stored in the tree: a code-closing step carries its output block."""
    if step.kind == "code" and step.ends_code:
        return step.text + output_block(observation)
    return step.text


# --------------------------------------------------------------------------- programs


def program(codes: list[str]) -> str:
    """The program of a node: its ancestors' code followed by its own (docs/algorithm.md)."""
    return "\n".join(code for code in codes if code)


def split_solution(solution: str) -> list[str]:
    """Split a full solution text back into its step texts (inverse of :func:`render_solution`)."""
    text = solution.removeprefix(SOLUTION_OPEN)
    pattern = re.compile(
        "(.*?(?:"
        + re.escape(END_OF_STEP)
        + r"\n?|"
        + re.escape(END_OF_CODE)
        + r"\n?(?:"
        + re.escape(OUTPUT)
        + ".*?"
        + re.escape(END_OF_OUTPUT)
        + r"\n?)?|"
        + re.escape(END_OF_ANSWER)
        + "))",
        re.DOTALL,
    )
    steps = [match.group(1) for match in pattern.finditer(text)]
    consumed = sum(len(step) for step in steps)
    rest = text[consumed:]
    if rest.strip():
        steps.append(rest)
    return steps


def solution_program(solution: str) -> str:
    """The whole program of a full solution: the code of all its code steps, in order."""
    codes = []
    for step_text in split_solution(solution):
        head = step_text.split(OUTPUT)[0]
        parsed = parse_step(head)
        if parsed.kind == "code":
            codes.append(parsed.code)
    return program(codes)
