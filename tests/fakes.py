"""Test doubles: a scripted engine and a PPM with fixed scores. They live in tests/ only."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline import steps
from pipeline.engines.base import Completion


def partial_solution(prompt_and_solution: str) -> str:
    """The solution text after the scaffold's opening marker (what the script keys on)."""
    return prompt_and_solution.split(steps.SOLUTION_OPEN, 1)[1]


class ScriptedEngine:
    """Returns the completions a script gives for each partial solution.

    ``script(partial_solution) -> list[str]`` lists the samples of one expansion; they are
    cycled to fill ``n``. Calls are recorded so tests can check batching.
    """

    def __init__(self, script: Callable[[str], list[str]]) -> None:
        self.script = script
        self.calls: list[list[str]] = []

    def generate(self, prompts: list[str], n: int = 1, *, stop: Sequence[str] = (),
                 max_new_tokens: int = 256, temperature: float = 0.7, top_p: float = 1.0,
                 seed: int = 0) -> list[list[Completion]]:  # fmt: skip
        self.calls.append(list(prompts))
        results = []
        for prompt in prompts:
            texts = self.script(partial_solution(prompt))
            samples = [texts[i % len(texts)] for i in range(n)] if texts else []
            results.append([Completion(text, len(text.split()), "stop") for text in samples])
        return results

    def close(self) -> None:
        pass


class FixedScorer:
    """A PPM stand-in: one fixed score, counting the texts it was asked about."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.texts: list[str] = []

    def score(self, texts: list[str]) -> list[float]:
        self.texts.extend(texts)
        return [self.value] * len(texts)
