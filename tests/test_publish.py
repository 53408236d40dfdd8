"""Publishing: the Hub-ready dataset folder and the push's checks (pipeline.release.publish).

The folder is built from the session's smoke DAG and loaded back with `datasets`, offline, and
every config's rows are compared with the pipeline's own tables. The smoke build's few pairs all
fall on the train side, so a copy of its tables with a few valid hand-made rows (one pair held
out) shows those configs in TRL's columns with both splits; the same copy with a pair whose chosen step equals its rejected step
must stop the publish.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
import yaml

from pipeline.release.publish import (
    ContractError,
    PublishError,
    build_dataset_folder,
    push_to_hub,
    run_publish_cli,
    size_category,
)
from pipeline.search import steps

CONFIGS = ("problems", "trajectories", "sft", "pairs", "steps")


def front_matter(card: Path) -> tuple[dict, str]:
    """The card's YAML header and its markdown body."""
    text = card.read_text()
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def load(folder: Path, config: str, cache: Path):  # -> datasets.DatasetDict
    import datasets

    return datasets.load_dataset(str(folder), config, cache_dir=str(cache))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


def expected_splits(repo: Path, rounds: list[str]) -> dict[str, dict[str, int]]:
    """Rows per config and split, counted from the pipeline's tables."""

    def rounds_of(table: str) -> pl.DataFrame:
        return pl.concat(
            [pl.read_parquet(repo / f"data/rounds/{k}/{table}.parquet") for k in rounds]
        )

    def by_split(frame: pl.DataFrame) -> dict[str, int]:
        counts = dict(frame.group_by("split").len().iter_rows())
        return {"train": counts.get("train", 0), **counts}

    return {
        "problems": by_split(pl.read_parquet(repo / "data/seeds/problems.parquet")),
        "trajectories": {"train": rounds_of("trajectories").height},
        "steps": {"train": distinct(rounds_of("trajectories"), "steps").height},
        "sft": {"train": distinct(rounds_of("sft"), "sft").height},
        "pairs": by_split(distinct(rounds_of("pairs"), "pairs")),
    }


REPEAT_KEYS = {"sft": ["problem_id", "prompt", "response"],
               "pairs": ["problem_id", "prefix", "chosen", "rejected"],
               "steps": ["problem_id", "steps"]}  # fmt: skip


def distinct(frame: pl.DataFrame, config: str) -> pl.DataFrame:
    """One row per training example of ``config``: the latest round's."""
    return frame.sort("round", descending=True).unique(REPEAT_KEYS[config], keep="first")


def check_folder(folder: Path, repo: Path, rounds: list[str], cache: Path) -> dict:
    """Every config with rows loads with those rows; empty ones are named, not listed."""
    metadata, body = front_matter(folder / "README.md")
    expected = expected_splits(repo, rounds)
    listed = {entry["config_name"]: entry for entry in metadata["configs"]}
    for config in CONFIGS:
        splits = {split: n for split, n in expected[config].items() if n}
        if not splits:
            assert config not in listed and f"`{config}` train" in body
            continue
        order = sorted(splits, key=lambda split: (split != "train", split))
        assert [f["split"] for f in listed[config]["data_files"]] == order
        loaded = load(folder, config, cache)
        assert {split: loaded[split].num_rows for split in loaded} == splits, config
    return metadata


# --------------------------------------------------------------------------- the smoke DAG


@pytest.fixture(scope="module")
def smoke_folder(smoke_repo, tmp_path_factory) -> Path:
    return build_dataset_folder(smoke_repo, None, tmp_path_factory.mktemp("publish") / "dataset")


@pytest.mark.slow  # the smoke DAG
def test_every_config_of_the_smoke_build_loads_with_its_rows(smoke_repo, smoke_folder, offline):
    metadata = check_folder(smoke_folder, smoke_repo, ["r1", "r2"], offline)
    assert metadata["license"] == "mit" and "text-generation" in metadata["task_categories"]
    assert metadata["size_categories"] == ["n<1K"]
    # steps: TRL's PRM columns, one label per step (Q > 0), after the PPM's view of the prompt.
    step_rows = load(smoke_folder, "steps", offline)["train"]
    assert step_rows.column_names[:3] == ["prompt", "completions", "labels"]
    trajectories = pl.concat(
        [
            pl.read_parquet(smoke_repo / f"data/rounds/{k}/trajectories.parquet")
            for k in ("r1", "r2")
        ]
    )
    by_leaf = {(row["round"], row["leaf_id"]): row for row in trajectories.iter_rows(named=True)}
    questions = dict(pl.read_parquet(smoke_repo / "data/seeds/problems.parquet")
                     .select("problem_id", "question").iter_rows())  # fmt: skip
    for row in step_rows:
        source = by_leaf[(row["round"], row["leaf_id"])]
        assert row["round"] == max(row["rounds"])
        assert row["completions"] == source["steps"]
        assert row["labels"] == [q > 0 for q in source["q_values"]]
        assert row["prompt"] == steps.generation_prefix(
            steps.sft_prompt(questions[row["problem_id"]]), []
        )


@pytest.mark.slow  # the smoke DAG
def test_card_names_the_recipe_params_and_revision(smoke_repo, smoke_folder):
    _, body = front_matter(smoke_folder / "README.md")
    assert "https://arxiv.org/abs/2501.04519" in body
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=smoke_repo, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    assert f"git commit: `{head}`" in body
    lock = yaml.safe_load((smoke_repo / "dvc.lock").read_text())
    md5 = next(out["md5"] for out in lock["stages"]["sft@r1"]["outs"]
               if out["path"] == "data/rounds/r1/trajectories.parquet")  # fmt: skip
    assert f"`data/rounds/r1/trajectories.parquet`: `{md5}`" in body
    assert "profile: smoke" in body  # params.yaml, verbatim
    accuracy = json.loads((smoke_repo / "data/eval/r2.json").read_text())["accuracy"]
    assert all(name in body for name in accuracy)


@pytest.mark.slow  # the smoke DAG
def test_stage_rejects_an_unknown_round_before_writing(smoke_repo, tmp_path, monkeypatch):
    from stages.publish import main

    monkeypatch.chdir(smoke_repo)
    assert main(["--rounds", "r9", "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- hand-made rows


def copy_tables(smoke_repo: Path, target: Path) -> Path:
    """Round 1's tables, the problems and the params of the smoke build, in a plain folder."""
    for name in ("params.yaml", "data/seeds/problems.parquet", "data/eval/r1.json",
                 "data/stats/r1.json",
                 *(f"data/rounds/r1/{t}.parquet" for t in ("trajectories", "sft", "pairs"))):  # fmt: skip
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(smoke_repo / name, target / name)
    return target


def add_rows(repo: Path, *, broken: bool = False) -> None:
    """Two valid pairs (one held out) and an SFT row on test-split problems; or a broken pair."""
    problems = pl.read_parquet(repo / "data/seeds/problems.parquet").filter(
        pl.col("split") == "test"
    )
    first, second = problems["problem_id"][0], problems["problem_id"][1]
    pairs_path = repo / "data/rounds/r1/pairs.parquet"
    pairs = pl.read_parquet(pairs_path)
    pair = {"round": 1, "prefix": "<|user|>:\nQ\n<|assistant|>: ...\n<code>\n", "chosen_q": 0.5,
            "rejected_q": -0.5, "margin": 1.0, "weight": 0.25}  # fmt: skip
    rows = [
        {**pair, "problem_id": first, "node_id": "n1", "split": "train",
         "chosen": "x = 2 * 3\n<end_of_step>\n", "rejected": "print(undefined_name)\n<end_of_step>\n"},
        {**pair, "problem_id": second, "node_id": "n2", "split": "test",
         "chosen": "y = 10 - 4\n<end_of_step>\n",
         "rejected": "y = 10 - 4\n<end_of_step>\n" if broken else "y = 'ten' + 4\n<end_of_step>\n"},
    ]  # fmt: skip
    pl.concat([pairs, pl.DataFrame(rows, schema=pairs.schema)]).write_parquet(pairs_path)
    sft_path = repo / "data/rounds/r1/sft.parquet"
    sft = pl.read_parquet(sft_path)
    question = problems["question"][0]
    row = {"problem_id": first, "round": 1, "prompt": steps.sft_prompt(question),
           "response": "<code>\nprint(6)\n<end_of_code>\n", "mean_q": 1.0, "rank": 1}  # fmt: skip
    pl.concat([sft, pl.DataFrame([row], schema=sft.schema)]).write_parquet(sft_path)


@pytest.mark.slow  # the smoke DAG
def test_pairs_and_sft_take_trl_columns(smoke_repo, tmp_path, offline):
    repo = copy_tables(smoke_repo, tmp_path / "repo")
    add_rows(repo)
    folder = build_dataset_folder(
        repo, ["r1"], tmp_path / "dataset", license="cc-by-4.0", rows_per_shard=20
    )
    metadata = check_folder(folder, repo, ["r1"], offline)  # loads every shard of a split
    assert metadata["license"] == "cc-by-4.0"
    rows = pl.read_parquet(repo / "data/rounds/r1/trajectories.parquet").height
    shards = sorted(p.name for p in (folder / "data/trajectories").iterdir())
    count = -(-rows // 20)
    assert shards == [f"train-{i:05d}-of-{count:05d}.parquet" for i in range(count)]
    pairs = load(folder, "pairs", offline)
    source = pl.read_parquet(repo / "data/rounds/r1/pairs.parquet")
    assert pairs["train"].column_names[:3] == ["prompt", "chosen", "rejected"]
    assert "prefix" not in pairs["train"].column_names  # it is `prompt`
    published = pl.concat([pairs[split].to_polars() for split in pairs])
    assert sorted(published["prompt"].to_list()) == sorted(source["prefix"].to_list())
    assert "margin" not in published.columns  # TRL would subtract it in the loss
    assert sorted(published["q_margin"].to_list()) == sorted(source["margin"].to_list())
    held_out = set(source.filter(pl.col("split") == "test")["node_id"])
    assert "n2" in held_out and set(pairs["test"]["node_id"]) == held_out  # the pairs' own split
    sft = load(folder, "sft", offline)["train"]
    assert {"prompt", "completion"} <= set(sft.column_names)
    assert "<code>\nprint(6)\n<end_of_code>\n" in sft["completion"]
    assert all(
        prompt.endswith("\n") for prompt in sft["prompt"]
    )  # as pipeline.models.train.sft joins
    _, body = front_matter(folder / "README.md")
    assert "unknown (not a git repository)" in body


@pytest.mark.slow  # the smoke DAG
def test_a_broken_table_stops_the_publish_and_keeps_the_old_folder(smoke_repo, tmp_path):
    repo = copy_tables(smoke_repo, tmp_path / "repo")
    add_rows(repo, broken=True)
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "README.md").write_text("the previous build")
    with pytest.raises(ContractError) as error:
        build_dataset_folder(repo, ["r1"], out)
    message = str(error.value)
    assert message.splitlines()[0].startswith("not published:")
    assert "data/rounds/r1/pairs.parquet" in message and "chosen != rejected" in message
    assert (out / "README.md").read_text() == "the previous build"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "repo"]  # nothing half-built


def test_size_categories_follow_the_row_counts():
    assert [size_category(n) for n in (0, 999, 1000, 54_321, 2_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M",
    ]  # fmt: skip


# --------------------------------------------------------------------------- the push


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(
        constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored"), raising=False
    )


def test_push_without_a_token_is_a_one_line_error_before_any_work(no_token, tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "README.md").write_text("---\n---\n")
    with pytest.raises(PublishError, match=r"^no Hugging Face token: run `hf auth login`"):
        push_to_hub(folder, "someone/rstar-data")
    # The CLI checks before it builds: an empty folder would fail the build with another error.
    code, message = run_publish_cli(
        tmp_path, rounds=None, out=None, dry_run=False, repo_id="someone/x"
    )
    assert code == 2 and message.startswith("error: no Hugging Face token") and "\n" not in message


def test_push_without_network_is_a_one_line_error(no_token, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, message = run_publish_cli(
        tmp_path, rounds=None, out=None, dry_run=False, repo_id="someone/x"
    )
    assert (
        code == 2
        and message.startswith("error: cannot reach the Hugging Face Hub")
        and "\n" not in message
    )


# --------------------------------------------------------------------------- the DVC stage

# The stage lives in its own dvc.yaml: `dvc repro` reads ./dvc.yaml by default, so a plain
# repro never builds it, and `dvc repro publish/dvc.yaml` builds it (and whatever it needs).


@pytest.mark.slow  # the smoke DAG
def test_publish_stage_runs_only_when_targeted(smoke_repo):
    from tests.conftest import dvc

    assert (smoke_repo / "publish" / "dvc.yaml").is_file()
    try:
        dry = dvc(smoke_repo, "repro", "--dry")
        assert dry.returncode == 0 and "publish" not in dry.stdout, dry.stdout[-2000:]
        run = dvc(smoke_repo, "repro", "publish/dvc.yaml")
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert "Running stage 'publish/dvc.yaml:publish'" in run.stdout
        # Only the publish stage: the round stages it reads were up to date.
        assert run.stdout.count("Running stage") == 1, run.stdout[-2000:]
        metadata, _ = front_matter(smoke_repo / "data/publish/README.md")
        assert {"problems", "trajectories", "steps"} <= {
            c["config_name"] for c in metadata["configs"]
        }
        # What `make repro` and `make smoke` run, both DAGs, leaves every stage up to date.
        status = dvc(smoke_repo, "status", "--json")
        assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout
    finally:
        shutil.rmtree(smoke_repo / "data" / "publish", ignore_errors=True)


# --------------------------------------------------------------------------- repeats across rounds


@pytest.mark.slow  # the smoke DAG
def test_rows_repeated_across_rounds_are_published_once_and_counted(smoke_repo, smoke_folder):
    _, body = front_matter(smoke_folder / "README.md")
    for config, table in (("sft", "sft"), ("pairs", "pairs"), ("steps", "trajectories")):
        frame = pl.concat([pl.read_parquet(smoke_repo / f"data/rounds/{k}/{table}.parquet")
                           for k in ("r1", "r2")])  # fmt: skip
        kept = distinct(frame, config)
        published = pl.concat([pl.read_parquet(p)
                               for p in sorted((smoke_folder / "data" / config).iterdir())])  # fmt: skip
        assert published.height == kept.height
        removed = frame.height - kept.height
        assert f"| `{config}` | {frame.height} | {removed} | {kept.height} |" in body
        # every round that had the row, and the row kept is the latest round's
        seen = frame.group_by(REPEAT_KEYS[config]).agg(pl.col("round").sort().alias("rounds"))
        assert sorted(map(tuple, published["rounds"].to_list())) == sorted(
            map(tuple, seen["rounds"].to_list())
        )
        assert (published["round"] == published["rounds"].list.max()).all()
