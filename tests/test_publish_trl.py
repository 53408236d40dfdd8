"""The published configs under TRL's trainers (the pinned `trl` of the dev extra).

On the smoke build, with the round-2 policy the build trained: TRL must see the tokens the
pipeline's own training sees (pipeline.models.train.sft.encode, pipeline.models.ppm.PPM) and
compute the pipeline's loss, and the card's snippets must run as written against the built folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
import torch

from pipeline.models.ppm import PPM, pairwise_loss
from pipeline.models.train.sft import IGNORE, Example, ResponseLoss, collate, encode
from pipeline.release.card import python_blocks
from pipeline.release.publish import build_dataset_folder
from pipeline.search import steps

pytestmark = pytest.mark.slow  # the smoke DAG and three trainers

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


@pytest.fixture(scope="module")
def built(smoke_repo, tmp_path_factory) -> Path:
    return build_dataset_folder(smoke_repo, None, tmp_path_factory.mktemp("trl") / "dataset")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.chdir(tmp_path)  # the trainers' output folders


def policy(repo: Path) -> str:
    return str(repo / "data/models/policy/r2")


def load(folder: Path, config: str):
    import datasets

    # Its own cache: `datasets` keys a local folder's cache by the config, not the files, so
    # the shared default cache would serve an earlier build's rows (and HF_DATASETS_CACHE is
    # read once, when `datasets` is first imported).
    return datasets.load_dataset(str(folder), config, cache_dir=str(folder.parent / "cache"))[
        "train"
    ]


def card_snippets(folder: Path) -> dict[str, str]:
    blocks = python_blocks((folder / "README.md").read_text(), "Train with TRL")
    return dict(zip(("sft", "pairs", "steps"), blocks, strict=True))


def run_snippet(code: str) -> dict:
    namespace: dict = {"__name__": "card_snippet"}
    exec(compile(code, "card-snippet", "exec"), namespace)  # noqa: S102 - the card's own code
    return namespace


def short_run(output_dir: Path, config_class, **extra):
    return config_class(output_dir=str(output_dir), max_steps=3, per_device_train_batch_size=4,
                        report_to=[], save_strategy="no", logging_steps=1, bf16=False,
                        **extra)  # fmt: skip


def table(repo: Path, name: str) -> pl.DataFrame:
    return pl.concat(
        [pl.read_parquet(repo / f"data/rounds/{k}/{name}.parquet") for k in ("r1", "r2")]
    )


def test_sft_trains_on_the_pipelines_tokens_and_loss(smoke_repo, built, offline, tmp_path):
    from trl import SFTConfig, SFTTrainer

    rows = load(built, "sft")
    trainer = SFTTrainer(model=policy(smoke_repo), args=short_run(tmp_path / "sft", SFTConfig),
                         train_dataset=rows)  # fmt: skip
    tokenizer = trainer.processing_class
    source = {
        (r["round"], r["problem_id"], r["rank"]): r
        for r in table(smoke_repo, "sft").iter_rows(named=True)
    }
    assert trainer.train_dataset.num_rows == rows.num_rows > 0
    encoded = []
    for published, trained in zip(rows, trainer.train_dataset, strict=True):
        own = source[(published["round"], published["problem_id"], published["rank"])]
        ours = encode(tokenizer, Example(own["problem_id"], own["prompt"], own["response"]), 10**6)
        assert trained["input_ids"] == ours.input_ids
        assert trained["labels"] == ours.labels
        encoded.append(ours)
    batch = collate(encoded[:4], tokenizer.pad_token_id)
    model = trainer.model.eval()
    with torch.no_grad():
        loss_sum, count = ResponseLoss(model)(**batch)
        trl_loss = trainer.compute_loss(model, dict(batch))
    assert float(trl_loss) == pytest.approx(float(loss_sum / count), rel=1e-5)
    trainer.train()
    assert trainer.state.global_step == 3


def test_pairs_train_the_ppm_objective(smoke_repo, built, offline, tmp_path):
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    card = run_snippet(card_snippets(built)["pairs"])  # trains one epoch, as a user would
    rows = load(built, "pairs")
    assert "margin" not in rows.column_names and "q_margin" in rows.column_names
    tokenizer = card["tokenizer"]
    args = short_run(tmp_path / "ppm", RewardConfig, pad_token=tokenizer.eos_token)
    collator = card["WeightedPairs"](pad_token_id=tokenizer.eos_token_id)
    trainer = card["PPMLossTrainer"](model=policy(smoke_repo), args=args, train_dataset=rows,
                                     processing_class=tokenizer, data_collator=collator)  # fmt: skip
    model = trainer.model.eval()
    ppm = PPM.from_policy(policy(smoke_repo), max_length=10**6, device="cpu", dtype=torch.float32)
    with torch.no_grad():  # the PPM's head as TRL's score head (its bias cancels in the loss)
        ppm.value_head.weight.copy_(model.score.weight)
        ppm.value_head.bias.zero_()
    ppm.eval()
    trained = trainer.train_dataset
    assert trained.num_rows == rows.num_rows > 0
    for published, row in zip(rows, trained, strict=True):  # TRL rewrites `chosen`: use ours
        for side in ("chosen", "rejected"):
            ours = ppm.encode([published["prompt"] + published[side]])["input_ids"][0].tolist()
            assert row[f"{side}_ids"] == ours + [tokenizer.eos_token_id]  # EOS read as padding
    first = range(min(4, trained.num_rows))
    examples, texts = [trained[i] for i in first], [rows[i] for i in first]
    chosen = torch.tensor(ppm.raw_values([e["prompt"] + e["chosen"] for e in texts]))
    rejected = torch.tensor(ppm.raw_values([e["prompt"] + e["rejected"] for e in texts]))
    weight = torch.tensor([e["weight"] for e in texts])
    with torch.no_grad():
        weighted = trainer.compute_loss(model, collator(examples))
        plain = RewardTrainer(
            model=model, args=args, train_dataset=rows, processing_class=tokenizer
        )
        unweighted = plain.compute_loss(
            model, DataCollatorForPreference(tokenizer.eos_token_id)(examples)
        )
    assert float(weighted) == pytest.approx(
        float((pairwise_loss(chosen, rejected) * weight).sum()), rel=1e-4
    )
    # plain RewardTrainer: the same pair loss, unweighted, and no Q gap subtracted
    assert float(unweighted) == pytest.approx(
        float(pairwise_loss(chosen, rejected).mean()), rel=1e-4
    )
    trainer.train()
    assert trainer.state.global_step == 3


def test_steps_label_the_ppm_text_of_each_partial_solution(smoke_repo, built, offline, tmp_path):
    from transformers import AutoModelForTokenClassification
    from trl.experimental.prm import PRMConfig, PRMTrainer

    card = run_snippet(card_snippets(built)["steps"])  # trains one epoch, as a user would
    tokenizer = card["tokenizer"]
    rows = load(built, "steps")
    model = AutoModelForTokenClassification.from_pretrained(policy(smoke_repo), num_labels=2)
    trainer = PRMTrainer(model=model, args=short_run(tmp_path / "prm", PRMConfig, step_separator=""),
                         train_dataset=rows, processing_class=tokenizer)  # fmt: skip
    questions = dict(pl.read_parquet(smoke_repo / "data/seeds/problems.parquet")
                     .select("problem_id", "question").iter_rows())  # fmt: skip
    assert trainer.train_dataset.num_rows == rows.num_rows > 0
    for published, trained in zip(rows, trainer.train_dataset, strict=True):
        prompt = steps.sft_prompt(questions[published["problem_id"]])
        labelled = [i for i, label in enumerate(trained["labels"]) if label != IGNORE]
        assert len(labelled) == len(published["completions"])
        for k, position in enumerate(labelled, start=1):
            scored = tokenizer(
                steps.generation_prefix(prompt, published["completions"][:k])
            ).input_ids
            assert trained["input_ids"][: position + 1] == scored  # what the PPM scores
            assert trained["labels"][position] == int(published["q_values"][k - 1] > 0)
    trainer.train()
    assert trainer.state.global_step == 3


def test_sft_card_snippet_runs_as_written(built, offline):
    card = run_snippet(card_snippets(built)["sft"])
    assert card["sft"]["train"].num_rows > 0
