"""Every params group is a typed config: each profile builds, and a wrong key, type or range is
one line that names it, from the library and from every stage."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from pipeline import config as params_config
from pipeline.config import (
    CurriculumConfig,
    EvalConfig,
    MCTSConfig,
    ModelConfig,
    PairsConfig,
    ParamsError,
    PPMScorerConfig,
    RayConfig,
    RolloutConfig,
    RoundConfig,
    SandboxConfig,
    SeedsConfig,
    SFTConfig,
    TrainConfig,
    TrainPolicyConfig,
    WarmStartConfig,
    engine_config,
    group,
)  # fmt: skip
from pipeline.search.rounds import mcts_with_overrides, search_config

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))
GROUPS = {
    "seeds": SeedsConfig, "model": ModelConfig, "sandbox": SandboxConfig, "mcts": MCTSConfig,
    "warm_start": WarmStartConfig, "rollout": RolloutConfig, "sft": SFTConfig,
    "pairs": PairsConfig, "train_policy": TrainPolicyConfig, "train_ppm": TrainConfig,
    "evaluate": EvalConfig, "curriculum": CurriculumConfig, "ray": RayConfig,
    "ppm_scorer": PPMScorerConfig,
}  # fmt: skip

# Per group: a value of the wrong type and a value out of range, with the line each must give.
BAD_VALUES = {
    "seeds": (("n", "many", "a whole number"), ("test_fraction", 1.5, "in [0, 1)")),
    "model": (("base", 3, "text"), None),
    "sandbox": (("workers", "two", "a whole number"), ("timeout_s", 0, "> 0")),
    "mcts": (("n_children", 2.5, "a whole number"), ("n_children", 0, ">= 1")),
    "warm_start": (("epochs", "1", "a whole number"), ("eval_samples", -1, ">= 0")),
    "rollout": (("shard_size", None, "a whole number"), ("shard_size", 0, ">= 1")),
    "sft": (("per_problem", "two", "a whole number"), ("per_problem", 0, ">= 1")),
    "pairs": (("min_margin", "half", "a number"), ("heldout_fraction", 1.0, "in [0, 1)")),
    "train_policy": (("from_base", "yes", "true or false"), ("warmup_ratio", 1, "in [0, 1)")),
    "train_ppm": (("learning_rate", [1], "a number"), ("learning_rate", 0, "> 0")),
    "curriculum": (("bootstrap_problems", "all", "a whole number"),
                   ("bootstrap_problems", -1, ">= 0")),
    "ray": (("num_cpus", "one", "a number"), ("num_gpus", -1, ">= 0")),
    "evaluate": (("samples", "four", "a whole number"), ("mcts_children", 0, ">= 1")),
    "ppm_scorer": (("kv_cache_gib", "one", "a number"), ("kv_cache_gib", 0, "> 0")),
}  # fmt: skip


def test_every_group_has_its_class_in_the_config_module():
    # One home: each group's class is defined in pipeline/config.py.
    for name, cls in GROUPS.items():
        assert cls.__module__ == "pipeline.config", name
        assert cls.GROUP == name


@pytest.mark.parametrize("profile", PROFILES, ids=lambda path: path.stem)
def test_every_group_of_every_profile_builds(profile):
    params = yaml.safe_load(profile.read_text())
    for name, cls in GROUPS.items():
        group(params, name, cls)
    engine_config(params)
    for round_key in params["rounds"]:
        search_config(params, round_key)
    mcts_with_overrides(params, group(params, "evaluate", EvalConfig).mcts, "evaluate.mcts")


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_a_mistyped_key_names_the_group_and_the_key(name):
    with pytest.raises(ParamsError) as caught:
        group({name: {"no_such_key": 1}}, name, GROUPS[name])
    assert str(caught.value).startswith(f"params group {name!r}: unknown key(s) no_such_key")


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_wrong_type_or_range_names_the_key(name):
    wrong_type, out_of_range = BAD_VALUES[name]
    for key, value, requirement in filter(None, (wrong_type, out_of_range)):
        with pytest.raises(ParamsError) as caught:
            group({name: {key: value}}, name, GROUPS[name])
        assert str(caught.value).splitlines() == [
            f"{name}.{key} must be {requirement}, got {value!r}"
        ]


def test_a_class_shared_by_groups_names_the_group_it_was_read_as():
    with pytest.raises(ParamsError, match=r"^warm_start\.max_length must be >= 1, got 0$"):
        group({"warm_start": {"max_length": 0}}, "warm_start", WarmStartConfig)
    with pytest.raises(ParamsError, match=r"^rounds\.r2\.mcts\.max_depth must be >= 1, got 0$"):
        search_config({"rounds": {"r2": {"mcts": {"max_depth": 0}}}}, "r2")
    with pytest.raises(ParamsError, match=r"^rounds\.r3\.unsolved_rollouts must be >= 1"):
        search_config({"rounds": {"r3": {"unsolved_rollouts": 0}}}, "r3")
    # Built in code, a config names its own group.
    with pytest.raises(ParamsError, match=r"^mcts\.prompt_style must be one of 'sft', 'few_shot'"):
        MCTSConfig(prompt_style="chat")  # type: ignore[arg-type]
    with pytest.raises(ParamsError, match=r"^rollout\.executor must be one of 'local', 'ray'"):
        RolloutConfig(executor="slurm")  # type: ignore[arg-type]
    assert RoundConfig().rollouts == 8


def test_training_precision_is_true_false_or_auto():
    assert group({"train_ppm": {"bf16": "auto"}}, "train_ppm", TrainConfig).bf16 == "auto"
    with pytest.raises(
        ParamsError, match=r"^train_ppm\.bf16 must be true or false or one of 'auto'"
    ):
        group({"train_ppm": {"bf16": "yes"}}, "train_ppm", TrainConfig)
    with pytest.raises(
        ParamsError, match=r"^train_ppm\.bf16 must be true, false or 'auto', got 'on'"
    ):
        TrainConfig(bf16="on")  # type: ignore[arg-type]


def test_the_engine_group_checks_its_kind_and_vllms_own_options():
    assert engine_config({}).kind == "transformers"
    vllm = engine_config(
        {"engine": {"kind": "vllm", "dtype": "float32", "gpu_memory_utilization": 0.9}}
    )
    # Keys vLLM's LLM takes but this project does not type pass through unchanged.
    assert vllm.options == {"dtype": "float32", "gpu_memory_utilization": 0.9}
    with pytest.raises(ParamsError, match=r"^engine\.kind must be one of 'transformers', 'vllm'"):
        engine_config({"engine": {"kind": "llamacpp"}})
    with pytest.raises(ParamsError, match=r"^engine\.max_model_len must be a whole number"):
        engine_config({"engine": {"kind": "vllm", "max_model_len": "long"}})
    with pytest.raises(ParamsError, match=r"^engine\.kv_cache_gib must be > 0, got 0"):
        engine_config({"engine": {"kind": "vllm", "kv_cache_gib": 0}})


def test_defaults_are_stated_once():
    # The SQL and the checks take their defaults from the config classes.
    import inspect

    from pipeline.rules.checks.validate import validate_table
    from pipeline.rules.sql import derive_pairs, derive_sft

    pairs = inspect.signature(derive_pairs).parameters
    assert (pairs["min_margin"].default, pairs["min_edit"].default) == (0.5, 20)
    assert pairs["heldout_fraction"].default == PairsConfig.heldout_fraction
    assert inspect.signature(derive_sft).parameters["per_problem"].default == 2
    assert inspect.signature(validate_table).parameters["min_margin"].default == 0.5
    assert params_config.PairsConfig().min_margin == 0.5


def test_exponent_without_a_dot_gets_a_hint():
    # PyYAML reads 1e-4 as the string '1e-4', a trap for learning rates.
    params = yaml.safe_load("train_ppm: {learning_rate: 1e-4}")
    with pytest.raises(ParamsError, match=r"learning_rate must be a number, got '1e-4' \(YAML"):
        group(params, "train_ppm", TrainConfig)


# Every stage that reads params, with a group it reads: a mistyped key there must end it at
# once, in one line that names the key, before it touches any data.
STAGES = {
    "seeds": "seeds", "base_model": "model", "warm_start": "warm_start", "rollout": "rollout",
    "sft": "sft", "pairs": "pairs", "validate": "pairs", "train_policy": "train_policy",
    "train_ppm": "train_ppm", "evaluate": "evaluate", "evaluate_warm_start": "evaluate",
}  # fmt: skip


def run_stage(stage: str, params: dict, folder: Path) -> subprocess.CompletedProcess:
    folder.mkdir()
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", "--round", "r1", "--params", "params.yaml"]
        if stage not in ("seeds", "base_model", "warm_start", "evaluate_warm_start")
        else [sys.executable, "-m", f"stages.{stage}", "--params", "params.yaml"],
        cwd=folder, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )  # fmt: skip


def test_every_stage_with_a_mistyped_key_fails_in_one_line(tmp_path):
    smoke = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())

    def bad(stage: str) -> subprocess.CompletedProcess:
        params = yaml.safe_load(yaml.safe_dump(smoke))
        params[STAGES[stage]]["no_such_key"] = 1
        return run_stage(stage, params, tmp_path / stage)

    with ThreadPoolExecutor(4) as pool:  # the stages start in parallel: torch imports are slow
        runs = dict(zip(STAGES, pool.map(bad, STAGES)))
    for stage, run in runs.items():
        assert run.returncode != 0, stage
        (line,) = run.stderr.strip().splitlines()
        assert f"params group '{STAGES[stage]}': unknown key(s) no_such_key" in line, stage


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
    run = run_stage(stage, params, tmp_path / stage)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [
        f"error: {group_name}.{key} must be {expected}, got 'many'"
    ]
