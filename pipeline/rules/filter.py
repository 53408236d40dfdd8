"""Verify SFT trajectories before they leave a round: re-run, re-grade, keep or drop with a reason.

Each selected trajectory's whole program runs again in a fresh sandbox run. It is kept only if
it runs clean, prints what the tree recorded (so the output block the policy learns from is
true), and its boxed answer still grades correct. Dropped rows are kept with their reason, as a
datatrove filter would, so a user can look at them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from pipeline.grading.answer import extract_answer, is_equivalent
from pipeline.search import steps
from pipeline.search.mcts import CodeRunner

_OUTPUT = re.compile(re.escape(steps.OUTPUT) + "(.*?)" + re.escape(steps.END_OF_OUTPUT), re.DOTALL)


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reason: str  # "ok", or why the row was dropped


def recorded_output(response: str) -> str | None:
    """The printed output the trajectory recorded in its last output block."""
    blocks = _OUTPUT.findall(response)
    return blocks[-1] if blocks else None


def verify_responses(
    responses: Sequence[str], truths: Sequence[str], sandbox: CodeRunner,
    grade: Callable[[str | None, str], bool] = is_equivalent,
) -> list[Verdict]:  # fmt: skip
    """One verdict per response (a full solution text starting with the code marker)."""
    # zip() would quietly judge only the shorter list and leave rows without a verdict.
    if len(responses) != len(truths):
        raise ValueError(
            f"verify_responses: {len(responses)} responses but {len(truths)} ground truths"
        )
    programs = [steps.solution_program(response) for response in responses]
    results = sandbox.run_many(programs)
    verdicts = []
    for response, truth, program, result in zip(responses, truths, programs, results):
        verdicts.append(_judge(response, truth, program, result, grade))
    return verdicts


def _judge(response: str, truth: str, program: str, result, grade) -> Verdict:
    if not program.strip():
        return Verdict(False, "no_code")
    if result.timed_out:
        return Verdict(False, "timeout")
    if result.error:
        return Verdict(False, "code_error")
    expected = recorded_output(response)
    # Compare through the same capping the tree applied when it recorded the output.
    if expected is not None and recorded_output(steps.output_block(result.stdout)) != expected:
        return Verdict(False, "output_changed")
    answer = extract_answer(response)
    if answer is None:
        return Verdict(False, "no_answer")
    if not grade(answer, truth):
        return Verdict(False, "wrong_answer")
    return Verdict(True, "ok")


def rerank(groups: Sequence[Hashable], verdicts: Sequence[Verdict]) -> list[int | None]:
    """The SFT rank of each candidate once the filter has judged it (docs/algorithm.md, "SFT set").

    ``groups`` holds each candidate's (problem_id, round), in the rank order ``derive_sft``
    writes. Kept candidates are numbered 1, 2, ... within their group, so dropping a rank-1
    pick does not leave a lone rank 2 (the ``sft`` contract wants ranks to run 1, 2, ...).
    Dropped candidates get None.
    """
    if len(groups) != len(verdicts):
        raise ValueError(f"rerank: {len(groups)} candidates but {len(verdicts)} verdicts")
    taken: Counter = Counter()
    ranks: list[int | None] = []
    for group, verdict in zip(groups, verdicts):
        if not verdict.keep:
            ranks.append(None)
            continue
        taken[group] += 1
        ranks.append(taken[group])
    return ranks


def summarise(verdicts: Sequence[Verdict]) -> dict:
    reasons = Counter(verdict.reason for verdict in verdicts)
    return {
        "checked": len(verdicts),
        "kept": reasons.pop("ok", 0),
        "dropped": sum(reasons.values()),
        "dropped_by_reason": dict(sorted(reasons.items())),
    }
