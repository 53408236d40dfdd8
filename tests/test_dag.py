"""The smoke DAG end to end with real `dvc`, in a scratch copy of the repository.

The session's `smoke_repo` (conftest) ran `dvc repro` on the smoke profile; these tests read its
tables and ask DVC what a parameter change would rebuild.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import polars as pl
import pytest
import yaml

from pipeline.profiles import switch_profile
from pipeline.rules.checks.sql_checks import backup_violations
from tests.conftest import dvc

pytestmark = pytest.mark.slow


def would_run(repo: Path) -> set[str]:
    """Stages `dvc status` finds changed, plus every stage downstream of them."""
    from dvc.repo import Repo

    changed = set(json.loads(dvc(repo, "status", "dvc.yaml", "--json").stdout))
    with Repo(str(repo)) as dvc_repo:
        graph = dvc_repo.index.graph  # edges point from a stage to the stages it reads from
        affected = set()
        for stage in graph.nodes:  # `name`, not `addressing`: that one is relative to the cwd
            if stage.name in changed:
                affected |= {stage.name} | {other.name for other in nx.ancestors(graph, stage)}
    return {stage for stage in affected if not stage.startswith("publish")}


def edit_params(repo: Path, change) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    change(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_smoke_dag_is_up_to_date_after_repro(smoke_repo):
    assert would_run(smoke_repo) == set()
    metrics = json.loads((smoke_repo / "data/eval/r2.json").read_text())
    assert set(metrics["accuracy"]) >= {"greedy", "pass_at_2", "ppm_best_of_2", "ppm_mcts"}
    plotted = pl.read_csv(smoke_repo / "data/plots/accuracy.csv")
    assert sorted(set(plotted["round"])) == [0, 1, 2]  # round 0: the warm start's report
    # Each evaluation's resumable shards are gone once its metrics are written.
    assert sorted(path.name for path in (smoke_repo / "data/eval").iterdir()) == [
        "r0.json", "r1.json", "r2.json",
    ]  # fmt: skip


def test_results_table_has_a_row_per_round_from_the_real_metrics(smoke_repo):
    rstar = Path(sys.executable).with_name("rstar")
    shown = subprocess.run([str(rstar), "results"], cwd=smoke_repo, capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    table, paired = (part.splitlines() for part in shown.split("\n\n"))
    assert [line.split(" | ")[0] for line in table[2:]] == ["| 0", "| 1", "| 2"]
    assert "ppm_mcts" in table[0] and "warm start" in table[2]
    # The rounds' greedy results compared on the same held-out problems.
    assert [line.split(" | ")[0] for line in paired[2:5]] == [
        "| r0 greedy -> r1 greedy", "| r1 greedy -> r2 greedy", "| r0 greedy -> r2 greedy",
    ]  # fmt: skip
    assert any(" -> r2 ppm_" in line for line in paired[5:])  # search against the baselines


def test_metrics_show_prints_a_row_per_figure_and_a_column_per_round(smoke_repo):
    shown = dvc(smoke_repo, "metrics", "show").stdout.splitlines()
    assert shown[0].split() == ["Path", "r0", "r1", "r2"]  # r0: the warm start
    rows = {line.split()[0]: line.split()[1:] for line in shown[1:]}
    summaries = [json.loads((smoke_repo / f"data/metrics/r{n}.json").read_text()) for n in range(3)]
    greedy = [summary["accuracy"]["greedy"] for summary in summaries]
    assert [float(value) for value in rows["data/report/greedy.json"]] == greedy
    # Round 2 alone ran the PPM methods; the other rounds show "-".
    assert rows["data/report/ppm_mcts.json"][:2] == ["-", "-"]
    assert {"data/report/greedy_ci95.json", "data/report/pairs.json"} <= set(rows)


def test_trees_of_both_rounds_obey_the_backup_rules(smoke_repo):
    for round_key, mode in (("r1", "terminal_guided"), ("r2", "ppm_augmented")):
        stats = json.loads((smoke_repo / f"data/rounds/{round_key}/rollout_stats.json").read_text())
        assert stats["mode"] == mode
        nodes = pl.read_parquet(smoke_repo / f"data/rounds/{round_key}/nodes.parquet")
        assert nodes.height > nodes["problem_id"].n_unique()  # the trees grew past their roots
        assert backup_violations(nodes.to_dicts()) == []
    ppm_nodes = pl.read_parquet(smoke_repo / "data/rounds/r2/nodes.parquet")
    assert ppm_nodes["ppm_score"].is_not_null().any()


def weights(folder: Path, file: str = "model.safetensors") -> dict:
    from safetensors.torch import load_file

    return load_file(folder / file)


def test_every_round_trains_its_policy_and_its_ppm_on_its_own_rows(smoke_repo):
    import torch

    models = smoke_repo / "data/models"
    for round_key, start in (("r1", "warm_start"), ("r2", "r1")):
        rounds = smoke_repo / "data/rounds" / round_key
        sft = pl.read_parquet(rounds / "sft.parquet")
        train_pairs = pl.read_parquet(rounds / "pairs.parquet").filter(pl.col("split") == "train")
        assert sft.height > 0 and train_pairs.height > 0, f"{round_key}: nothing to train on"

        policy = json.loads((rounds / "train_policy_metrics.json").read_text())
        assert policy["trained"] and policy["optimizer_steps"] > 0
        assert policy["examples"] == sft.height
        assert policy["heldout_loss_after"] is not None  # smoke holds out 2 of its 8 problems
        before, after = weights(models / "policy" / start), weights(models / "policy" / round_key)
        assert any(not torch.equal(before[name], after[name]) for name in after)

        ppm = json.loads((rounds / "train_ppm_metrics.json").read_text())
        assert ppm["trained"] and ppm["train_pairs"] == train_pairs.height
        assert ppm["train_loss_first"] != ppm["train_loss_last"]
        # The PPM's body starts as the round's policy (whose keys say `model.`) and trains too.
        body = weights(models / "ppm" / round_key)
        shared = [name for name in body if f"model.{name}" in after]
        assert shared and any(not torch.equal(after[f"model.{n}"], body[n]) for n in shared)


def test_real_tables_pass_validation(smoke_repo):
    from pipeline.rules.checks import validate_table

    problems = smoke_repo / "data/seeds/problems.parquet"
    for table in ("nodes", "trajectories", "sft", "pairs"):
        report = validate_table(
            table, smoke_repo / f"data/rounds/r1/{table}.parquet", problems_path=problems
        )
        assert report.success, report.summary()


def test_ppm_training_change_rebuilds_only_ppm_training_and_its_dependents(smoke_repo):
    edit_params(
        smoke_repo,
        lambda p: p["train_ppm"].update(learning_rate=p["train_ppm"]["learning_rate"] / 2),
    )
    try:
        # r2 searches with r1's PPM, so its rollout and everything after it are dependents.
        assert would_run(smoke_repo) == {
            "train_ppm@r1", "train_ppm@r2", "evaluate@r1", "evaluate@r2", "rollout@r2", "sft@r2",
            "pairs@r2", "validate@r2", "stats@r2", "train_policy@r2", "summary@r1", "summary@r2",
            "report", "plots",
        }  # fmt: skip
    finally:
        subprocess.run(["git", "checkout", "params.yaml"], cwd=smoke_repo, check=True)
        switch_profile(smoke_repo, "smoke")


def test_round_two_rollout_change_leaves_round_one_untouched(smoke_repo):
    edit_params(smoke_repo, lambda p: p["rounds"]["r2"].update(rollouts=3))
    try:
        affected = would_run(smoke_repo)
        assert "rollout@r2" in affected and "train_ppm@r2" in affected
        assert not {stage for stage in affected if stage.endswith("@r1")}
        assert not affected & {"seeds", "base_model", "warm_start", "round0"}
    finally:
        switch_profile(smoke_repo, "smoke")


def test_the_validation_split_re_runs_every_evaluation_and_no_training(smoke_repo):
    edit_params(smoke_repo, lambda p: p["evaluate"].update(split="validation"))
    try:
        # Round 0 too, so a tuning run's r0 row is on the validation split like the rounds'.
        assert would_run(smoke_repo) == {
            "evaluate_warm_start", "evaluate@r1", "evaluate@r2", "summary@r1", "summary@r2",
            "report", "plots",
        }  # fmt: skip
    finally:
        switch_profile(smoke_repo, "smoke")


def test_a_rounds_mcts_override_rebuilds_only_that_round(smoke_repo):
    override = {"temperature": 0.7, "errors_threshold": 1}
    edit_params(smoke_repo, lambda p: p["rounds"]["r2"].update(mcts=override))
    try:
        assert would_run(smoke_repo) == {
            "rollout@r2", "sft@r2", "pairs@r2", "validate@r2", "stats@r2", "train_policy@r2",
            "train_ppm@r2", "evaluate@r2", "summary@r2", "report", "plots",
        }  # fmt: skip
    finally:
        switch_profile(smoke_repo, "smoke")
