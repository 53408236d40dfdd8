"""The PPM (pipeline.models.ppm) and its training (models.train.ppm), on the tiny random model.

The pair set has a learnable signal: the chosen step is clean code, the rejected one raises
or divides by zero, with numbers and wording varied so no single token gives it away.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
import torch

from pipeline.config import TrainConfig
from pipeline.models.base import ModelError
from pipeline.models.ppm import PPM, SCORE_TEMPERATURE, pairwise_loss, score_from_value
from pipeline.models.train.ppm import train_ppm
from pipeline.search import steps

FAST = TrainConfig(epochs=3, learning_rate=1e-2, batch_size=8, max_length=192, warmup_ratio=0.1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two shared cores: one intra-op thread avoids thread contention that slows tiny ops 100x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


GOOD = ["total = x + {b}", "total = x * {b}", "share = x / {b}", "left = x - {b}"]
BAD = ["raise ValueError({b})", "total = x / 0  # {b}", "total = y + {b}", "assert x < 0, {b}"]


def pairs_frame(n: int, seed: int = 0, test_every: int = 4) -> pl.DataFrame:
    """``n`` pairs over ``n`` problems; every ``test_every``-th problem is held out."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 90), rng.randint(2, 90)
        question = f"A shop has {a} boxes and gets {b} more each day. How many boxes after one day?"
        prefix = steps.generation_prefix(steps.sft_prompt(question), [steps.code_step(f"x = {a}")])
        comment = rng.choice(["# next", "# compute the result", "# use the numbers"])
        chosen = steps.code_step(f"{comment}\n{rng.choice(GOOD).format(b=b)}")
        rejected = steps.code_step(f"{comment}\n{rng.choice(BAD).format(b=b)}")
        rows.append({"problem_id": f"p{i:03d}", "round": 1, "node_id": f"n{i:03d}", "prefix": prefix,
                     "chosen": chosen, "rejected": rejected, "chosen_q": 0.8, "rejected_q": -0.6,
                     "margin": 1.4, "weight": 0.5, "split": "test" if i % test_every == 0 else "train"})  # fmt: skip
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def ppm_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("ppm")
    pairs_frame(64).write_parquet(folder / "pairs.parquet")
    metrics = train_ppm(tiny_model_dir, folder / "pairs.parquet", folder / "ppm", FAST)
    return folder / "ppm", metrics


@pytest.fixture(scope="module")
def fresh_ppm(tiny_model_dir: Path) -> PPM:
    return PPM.from_policy(tiny_model_dir, max_length=192, device="cpu")


# --------------------------------------------------------------------------- learning


def test_ppm_learns_to_prefer_clean_steps_on_heldout_pairs(ppm_run) -> None:
    _, metrics = ppm_run
    assert metrics["train_pairs"] == 48 and metrics["test_pairs"] == 16  # every 4th of 64 held out
    # a fresh head on a random backbone is near chance loss ln 2 (its accuracy is whatever
    # the random init happens to prefer); training must separate the held-out pairs
    assert abs(metrics["heldout_loss_before"] - math.log(2)) < 0.05
    assert metrics["heldout_accuracy_after"] >= 0.9
    assert metrics["heldout_loss_after"] < 0.4
    assert metrics["train_loss_last"] < metrics["train_loss_first"]


def test_loaded_ppm_scores_match_the_training_metrics(ppm_run) -> None:
    folder, metrics = ppm_run
    ppm = PPM.load(folder, device="cpu")
    test = pairs_frame(64).filter(pl.col("split") == "test")
    chosen = ppm.score([p + c for p, c in zip(test["prefix"], test["chosen"])])
    rejected = ppm.score([p + r for p, r in zip(test["prefix"], test["rejected"])])
    accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(chosen)
    assert accuracy == pytest.approx(metrics["heldout_accuracy_after"])
    card = (folder / "README.md").read_text()
    assert (
        metrics["source_sha1"] in card
        and json.loads((folder / "ppm_config.json").read_text())["max_length"] == 192
    )


# --------------------------------------------------------------------------- the model


def test_save_and_load_give_identical_scores(fresh_ppm: PPM, tmp_path: Path) -> None:
    texts = ["<|user|>:\nWhat is 1 + 1?", "x = 1\n<end_of_step>\n", "print(2)\n<end_of_code>\n"]
    fresh_ppm.save(tmp_path / "ppm")
    loaded = PPM.load(tmp_path / "ppm", device="cpu")
    assert loaded.raw_values(texts) == fresh_ppm.raw_values(texts)
    assert loaded.max_length == 192
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ppm"]  # no temp folder left


def test_scores_are_tanh_of_value_over_5_in_range_and_batch_independent(fresh_ppm: PPM) -> None:
    texts = [f"step {i} " * (1 + i % 7) for i in range(20)]
    values = fresh_ppm.raw_values(texts, batch_size=16)
    scores = fresh_ppm.score(texts, batch_size=16)
    assert all(-1 <= s <= 1 for s in scores)
    assert scores == pytest.approx([math.tanh(v / SCORE_TEMPERATURE) for v in values])
    one_by_one = fresh_ppm.raw_values(texts, batch_size=1)
    assert one_by_one == pytest.approx(values, abs=1e-5)  # padding never leaks into a value


def test_long_texts_keep_their_end(tiny_model_dir: Path) -> None:
    ppm = PPM.from_policy(tiny_model_dir, max_length=8, device="cpu")
    ending = " and this text ends with the step that is being judged right here"  # > 8 tokens
    ids = ppm.encode(["word " * 50 + ending])["input_ids"][0]
    assert len(ids) == 8 and ending.endswith(ppm.tokenizer.decode(ids))
    assert ppm.tokenizer.decode(ids).endswith("being judged right here")
    # texts that differ only before the window score the same; a different ending does not
    first, second, other = ppm.raw_values(
        ["alpha " * 40 + ending, "beta " * 40 + ending, "alpha " * 40 + " x"]
    )
    assert first == pytest.approx(second, abs=1e-6) and first != pytest.approx(other, abs=1e-6)


def test_ppm_starts_from_the_policy_backbone(tiny_model_dir: Path, fresh_ppm: PPM) -> None:
    from pipeline.models.base import load_causal_lm

    policy, _ = load_causal_lm(tiny_model_dir)
    for name, tensor in fresh_ppm.backbone.state_dict().items():
        assert torch.equal(tensor, policy.base_model.state_dict()[name]), name
    assert fresh_ppm.value_head.out_features == 1


def test_pairwise_loss_uses_raw_values() -> None:
    chosen, rejected = torch.tensor([0.0, 3.0]), torch.tensor([0.0, 1.0])
    # -log sigmoid(0) = ln 2; -log sigmoid(2) = ln(1 + e^-2); weights scale each pair
    assert pairwise_loss(chosen, rejected).tolist() == pytest.approx(
        [math.log(2), math.log(1 + math.exp(-2))]
    )
    assert pairwise_loss(chosen, rejected, torch.tensor([0.5, 2.0])).tolist() == pytest.approx(
        [0.5 * math.log(2), 2 * math.log(1 + math.exp(-2))])  # fmt: skip
    assert score_from_value(torch.tensor([5 * math.atanh(0.5)])).item() == pytest.approx(0.5)


# --------------------------------------------------------------------------- errors and edges


def _one_line(error: pytest.ExceptionInfo, folder: Path) -> None:
    assert str(folder) in str(error.value) and "\n" not in str(error.value)


def test_load_errors_name_the_folder_and_the_problem(
    fresh_ppm: PPM, tiny_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="no such PPM folder") as error:
        PPM.load(tmp_path / "missing")
    _one_line(error, tmp_path / "missing")
    with pytest.raises(ModelError, match="not a PPM folder") as error:
        PPM.load(tiny_model_dir)  # a policy, not a PPM
    _one_line(error, tiny_model_dir)

    fresh_ppm.save(tmp_path / "good")
    head = tmp_path / "bad_head"
    shutil.copytree(tmp_path / "good", head)
    (head / "value_head.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ModelError, match="value_head.safetensors") as error:
        PPM.load(head)
    _one_line(error, head)

    weights = tmp_path / "bad_weights"
    shutil.copytree(tmp_path / "good", weights)
    data = (weights / "model.safetensors").read_bytes()
    (weights / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="cannot load the PPM") as error:
        PPM.load(weights)
    _one_line(error, weights)


def test_empty_pairs_still_give_a_loadable_untrained_ppm(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    pairs_frame(1).clear().write_parquet(tmp_path / "pairs.parquet")
    metrics = train_ppm(tiny_model_dir, tmp_path / "pairs.parquet", tmp_path / "ppm", FAST)
    assert metrics["pairs"] == 0 and metrics["trained"] is False and "untrained" in metrics["note"]
    assert "no test pairs" in metrics["heldout_skipped"]
    assert len(PPM.load(tmp_path / "ppm").score(["x"])) == 1


def test_without_test_pairs_the_metrics_say_so(tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs_frame(6, test_every=10**9).write_parquet(
        tmp_path / "pairs.parquet"
    )  # all 'train' but p000
    frame = pl.read_parquet(tmp_path / "pairs.parquet").with_columns(split=pl.lit("train"))
    frame.write_parquet(tmp_path / "pairs.parquet")
    metrics = train_ppm(tiny_model_dir, tmp_path / "pairs.parquet", tmp_path / "ppm",
                        TrainConfig(max_steps=1, batch_size=4))  # fmt: skip
    assert metrics["trained"] and metrics["heldout_accuracy_after"] is None
    assert "no test pairs" in metrics["heldout_skipped"]


def test_killed_ppm_training_writes_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs_frame(8).write_parquet(tmp_path / "pairs.parquet")

    def kill(step: int, loss: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_ppm(
            tiny_model_dir,
            tmp_path / "pairs.parquet",
            tmp_path / "ppm",
            TrainConfig(batch_size=2),
            on_step=kill,
        )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["pairs.parquet"]


def test_a_pairs_file_that_breaks_its_contract_is_named(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from pipeline.models.train.common import DataError

    pairs_frame(2).drop("weight").write_parquet(tmp_path / "pairs.parquet")
    with pytest.raises(DataError, match="pairs.parquet: pairs table lacks column"):
        train_ppm(tiny_model_dir, tmp_path / "pairs.parquet", tmp_path / "ppm", FAST)


def test_a_killed_ppm_training_resumes_to_the_same_weights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    pairs_frame(24).write_parquet(tmp_path / "pairs.parquet")
    config = replace(FAST, checkpoint_minutes=1e-4)  # a checkpoint after every step
    whole = train_ppm(tiny_model_dir, tmp_path / "pairs.parquet", tmp_path / "whole", config)
    assert whole["optimizer_steps"] > 2

    class Killed(RuntimeError):
        pass

    def kill_at_step_2(step: int, loss: float) -> None:
        if step == 2:
            raise Killed

    with pytest.raises(Killed):
        train_ppm(tiny_model_dir, tmp_path / "pairs.parquet", tmp_path / "ppm", config,
                  on_step=kill_at_step_2)  # fmt: skip
    taken: list[int] = []
    resumed = train_ppm(tiny_model_dir, tmp_path / "pairs.parquet", tmp_path / "ppm", config,
                        on_step=lambda step, _: taken.append(step))  # fmt: skip
    assert taken == list(range(2, whole["optimizer_steps"] + 1))
    assert resumed["heldout_accuracy_after"] == whole["heldout_accuracy_after"]
    for name in ("model.safetensors", "value_head.safetensors"):
        found = sorted((tmp_path / "ppm").rglob(name))
        assert found and [p.read_bytes() for p in found] == [
            p.read_bytes() for p in sorted((tmp_path / "whole").rglob(name))
        ]
    assert not (tmp_path / ".ppm.resume.pt").exists()
