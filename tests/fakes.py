"""Test doubles: a scripted engine and a PPM with fixed scores. They live in tests/ only."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from pipeline.models.engines.base import Completion, derive_seed
from pipeline.search import steps

# Everything a few-shot prompt holds before the question: the instruction and the worked
# examples, whose solutions open with the same marker as the one being searched.
_FEW_SHOT_HEAD = steps.few_shot_prompt("")


def partial_solution(prompt_and_solution: str) -> str:
    """The solution text after the scaffold's opening marker (what the script keys on)."""
    text = prompt_and_solution.removeprefix(_FEW_SHOT_HEAD)
    return text.split(steps.SOLUTION_OPEN, 1)[1]


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
        for index, prompt in enumerate(prompts):
            texts = self.script(partial_solution(prompt))
            samples = self.pick(texts, n, seed, index) if texts else []
            results.append([Completion(text, len(text.split()), "stop") for text in samples])
        return results

    def pick(self, texts: list[str], n: int, seed: int, index: int) -> list[str]:
        """The script's samples in order, cycled to fill ``n`` (the seed is ignored)."""
        return [texts[i % len(texts)] for i in range(n)]

    def close(self) -> None:
        pass


class SampledEngine(ScriptedEngine):
    """Draws each of the ``n`` samples from the script's list, seeded like a real engine.

    The draw depends only on (call seed, prompt index, sample index), so a search repeated with
    the same seed sees the same samples and one with another seed usually does not.
    """

    def pick(self, texts: list[str], n: int, seed: int, index: int) -> list[str]:
        return [random.Random(derive_seed(seed, index, i)).choice(texts) for i in range(n)]


class FixedScorer:
    """A PPM stand-in: one fixed score, counting the texts it was asked about."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.texts: list[str] = []

    def score(self, texts: list[str]) -> list[float]:
        self.texts.extend(texts)
        return [self.value] * len(texts)
