"""params.yaml groups as typed config objects (one dataclass per group, no global state)."""

from __future__ import annotations

import dataclasses
import types
import typing
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


def group(
    params: dict[str, Any], name: str, cls: type[T], *, where: str | None = None, **overrides: Any
) -> T:
    """Build ``cls`` from ``params[name]``; an unknown key or a value of the wrong type is an
    error that names it (``where`` is how the group is spelled in params.yaml, default name)."""
    where = where or name
    values = params.get(name) or {}
    if not isinstance(values, dict):
        raise ParamsError(f"params group {where!r} must be a mapping, got {values!r}")
    values = {**values, **overrides}
    known = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ParamsError(
            f"params group {where!r}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if not _conforms(value, hints.get(key, Any)):
            raise ParamsError(
                f"{where}.{key} must be {_describe(hints[key])}, got {value!r}"
                + (" (YAML reads 1e-4 as text: write 1.0e-4)" if _float_as_text(value) else "")
            )
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ParamsError(f"params group {where!r}: {error}") from None


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a dataclass field's annotation (the shapes params use)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, (list, tuple)) and all(
            _conforms(item, args[0]) for item in value if args and args[-1] is not Ellipsis
        )
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return isinstance(value, origin or hint) if isinstance(origin or hint, type) else True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
             type(None): "null", dict: "a mapping", list: "a list"}  # fmt: skip
    return names.get(origin or hint, getattr(hint, "__name__", str(hint)))


def _float_as_text(value: Any) -> bool:
    """PyYAML reads exponent notation without a dot (1e-4) as a string: a common trap."""
    if not isinstance(value, str) or "e" not in value.lower():
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True
