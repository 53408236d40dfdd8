"""Parameter profiles: `profiles/NAME.yaml` files, one of which is the active `params.yaml`."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from pipeline.io import atomic_file


class ProfileError(ValueError):
    pass


def available_profiles(repo: Path) -> list[str]:
    return sorted(path.stem for path in (repo / "profiles").glob("*.yaml"))


def active_profile(repo: Path) -> str | None:
    params = repo / "params.yaml"
    if not params.exists():
        return None
    return (yaml.safe_load(params.read_text()) or {}).get("profile")


def switch_profile(repo: Path, name: str) -> Path:
    """Make profiles/NAME.yaml the active params.yaml (atomically); DVC then sees the change."""
    source = repo / "profiles" / f"{name}.yaml"
    if not source.exists():
        choices = ", ".join(available_profiles(repo)) or "none found"
        raise ProfileError(f"unknown profile {name!r} (available: {choices})")
    target = repo / "params.yaml"
    with atomic_file(target) as temporary:
        shutil.copyfile(source, temporary)
    return target
