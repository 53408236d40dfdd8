"""dvc.yaml lists the code each stage runs, so a code change re-runs exactly what it touches.

Each stage's command names a module (`python -m stages.X`). Its closure is every module of this
repository that it imports, at any depth and at any place in a function (lazy imports count),
plus modules it starts as processes by name (`python -m pipeline.execution.sandbox_worker`). A
stage's deps must cover each of those files, either by naming it or by naming a folder above it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
OWN_PACKAGES = ("pipeline", "stages")
MODULE_NAME = re.compile(r"^(?:pipeline|stages)(?:\.\w+)+$")


def module_file(name: str) -> Path | None:
    """The file of a module of this repository, or None (third-party, or an attribute)."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> set[str]:
    """Every module name a file may load: imports (absolute and relative) and `-m` strings."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # submodules imported by name
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if MODULE_NAME.match(node.value):
                names.add(node.value)
    return {name for name in names if name.split(".")[0] in OWN_PACKAGES}


def runs_nothing(path: Path) -> bool:
    """A file with no statement besides its docstring (a group's __init__.py)."""
    body = ast.parse(path.read_text(), filename=str(path)).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return not body


def closure(module: str) -> set[Path]:
    """Files of this repository that running `python -m module` can execute."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        # Importing a.b.c runs the __init__ of a and of a.b first; those that hold no more than
        # a docstring change nothing.
        for depth in range(1, len(parts) + 1):
            file = module_file(".".join(parts[:depth]))
            if file is None or file in seen:
                continue
            if file.name == "__init__.py" and runs_nothing(file):
                continue
            seen.add(file)
            todo.extend(imported_names(file))
    return seen


def stage_definitions() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def covered(file: Path, deps: list[str]) -> bool:
    relative = file.relative_to(ROOT)
    return any(relative == Path(dep) or Path(dep) in relative.parents for dep in deps)


def missing_deps(stage: dict) -> list[str]:
    module = re.search(r"python -m ([\w.]+)", stage["cmd"]).group(1)
    deps = [dep for dep in stage.get("deps", []) if not dep.startswith("data/")]
    return sorted(
        str(file.relative_to(ROOT)) for file in closure(module) if not covered(file, deps)
    )


@pytest.mark.parametrize("name", sorted(stage_definitions()))
def test_every_stage_lists_the_code_it_runs(name):
    assert missing_deps(stage_definitions()[name]) == []


def test_the_check_fails_when_a_dependency_is_left_out():
    rollout = stage_definitions()["rollout"]
    assert missing_deps(rollout) == []
    without_steps = {
        **rollout,
        "deps": [d for d in rollout["deps"] if d != "pipeline/search/steps.py"],
    }
    assert missing_deps(without_steps) == ["pipeline/search/steps.py"]
    # A lazy import inside a function counts as well: rollout loads the PPM only in PPM rounds.
    without_ppm = {**rollout, "deps": [d for d in rollout["deps"] if d != "pipeline/models/ppm.py"]}
    assert missing_deps(without_ppm) == ["pipeline/models/ppm.py"]
