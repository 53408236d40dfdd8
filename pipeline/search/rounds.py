"""The self-evolution schedule: one `rounds.rN` entry per round (docs/algorithm.md).

A round names its policy, its PPM (`none`: terminal-guided), the round whose per-problem status
it continues, its rollout budget, and may override any key of the `mcts` group for its own
search, e.g. `r3: {..., mcts: {temperature: 1.0, errors_threshold: 1}}` as in the released
configs of rStar-Math. Everything a round's search reads is resolved here, once.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from typing import Any

import polars as pl

from pipeline.config import CurriculumConfig, MCTSConfig, ParamsError, RoundConfig, group
from pipeline.search.mcts import Problem


def round_config(params: dict[str, Any], round_key: str) -> RoundConfig:
    rounds = params.get("rounds") or {}
    if round_key not in rounds:
        raise ParamsError(f"params.yaml has no rounds.{round_key}")
    return group(rounds, round_key, RoundConfig, where=f"rounds.{round_key}")


def search_config(params: dict[str, Any], round_key: str) -> MCTSConfig:
    """The `mcts` group with the round's overrides, its rollouts and its prompt style."""
    config = round_config(params, round_key)
    return mcts_with_overrides(
        params, config.mcts, f"rounds.{round_key}.mcts",
        rollouts=config.rollouts, prompt_style=config.prompt_style,
    )  # fmt: skip


def mcts_with_overrides(
    params: dict[str, Any], overrides: Any, where: str, **fixed: Any
) -> MCTSConfig:
    """The `mcts` group with some keys replaced (a round's or the evaluation's own settings).

    `rollouts` and `prompt_style` cannot be overridden here: the round entry and the
    evaluation have keys of their own for them.
    """
    if not isinstance(overrides, dict):
        raise ParamsError(f"{where} must be a mapping of mcts keys")
    known = {f.name for f in dataclasses.fields(MCTSConfig)} - {"rollouts", "prompt_style"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ParamsError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    group({"mcts": overrides}, "mcts", MCTSConfig, where=where)  # a bad override names itself
    return group(params, "mcts", MCTSConfig, **overrides, **fixed)


def bootstrap_problem_ids(problems: pl.DataFrame, config: CurriculumConfig) -> list[str]:
    """Train problems with a reference solution at the bootstrap levels, by problem_id."""
    frame = problems.filter((pl.col("split") == "train") & pl.col("solution").is_not_null())
    if config.bootstrap_levels is not None:
        wanted = {int(level) for level in config.bootstrap_levels}
        frame = frame.filter(pl.Series([problem_level(meta) in wanted for meta in frame["meta"]]))
    ids = sorted(frame["problem_id"].to_list())
    return ids[: config.bootstrap_problems] if config.bootstrap_problems else ids


def problem_level(meta: str | None) -> int | None:
    """The difficulty level a problem's meta JSON records (generator and MATH), if any."""
    try:
        level = json.loads(meta or "{}").get("level")
    except (ValueError, TypeError):
        return None
    found = re.search(r"\d+", str(level)) if level is not None else None  # MATH: "Level 5"
    return int(found.group()) if found else None


def levels_in_turn(rows: Iterable[dict]) -> list[tuple[str, dict]]:
    """Rows (with a `meta`) ordered level by level in turn: the first problem (by problem_id) of
    every level, then the second of every level, ...; each with its level (`all` when none).
    Any cut of the result keeps the levels balanced: how both the rounds' `problems` cap and
    the evaluation's `problems` count pick their problems."""
    by_level: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda row: row["problem_id"]):
        by_level.setdefault(str(problem_level(row.get("meta")) or "all"), []).append(row)
    ranked = sorted(
        (
            (index, level, row)
            for level, group in by_level.items()
            for index, row in enumerate(group)
        ),
        key=lambda item: (item[0], item[1]),
    )
    return [(level, row) for _, level, row in ranked]


def training_problems(
    problems: pl.DataFrame, config: RoundConfig, status: pl.DataFrame | None,
    curriculum: CurriculumConfig = CurriculumConfig(),
) -> list[Problem]:  # fmt: skip
    """What a round searches, and how hard: the one home of that rule (docs/algorithm.md,
    Rounds). The `train` problems, without the bootstrap set when
    `curriculum.rounds_exclude_bootstrap`, then the round's `problems` cap, taken level by level
    in turn (:func:`levels_in_turn`) so that a cap never leaves the search only the levels that
    sort first; each carries its rollout budget, `unsolved_rollouts` for a problem no earlier
    round solved (``status``: the previous round's problem_status; when set), else `rollouts`.
    With `skip_solved` the problems an earlier round solved are left out before the cap, so the
    cap fills their places with problems the rounds have not learnt yet."""
    frame = problems.filter(pl.col("split") == "train")
    if curriculum.rounds_exclude_bootstrap:
        frame = frame.filter(
            ~pl.col("problem_id").is_in(bootstrap_problem_ids(problems, curriculum))
        )
    if config.skip_solved and status is not None:
        solved = status.filter(pl.col("solved_ever"))["problem_id"].to_list()
        frame = frame.filter(~pl.col("problem_id").is_in(solved))
    rows = [row for _, row in levels_in_turn(frame.iter_rows(named=True))]
    if config.problems is not None:
        rows = rows[: config.problems]
    unsolved: set[str] = set()
    if status is not None and config.unsolved_rollouts is not None:
        unsolved = set(status.filter(~pl.col("solved_ever"))["problem_id"].to_list())
    return [
        Problem(row["problem_id"], row["question"], row["answer"],
                rollouts=config.unsolved_rollouts if row["problem_id"] in unsolved else config.rollouts)
        for row in sorted(rows, key=lambda row: row["problem_id"])
    ]  # fmt: skip
