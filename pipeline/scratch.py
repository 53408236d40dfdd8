"""Scratch copies of the repository, for smoke runs and DAG tests that must not touch the tree."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def built_state(name: str) -> bool:
    """What a `dvc repro` leaves behind (dvc.lock, data/): a user commits it, as the README
    says, but a scratch build must start without it, or it inherits another profile's lock."""
    return name == "dvc.lock" or name.startswith("data/")


def project_files(repo: Path) -> list[str]:
    """Tracked files plus untracked ones git does not ignore, without the built state: the
    project as a user has it, before any `dvc repro`."""
    listed = _git(repo, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    return [name for name in listed.split("\0")
            if name and (repo / name).is_file() and not built_state(name)]  # fmt: skip


def scratch_copy(repo: Path, destination: Path | None = None) -> Path:
    """Copy the project into a fresh git repository (one commit) and return its path."""
    repo = repo.resolve()
    target = Path(destination or tempfile.mkdtemp(prefix="rstar-scratch-"))
    target.mkdir(parents=True, exist_ok=True)
    for name in project_files(repo):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target / name)
    _git(target, "init", "-q", "-b", "main")
    _git(target, "add", "-A")
    _git(target, "-c", "user.name=rstar", "-c", "user.email=rstar@localhost",
         "commit", "-q", "-m", "scratch copy")  # fmt: skip
    return target
