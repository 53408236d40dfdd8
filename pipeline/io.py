"""Atomic writes: a temporary name beside the target, then rename, so nothing is half-written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl


def write_json(path: Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(temporary, path)


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    frame.write_parquet(temporary)
    os.replace(temporary, path)
