"""Stable content-derived ids (docs/data-contracts.md): two builds of the same input agree."""

from __future__ import annotations

import hashlib
import json

ID_LENGTH = 16


def _digest(*parts: str) -> str:
    payload = "\x1f".join(parts).encode("utf-8")
    return hashlib.sha1(payload).hexdigest()[:ID_LENGTH]


def fingerprint(parts: dict) -> str:
    """Identity of everything that shapes a piece of resumable work (its params, inputs and
    models' contents), for naming its shards or checkpoint: changed inputs never resume."""
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
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


# --------------------------------------------------------------------------- hash positions
#
# Every split by problem (seeds into train / validation / test, pairs into train / test, the
# problems a training run holds out) places a text at a fixed point of [0, 1) and compares it
# with a fraction, so a problem's side depends on its own id only and adding problems moves no
# other. One rule, stated twice because DuckDB cannot call back into Python cheaply: the first
# 8 hex digits of the text's SHA-256, read as an integer, over 2^32. 32 bits are exact in a
# double, so both sides compute the very same float.
HASH_DIGITS = 8


def hash_position(text: str) -> float:
    """The text's point in [0, 1): the first 8 hex digits of sha256(text) over 2^32."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_DIGITS]
    return int(digest, 16) / 16**HASH_DIGITS


# The same rule as a DuckDB macro, defined in every session of pipeline.rules.sql.
HASH_POSITION_MACRO = (
    "CREATE OR REPLACE MACRO hash_position(text) AS "
    f"CAST(CAST('0x' || left(sha256(text), {HASH_DIGITS}) AS UBIGINT) AS DOUBLE)"
    f" / {float(16**HASH_DIGITS)}"
)
