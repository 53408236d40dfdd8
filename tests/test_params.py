"""Every params group is a typed config: each profile builds, and a wrong key or type is one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, SandboxConfig, group
from pipeline.evaluate import EvalConfig
from pipeline.executors import RayConfig
from pipeline.rounds import CurriculumConfig, mcts_with_overrides, search_config
from pipeline.train.common import TrainConfig
from stages.base_model import ModelConfig
from stages.pairs import PairsConfig
from stages.rollout import RolloutConfig
from stages.seeds import SeedsConfig
from stages.sft import SFTConfig
from stages.train_policy import TrainPolicyConfig
from stages.warm_start import WarmStartConfig

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))
GROUPS = {
    "seeds": SeedsConfig, "model": ModelConfig, "sandbox": SandboxConfig,
    "warm_start": WarmStartConfig, "rollout": RolloutConfig, "sft": SFTConfig,
    "pairs": PairsConfig, "train_policy": TrainPolicyConfig, "train_ppm": TrainConfig,
    "evaluate": EvalConfig, "curriculum": CurriculumConfig, "ray": RayConfig,
}  # fmt: skip


@pytest.mark.parametrize("profile", PROFILES, ids=lambda path: path.stem)
def test_every_group_of_every_profile_builds(profile):
    params = yaml.safe_load(profile.read_text())
    for name, cls in GROUPS.items():
        group(params, name, cls)
    for round_key in params["rounds"]:
        search_config(params, round_key)
    mcts_with_overrides(params, group(params, "evaluate", EvalConfig).mcts, "evaluate.mcts")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"per_problem": "two"}, "sft.per_problem must be a whole number, got 'two'"),
        ({"per_problme": 2}, "params group 'sft': unknown key(s) per_problme"),
    ],
)
def test_a_wrong_key_or_type_names_it(values, message):
    with pytest.raises(ParamsError) as caught:
        group({"sft": values}, "sft", SFTConfig)
    assert str(caught.value).startswith(message)


def test_exponent_without_a_dot_gets_a_hint():
    # PyYAML reads 1e-4 as the string '1e-4', a trap for learning rates.
    params = yaml.safe_load("train_ppm: {learning_rate: 1e-4}")
    with pytest.raises(ParamsError, match=r"learning_rate must be a number, got '1e-4' \(YAML"):
        group(params, "train_ppm", TrainConfig)


@pytest.mark.parametrize(
    ("stage", "group_name", "key", "expected"),
    [("sft", "sft", "per_problem", "a whole number"), ("pairs", "pairs", "min_margin", "a number"),
     ("rollout", "mcts", "n_children", "a whole number"),
     ("evaluate", "evaluate", "samples", "a whole number")],
)  # fmt: skip
def test_a_stage_with_a_mistyped_param_fails_in_one_line(
    tmp_path, stage, group_name, key, expected
):
    params = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    params[group_name][key] = "many"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run = subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", "--round", "r1", "--params", str(tmp_path / "params.yaml")],
        cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )  # fmt: skip
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [
        f"error: {group_name}.{key} must be {expected}, got 'many'"
    ]
