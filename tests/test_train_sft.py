"""Policy SFT (pipeline.models.train.sft) and the training stages, on the tiny random model.

The SFT set has a learnable pattern: every response is the same three-step program around the
problem's two numbers, so a model that learns the format lowers its held-out loss a lot and
learns to emit EOS right after ``<end_of_answer>``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
import torch

from pipeline.config import TrainConfig
from pipeline.models.base import ModelError
from pipeline.models.train.common import heldout_problems, length_batches, remove_stale_temps
from pipeline.models.train.sft import IGNORE, Example, ResponseLoss, encode, train_sft
from pipeline.search import steps

FAST = TrainConfig(epochs=4, learning_rate=3e-2, batch_size=8, max_length=192, warmup_ratio=0.1,
                   heldout_fraction=0.2)  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two shared cores: one intra-op thread avoids thread contention that slows tiny ops 100x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def addition_problem(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(2, 60), rng.randint(2, 60)
    question = f"Tom has {a} apples and buys {b} more. How many apples does he have?"
    solution = steps.render_solution([
        steps.code_step(f"# Step 1: add the apples\ntotal = {a} + {b}"),
        steps.last_code_step("# Step 2: print it\nprint(total)", str(a + b)),
        steps.answer_step(str(a + b)),
    ])  # fmt: skip
    return question, solution, str(a + b)


def sft_frame(n: int, seed: int = 0) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question, solution, _ = addition_problem(rng)
        rows.append({"problem_id": f"p{i:03d}", "round": 1, "prompt": steps.sft_prompt(question),
                     "response": solution, "mean_q": 1.0, "rank": 1})  # fmt: skip
    return pl.DataFrame(rows)


def eos_probability(model_dir: Path, prompt: str, response: str) -> float:
    """p(EOS | prompt + "\\n" + response): how ready the model is to stop after the answer."""
    from pipeline.models.base import load_causal_lm

    model, tokenizer = load_causal_lm(model_dir)
    ids = tokenizer(prompt + "\n" + response, return_tensors="pt").input_ids
    with torch.no_grad():
        probs = model(input_ids=ids).logits[0, -1].softmax(-1)
    return probs[tokenizer.eos_token_id].item()


@pytest.fixture(scope="module")
def sft_run(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict, pl.DataFrame]:
    frame = sft_frame(40)
    source = tmp_path_factory.mktemp("sft") / "sft.parquet"
    frame.write_parquet(source)
    out = source.parent / "policy"
    metrics = train_sft(tiny_model_dir, frame, out, FAST, source=source)
    return out, metrics, frame


# --------------------------------------------------------------------------- learning


def test_sft_lowers_heldout_loss_and_learns_to_stop(sft_run, tiny_model_dir: Path) -> None:
    out, metrics, _ = sft_run
    # 40 problems, heldout_fraction 0.2 -> 8 held out by hash, never trained on
    assert metrics["heldout_problems"] == 8 and metrics["train_examples"] == 32
    # random init sits at ln(49k) ~ 10.8; the template is learnable far below that
    assert metrics["heldout_loss_before"] > 10
    assert metrics["heldout_loss_after"] < 0.5 * metrics["heldout_loss_before"]
    assert metrics["train_loss_last"] < metrics["train_loss_first"]
    # EOS was appended to every response: after <end_of_answer> the model now expects it
    question, solution, _ = addition_problem(random.Random(99))
    before = eos_probability(tiny_model_dir, steps.sft_prompt(question), solution)
    after = eos_probability(out, steps.sft_prompt(question), solution)
    assert after > 100 * before


def test_trained_folder_has_card_with_provenance(sft_run) -> None:
    out, metrics, _ = sft_run
    names = {path.name for path in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
        "README.md",
    } <= names
    card = (out / "README.md").read_text()
    assert metrics["source_sha1"] in card and str(metrics["source"]) in card
    assert '"learning_rate": 0.03' in card and "heldout_loss_after" in card


def test_markers_are_single_special_tokens_added_once(sft_run, tmp_path: Path) -> None:
    out, metrics, frame = sft_run
    assert metrics["markers_added"] == list(steps.MARKERS)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer(steps.END_OF_STEP, add_special_tokens=False).input_ids) == 1
    size = len(tokenizer)
    again = train_sft(
        out, frame.head(12), tmp_path / "again", TrainConfig(max_steps=1, batch_size=4)
    )
    assert again["markers_added"] == []
    assert len(AutoTokenizer.from_pretrained(tmp_path / "again")) == size


def test_response_loss_equals_the_models_own_loss(tiny_model_dir: Path) -> None:
    from pipeline.models.base import load_causal_lm

    model, tokenizer = load_causal_lm(tiny_model_dir)
    rows = [
        encode(tokenizer, Example(f"p{i}", f"Question {i}?", f"Answer {i} is {i * 7}."), 64)
        for i in range(3)
    ]
    from pipeline.models.train.sft import collate

    batch = collate(rows, tokenizer.pad_token_id)
    with torch.no_grad():
        loss_sum, count = ResponseLoss(model)(**batch)
        reference = model(**batch).loss
    assert torch.allclose(loss_sum / count, reference, atol=1e-5)


def test_encode_masks_the_prompt_and_ends_with_eos(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    example = Example("p", "What is 2 + 3?", "<code>\nprint(2 + 3)\n<end_of_code>")
    row = encode(tokenizer, example, 512)
    labelled = [token for token in row.labels if token != IGNORE]
    assert labelled[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(labelled[:-1]) == example.response
    assert (
        tokenizer.decode(row.input_ids[: len(row.input_ids) - len(labelled)])
        == example.prompt + "\n"
    )
    # a cap shorter than the prompt leaves no response token: the row is dropped
    assert encode(tokenizer, example, 4) is None


# --------------------------------------------------------------------------- robustness


class Killed(RuntimeError):
    pass


def test_killed_run_leaves_nothing_and_stale_temps_do_not_break_the_next(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    frame = sft_frame(12)
    out = tmp_path / "policy"

    def kill(step: int, loss: float) -> None:
        raise Killed(f"killed at step {step}")

    with pytest.raises(Killed):
        train_sft(tiny_model_dir, frame, out, TrainConfig(batch_size=4), on_step=kill)
    assert not out.exists() and list(tmp_path.iterdir()) == []

    # a SIGKILL during the final rename leaves temp folders; the next run clears them
    (tmp_path / ".policy.tmp-99999").mkdir()
    (tmp_path / ".policy.tmp-99999" / "model.safetensors").write_bytes(b"half")
    metrics = train_sft(tiny_model_dir, frame, out, TrainConfig(batch_size=4, max_steps=1))
    assert metrics["trained"] and (out / "model.safetensors").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["policy"]


def test_same_seed_same_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(batch_size=4, max_steps=2, learning_rate=1e-2)
    for name in ("a", "b"):
        train_sft(tiny_model_dir, sft_frame(12), tmp_path / name, config)
    a, b = ((tmp_path / name / "model.safetensors").read_bytes() for name in ("a", "b"))
    assert a == b


def test_bf16_autocast_learns_keeps_fp32_weights_and_shares_a_process_with_fp32(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from safetensors import safe_open

    from pipeline.models.train import common

    monkeypatch.setattr(common, "native_bf16", lambda: True)  # `auto` on a machine with bf16
    assert common.autocast_bf16(TrainConfig(bf16="auto"))
    metrics = {}
    for name, bf16 in (("bf16", "auto"), ("fp32", False)):  # one process, both precisions
        config = replace(FAST, bf16=bf16, epochs=2)
        metrics[name] = train_sft(tiny_model_dir, sft_frame(40), tmp_path / name, config)
    bf16_run = metrics["bf16"]
    assert bf16_run["heldout_loss_after"] < 0.5 * bf16_run["heldout_loss_before"]
    weights = {}
    for name in metrics:
        with safe_open(str(tmp_path / name / "model.safetensors"), "pt") as f:
            weights[name] = {key: f.get_tensor(key) for key in f.keys()}
    # saved as trained: fp32, so the next round fine-tunes the exact weights
    assert {t.dtype for t in weights["bf16"].values()} == {torch.float32}
    # and bf16 really ran: the two runs reach different weights
    assert any(not torch.equal(weights["bf16"][k], weights["fp32"][k]) for k in weights["fp32"])
    monkeypatch.setattr(common, "native_bf16", lambda: False)
    assert not common.autocast_bf16(TrainConfig(bf16="auto"))


def test_corrupt_checkpoint_is_a_one_line_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError) as error:
        train_sft(broken, sft_frame(4), tmp_path / "out", TrainConfig(max_steps=1))
    assert str(broken) in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_empty_sft_set_copies_the_start_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    empty = sft_frame(1).clear()
    metrics = train_sft(tiny_model_dir, empty, tmp_path / "policy", TrainConfig())
    assert metrics["trained"] is False and "unchanged" in metrics["note"]
    for file in tiny_model_dir.iterdir():
        assert (tmp_path / "policy" / file.name).read_bytes() == file.read_bytes()


def test_heldout_split_is_by_problem_hash_and_skips_tiny_sets() -> None:
    ids = [f"p{i}" for i in range(50)]
    held, reason = heldout_problems(ids, 0.1)
    assert reason is None and len(held) == 5
    assert (
        heldout_problems(list(reversed(ids)) + ids, 0.1)[0] == held
    )  # order and repeats do not matter
    assert heldout_problems(ids[:5], 0.1) == (
        set(),
        "too few problems (5) for heldout_fraction 0.1",
    )
    assert heldout_problems(ids, 0.0)[1] == "heldout_fraction is 0"


def test_length_batches_cover_every_row_once_with_similar_lengths() -> None:
    lengths = [random.Random(i).randint(5, 500) for i in range(37)]
    batches = length_batches(lengths, 4, seed=0, epoch=0)
    assert sorted(i for batch in batches for i in batch) == list(range(37))
    assert batches == length_batches(lengths, 4, seed=0, epoch=0)
    assert batches != length_batches(lengths, 4, seed=0, epoch=1)
    spread = max(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread < 100  # sorted by length: a batch never mixes short and long rows


def test_remove_stale_temps_touches_only_its_own_folder(tmp_path: Path) -> None:
    for name in (".policy.tmp-1", ".policy.old-2", ".ppm.tmp-3", "policy"):
        (tmp_path / name).mkdir()
    remove_stale_temps(tmp_path / "policy")
    assert sorted(path.name for path in tmp_path.iterdir()) == [".ppm.tmp-3", "policy"]


# --------------------------------------------------------------------------- stages


def _problems(n: int) -> pl.DataFrame:
    rng = random.Random(1)
    rows = []
    for i in range(n):
        question, solution, answer = addition_problem(rng)
        rows.append({"problem_id": f"q{i:03d}", "question": question, "answer": answer, "source": "test",
                     "split": "test" if i % 5 == 0 else "train", "solution": solution if i % 7 else None,
                     "meta": "{}"})  # fmt: skip
    return pl.DataFrame(rows)


@pytest.mark.slow
def test_training_stages_run_end_to_end(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """warm_start -> train_policy r1 -> train_ppm r1 -> train_policy r2 (empty SFT set)."""
    from stages import train_policy, train_ppm, warm_start
    from tests.test_ppm import pairs_frame

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, "data/models/policy/base")
    Path("data/seeds").mkdir(parents=True)
    _problems(20).write_parquet("data/seeds/problems.parquet")
    fast = {"epochs": 1, "learning_rate": 1e-2, "batch_size": 4, "max_length": 192}
    params = {
        "warm_start": fast | {"enabled": True, "eval_problems": 0},
        "train_policy": fast | {"from_base": False},
        "train_ppm": fast,
        "rounds": {
            "r1": {"policy": "warm_start", "ppm": "none"},
            "r2": {"policy": "r1", "ppm": "none"},
        },
    }
    Path("params.yaml").write_text(json.dumps(params))  # JSON is YAML

    warm_start.main([])
    metrics = json.loads(Path("data/models/warm_start_metrics.json").read_text())
    # 20 problems: 16 train, of which those with i % 7 == 0 have no solution (i = 7, 14)
    assert metrics["examples"] == 14 and metrics["trained"]
    assert (Path("data/models/policy/warm_start") / "model.safetensors").exists()

    Path("data/rounds/r1").mkdir(parents=True)
    sft_frame(10).write_parquet("data/rounds/r1/sft.parquet")
    pairs_frame(12).write_parquet("data/rounds/r1/pairs.parquet")
    train_policy.main(["--round", "r1"])
    policy_metrics = json.loads(Path("data/rounds/r1/train_policy_metrics.json").read_text())
    assert policy_metrics["start_model"] == os.path.join("data", "models", "policy", "warm_start")
    assert policy_metrics["markers_added"] == []  # the warm start added them already

    train_ppm.main(["--round", "r1"])
    ppm_metrics = json.loads(Path("data/rounds/r1/train_ppm_metrics.json").read_text())
    assert ppm_metrics["pairs"] == 12 and ppm_metrics["policy"] == os.path.join(
        "data", "models", "policy", "r1"
    )
    from pipeline.models.ppm import PPM

    assert len(PPM.load("data/models/ppm/r1").score(["a", "b"])) == 2

    Path("data/rounds/r2").mkdir(parents=True)
    sft_frame(1).clear().write_parquet("data/rounds/r2/sft.parquet")
    train_policy.main(["--round", "r2"])
    r2 = json.loads(Path("data/rounds/r2/train_policy_metrics.json").read_text())
    assert r2["trained"] is False and r2["start_model"] == os.path.join(
        "data", "models", "policy", "r1"
    )
    assert (Path("data/models/policy/r2") / "model.safetensors").read_bytes() == (
        Path("data/models/policy/r1") / "model.safetensors").read_bytes()  # fmt: skip


def test_stage_reports_a_missing_input_in_one_line(tmp_path: Path, monkeypatch) -> None:
    from stages import train_policy

    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("train_policy: {epochs: 1}\n")
    with pytest.raises(SystemExit) as exit_:
        train_policy.main(["--round", "r1"])
    assert "data/rounds/r1/sft.parquet: no such SFT set" in str(exit_.value.code)


def test_disabled_warm_start_writes_a_marker_folder_only(tmp_path: Path, monkeypatch) -> None:
    from stages import warm_start

    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("warm_start: {enabled: false}\n")
    warm_start.main([])
    assert json.loads(Path("data/models/warm_start_metrics.json").read_text()) == {"enabled": False}
    assert [path.name for path in Path("data/models/policy/warm_start").iterdir()] == ["README.md"]


@pytest.mark.slow
def test_round_0_is_evaluated_on_the_evaluate_split_when_asked(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    pytest.importorskip("pipeline.grading.answer")
    pytest.importorskip("pipeline.execution.sandbox")
    from stages import evaluate_warm_start, warm_start

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, "data/models/policy/base")
    Path("data/seeds").mkdir(parents=True)
    problems = _problems(10).with_columns(
        split=pl.when(pl.col("problem_id").is_in(["q001", "q003"]))
        .then(pl.lit("validation"))
        .otherwise(pl.col("split"))
    )
    problems.write_parquet("data/seeds/problems.parquet")
    params = {
        "warm_start": {"max_steps": 1, "batch_size": 4, "max_length": 192,
                       "eval_problems": 2, "eval_samples": 2},
        "mcts": {"max_new_tokens": 8, "max_depth": 2},
        "sandbox": {"workers": 1},
        "evaluate": {"split": "validation", "samples": 0, "mcts_rollouts": 4},
    }  # fmt: skip
    Path("params.yaml").write_text(json.dumps(params))
    warm_start.main([])
    assert "eval" not in json.loads(Path("data/models/warm_start_metrics.json").read_text())
    evaluate_warm_start.main([])
    evaluation = json.loads(Path("data/eval/r0.json").read_text())
    # The warm start's size and samples, the `evaluate` group's split, no PPM method.
    assert evaluation["problems"] == 2 and set(evaluation["by_problem"]) == {"q001", "q003"}
    assert {"greedy", "pass_at_2", "maj_at_2"} <= set(evaluation["accuracy"])
    assert not any(method.startswith("ppm_") for method in evaluation["accuracy"])
    summary = json.loads(Path("data/metrics/r0.json").read_text())
    assert summary["eval_problems"] == 2 and summary["accuracy"] == evaluation["accuracy"]
    assert summary["seconds"] >= evaluation["seconds"]


def test_a_disabled_warm_start_is_not_evaluated(tmp_path: Path, monkeypatch) -> None:
    from stages import evaluate_warm_start, warm_start

    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("warm_start: {enabled: false, eval_problems: 200}\n")
    warm_start.main([])
    evaluate_warm_start.main([])
    assert json.loads(Path("data/eval/r0.json").read_text()) == {"round": 0, "problems": 0}
    summary = json.loads(Path("data/metrics/r0.json").read_text())
    assert summary["enabled"] is False and summary["accuracy"] == {}


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_weights(
    tiny_model_dir: Path, tmp_path: Path, caplog
) -> None:
    frame = sft_frame(12)
    # Saves after every step (a checkpoint is due after 0.006 s).
    config = TrainConfig(batch_size=4, epochs=3, learning_rate=1e-2, checkpoint_minutes=1e-4)
    whole = train_sft(tiny_model_dir, frame, tmp_path / "whole", config)
    every_step = list(range(1, whole["optimizer_steps"] + 1))
    assert len(every_step) > 4
    out = tmp_path / "policy"
    checkpoint = tmp_path / ".policy.resume.pt"

    def kill_at_step_4(step: int, loss: float) -> None:
        if step == 4:
            raise Killed("killed at step 4")

    with pytest.raises(Killed):
        train_sft(tiny_model_dir, frame, out, config, on_step=kill_at_step_4)
    assert not out.exists() and checkpoint.is_file()  # steps 1-3 saved

    taken = []
    resumed = train_sft(tiny_model_dir, frame, out, config, on_step=lambda s, _: taken.append(s))
    assert taken == every_step[3:]  # only the steps the killed run had not finished
    assert resumed["optimizer_steps"] == whole["optimizer_steps"]
    assert resumed["train_loss_first"] == whole["train_loss_first"]
    assert (out / "model.safetensors").read_bytes() == (
        tmp_path / "whole" / "model.safetensors").read_bytes()  # fmt: skip
    assert not checkpoint.exists()  # removed once the policy is saved

    # Another run's checkpoint, or a damaged one, is not resumed: the run starts over.
    with pytest.raises(Killed):
        train_sft(tiny_model_dir, frame, out, config, on_step=kill_at_step_4)
    taken.clear()
    other = replace(config, learning_rate=2e-2)
    train_sft(tiny_model_dir, frame, out, other, on_step=lambda s, _: taken.append(s))
    assert taken == every_step and not checkpoint.exists()
    with pytest.raises(Killed):
        train_sft(tiny_model_dir, frame, out, config, on_step=kill_at_step_4)
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    taken.clear()
    train_sft(tiny_model_dir, frame, out, config, on_step=lambda s, _: taken.append(s))
    assert taken == every_step and "unreadable checkpoint" in caplog.text
    assert (out / "model.safetensors").read_bytes() == (
        tmp_path / "whole" / "model.safetensors").read_bytes()  # fmt: skip
