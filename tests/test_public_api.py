"""The library's public names (README, "The library") stay importable where users import them."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "pipeline.answer": ("extract_answer", "is_equivalent"),
    "pipeline.sandbox": ("Sandbox", "ExecResult"),
    "pipeline.problems": ("load_problems",),
    "pipeline.sql": ("derive_pairs", "derive_sft"),
    "pipeline.ppm": ("PPM",),
    "pipeline.cli": ("app",),  # the `rstar` entry point (pyproject.toml)
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_import_from_their_stable_path(module):
    loaded = importlib.import_module(module)
    for name in PUBLIC[module]:
        assert callable(getattr(loaded, name)), f"{module}.{name}"


def test_a_stable_path_is_the_very_object_of_its_group():
    from pipeline import answer, ppm, sandbox, sql
    from pipeline.execution import sandbox as execution_sandbox
    from pipeline.grading import answer as grading_answer
    from pipeline.models import ppm as models_ppm
    from pipeline.rules import sql as rules_sql

    assert answer.is_equivalent is grading_answer.is_equivalent
    assert sandbox.Sandbox is execution_sandbox.Sandbox
    assert sql.derive_pairs is rules_sql.derive_pairs
    assert ppm.PPM is models_ppm.PPM
