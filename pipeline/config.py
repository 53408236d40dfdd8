"""params.yaml groups as typed config objects (one dataclass per group, no global state)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ParamsError(ValueError):
    pass


@dataclass(frozen=True)
class SandboxConfig:
    """The `sandbox` params group: pipeline.sandbox.Sandbox's arguments."""

    workers: int = 2
    timeout_s: float = 10.0
    memory_mb: int = 1024


def load_params(path: Path | str = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such params file (run `rstar profile default` to create it)")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter groups")
    return params


def group(params: dict[str, Any], name: str, cls: type[T], **overrides: Any) -> T:
    """Build ``cls`` from ``params[name]``; an unknown key is an error that names it."""
    values = dict(params.get(name) or {})
    values.update(overrides)
    known = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ParamsError(
            f"params group {name!r}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ParamsError(f"params group {name!r}: {error}") from None
