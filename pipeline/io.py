"""Atomic writes: a temporary name beside the target, then rename, so nothing is half-written.

Every file and folder the pipeline writes goes through :func:`atomic_file` or
:func:`atomic_dir`; a crash or a bad input leaves the previous version (or nothing) in place.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl


@contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer, so two processes writing one target never share a temporary file.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def atomic_dir(out_dir: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of ``out_dir``; on success it replaces ``out_dir`` at once."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path | str, payload: dict) -> None:
    with atomic_file(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(frame: pl.DataFrame, path: Path | str) -> None:
    with atomic_file(path) as temporary:
        frame.write_parquet(temporary)


def write_csv(frame: pl.DataFrame, path: Path | str) -> None:
    with atomic_file(path) as temporary:
        frame.write_csv(temporary)
