"""Scratch copies (pipeline.scratch): the project without the state a `dvc repro` left."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline.scratch import scratch_copy


def test_scratch_copy_keeps_the_project_and_drops_committed_dvc_state(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name, text in {"dvc.yaml": "stages: {}\n", "stages/a.py": "print(1)\n",
                       "dvc.lock": "schema: '2.0'\n", "data/eval/r1.json": "{}\n",
                       "data/seeds/.gitignore": "/problems.parquet\n"}.items():  # fmt: skip
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    (repo / "notes.txt").write_text("untracked, not ignored\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "dvc.yaml", "stages", "dvc.lock", "data"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "built"], cwd=repo, check=True)

    copy = scratch_copy(repo, tmp_path / "copy")
    copied = {p.relative_to(copy).as_posix() for p in copy.rglob("*") if ".git" not in p.parts}
    assert {"dvc.yaml", "stages/a.py", "notes.txt"} <= copied
    assert not any(name == "dvc.lock" or name.startswith("data") for name in copied)
