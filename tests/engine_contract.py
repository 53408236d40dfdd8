"""Contract tests every engine passes (pipeline/models/engines/base.py), shared by the engines.

A test module imports these functions and provides its own `engine` fixture; pytest collects
the imported tests there, so each engine runs the same checks.
"""

from __future__ import annotations

import re

import pytest

PROMPTS = [
    "Question: 2 + 3?\n<code>\n",
    "Question: A baker makes 24 muffins and sells 3/4 of them. How many are left?\n<code>\n",
    "Hi",
]


def test_max_new_tokens_is_respected_and_counted(engine):
    results = engine.generate(PROMPTS, n=2, max_new_tokens=5, seed=0)
    for completion in (c for samples in results for c in samples):
        assert completion.finish_reason == "length"  # no stop strings asked, no EOS drawn
        assert completion.tokens == 5


def test_stop_string_is_kept_and_nothing_after_it(engine):
    # Sample freely, choose a piece of the text as the stop string, and sample again with the
    # same seed: the random streams are the same, so the text must end exactly at that piece.
    free = engine.generate(PROMPTS[:1], max_new_tokens=24, temperature=1.0, seed=11)[0][0]
    start, stop = _fresh_piece(free.text)
    stopped = engine.generate(
        PROMPTS[:1], max_new_tokens=24, temperature=1.0, seed=11, stop=[stop, "<never>"]
    )[0][0]
    assert stopped.text == free.text[: start + len(stop)]
    assert stopped.finish_reason == "stop"
    assert 1 <= stopped.tokens < free.tokens


def _fresh_piece(text: str) -> tuple[int, str]:
    """A short run of letters whose first occurrence in ``text`` starts after the beginning."""
    for match in re.finditer(r"[A-Za-z]{4}", text):
        piece = match.group()
        if match.start() > 0 and text.find(piece) == match.start():
            return match.start(), piece
    pytest.fail(f"no usable stop string in {text!r}")
