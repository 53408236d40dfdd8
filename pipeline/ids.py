"""Stable content-derived ids (docs/data-contracts.md): two builds of the same input agree."""

from __future__ import annotations

import hashlib

ID_LENGTH = 16


def _digest(*parts: str) -> str:
    payload = "\x1f".join(parts).encode("utf-8")
    return hashlib.sha1(payload).hexdigest()[:ID_LENGTH]


def normalise_question(question: str) -> str:
    """Whitespace and case do not make a problem new."""
    return " ".join(question.split()).casefold()


def problem_id(question: str) -> str:
    return _digest("problem", normalise_question(question))


def node_id(parent_id: str | None, step_text: str) -> str:
    """Hash of the parent id and the step text; the root hashes the problem id instead."""
    return _digest("node", parent_id or "", step_text)


def root_id(problem_id_: str) -> str:
    return _digest("root", problem_id_)
