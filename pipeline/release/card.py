"""The dataset card of a published folder: YAML front matter and the markdown body.

The body's "Train with TRL" snippets are the contract a user relies on: each one trains a
config on the text and objective the pipeline uses for its own models (tests/test_publish_trl.py
runs them as written against a built folder). ``DATA`` in them is what ``load_dataset`` reads
(the built folder, or the Hub id once pushed); ``MODEL`` is a policy the pipeline trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import layout

PAPER = "https://arxiv.org/abs/2501.04519"
TRL_TESTED = "1.13.0"  # the dev extra's pin: the last TRL with PRMTrainer (gone in 1.14.0)
SIZE_CATEGORIES = ((1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"), (1e6, "100K<n<1M"),
                   (1e7, "1M<n<10M"), (1e8, "10M<n<100M"), (1e9, "100M<n<1B"))  # fmt: skip
TAGS = ["math", "reasoning", "mcts", "process-reward-model", "preference", "rstar-math",
        "synthetic", "trl", "dvc"]  # fmt: skip
MODEL_HINT = "a policy trained by rstar-data: its tokenizer has the step markers as special tokens"

RECIPE = """\
Self-evolution data of [rStar-Math]({paper}) (Guan et al., 2025), rebuilt by the open \
`rstar-data` DVC pipeline: for every seed math problem, Monte Carlo Tree Search over \
code-augmented reasoning steps (each step is Python whose comments carry the reasoning; every \
step is executed, failing steps are penalised), terminal answers graded against the ground truth \
and backed up as Q-values; from the trees, the SFT set (top-2 correct trajectories per problem by \
mean Q) and step-level preference pairs for the process preference model (PPM: high-Q vs low-Q \
sibling steps). In PPM-augmented rounds the previous round's PPM initialises every new step's \
value."""

COLUMNS = """\
What each TRL trainer does with the columns (TRL {trl}):

- `sft` (`SFTTrainer`): trains on `prompt + completion + EOS` with the loss on the completion \
only, the pipeline's own SFT text: `prompt` ends with the newline the pipeline puts between the \
prompt and the response (the contract's `response` is `completion`). Other columns are ignored.
- `pairs` (`RewardTrainer`): scores `prompt + chosen` and `prompt + rejected` (`prompt` is the \
contract's `prefix`: the prompt and the solution so far). TRL appends EOS; with EOS as the pad \
token (as below) the reward is read at the step's last token, where the pipeline's PPM reads its \
value. The pipeline's PPM loss is `weight * -log sigmoid(r_chosen - r_rejected)` summed over the \
pairs: plain `RewardTrainer` ignores `weight` and takes the mean, so the snippet below adds it. \
The Q gap is `q_margin`, not `margin`: TRL would subtract a `margin` column inside the loss, \
which the pipeline never does.
- `steps` (PRM): one row per trajectory; `prompt + ''.join(completions)` is the trajectory's text \
and each label (Q > 0) sits on the last token of its step, the text the PPM scores for that \
partial solution. Steps carry their own markers: `step_separator=""`. The pipeline trains no \
model on this config (its PPM learns from `pairs`); it is a view for PRM training. \
`PRMTrainer` is in TRL 1.12.0 and 1.13.0 only (removed in 1.14.0), as `trl.experimental.prm.PRMTrainer`.

`rounds` lists every round that produced a row; see "Repeats across rounds"."""


@dataclass
class ConfigOut:
    """One config of the published dataset: rows per split, shard paths, columns, its purpose."""

    name: str
    about: str
    splits: dict[str, int] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    repeats: int | None = None  # rows dropped as repeats of another round's row; None: no dedup

    @property
    def rows(self) -> int:
        return sum(self.splits.values())


@dataclass
class CardInputs:
    """Everything the body shows besides the configs."""

    repo: Path
    rounds: list[str]
    params_text: str
    validation: dict[str, dict[str, Any]]
    pretty_name: str
    data: str  # what the snippets load: the built folder or the Hub id
    model: str  # the policy the snippets train
    revision: dict[str, Any]
    hashes: dict[str, str | None]


def size_category(rows: int) -> str:
    for limit, label in SIZE_CATEGORIES:
        if rows < limit:
            return label
    return "n>1B"


def card_metadata(configs: list[ConfigOut], license: str, pretty_name: str) -> dict[str, Any]:
    """The card's YAML front matter: configs and their data files, license, categories, tags."""
    entries = []
    for config in (c for c in configs if c.files):
        entry: dict[str, Any] = {"config_name": config.name}
        if config.name == "sft":
            entry["default"] = True
        entry["data_files"] = [
            {"split": split, "path": f"data/{config.name}/{split}-*.parquet"}
            for split in config.files
        ]
        entries.append(entry)
    largest = max((c.rows for c in configs), default=0)
    return {
        "license": license,
        "language": ["en"],
        "pretty_name": pretty_name,
        "task_categories": ["text-generation", "reinforcement-learning"],
        "tags": TAGS,
        "size_categories": [size_category(largest)],
        "configs": entries,
    }


# --------------------------------------------------------------------------- snippets


def snippets(data: str, model: str) -> dict[str, str]:
    """Per config, a self-contained Python snippet that trains it with TRL (one epoch)."""
    head = f'DATA = "{data}"\nMODEL = "{model}"  # {MODEL_HINT}\n'
    sft = f"""\
import torch
from datasets import load_dataset
from trl import SFTConfig, SFTTrainer

{head}
sft = load_dataset(DATA, "sft")
args = SFTConfig(output_dir="sft-out", num_train_epochs=1, per_device_train_batch_size=8,
                 bf16=torch.cuda.is_available(), report_to=[])
SFTTrainer(model=MODEL, args=args, train_dataset=sft["train"]).train()
"""
    pairs = f'''\
import torch
import torch.nn.functional as F
from datasets import load_dataset
from transformers import AutoTokenizer
from trl import RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

{head}

class WeightedPairs(DataCollatorForPreference):
    """TRL's batch plus each pair's `weight`, which TRL's own collator leaves out."""

    def torch_call(self, examples):
        batch = super().torch_call(examples)
        batch["weight"] = torch.tensor([example["weight"] for example in examples])
        return batch


class PPMLossTrainer(RewardTrainer):
    """The pipeline's PPM loss: sum over pairs of weight * -log sigmoid(r_chosen - r_rejected)."""

    def _set_signature_columns_if_needed(self):
        self._signature_columns = ["chosen_ids", "rejected_ids", "weight"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weight = inputs.pop("weight")
        rewards = model(**inputs, use_cache=False).logits.squeeze(-1)
        chosen, rejected = rewards.chunk(2)
        return (weight * -F.logsigmoid(chosen - rejected)).sum()


pairs = load_dataset(DATA, "pairs")
tokenizer = AutoTokenizer.from_pretrained(MODEL)
args = RewardConfig(output_dir="ppm-out", num_train_epochs=1, per_device_train_batch_size=8,
                    pad_token=tokenizer.eos_token, bf16=torch.cuda.is_available(), report_to=[])
PPMLossTrainer(model=MODEL, args=args, train_dataset=pairs["train"], processing_class=tokenizer,
               data_collator=WeightedPairs(pad_token_id=tokenizer.eos_token_id)).train()
'''
    steps = f"""\
import torch
from datasets import load_dataset
from transformers import AutoModelForTokenClassification, AutoTokenizer
from trl.experimental.prm import PRMConfig, PRMTrainer  # TRL 1.12.0 and 1.13.0

{head}
steps = load_dataset(DATA, "steps")
tokenizer = AutoTokenizer.from_pretrained(MODEL)
tokenizer.bos_token = None  # the PPM's texts have no BOS; PRMTrainer prepends one when set
model = AutoModelForTokenClassification.from_pretrained(MODEL, num_labels=2)
args = PRMConfig(output_dir="prm-out", step_separator="", num_train_epochs=1,
                 per_device_train_batch_size=8, bf16=torch.cuda.is_available(), report_to=[])
PRMTrainer(model=model, args=args, train_dataset=steps["train"], processing_class=tokenizer).train()
"""
    return {"sft": sft, "pairs": pairs, "steps": steps}


def python_blocks(markdown: str, section: str) -> list[str]:
    """The ```python blocks under the ``## section`` heading of a card body, in order."""
    part = markdown.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = [chunk.split("```", 1)[0] for chunk in part.split("```python\n")[1:]]
    return [block for block in blocks if block.strip()]


# --------------------------------------------------------------------------- the body


def _round_rows(repo: Path, rounds: list[str]) -> list[str]:
    """One markdown row per round from data/stats/rN.json and data/eval/rN.json."""
    rows = []
    for key in rounds:
        stats_path = repo / layout.DATA / "stats" / f"{key}.json"
        eval_path = repo / layout.DATA / "eval" / f"{key}.json"
        total: dict[str, Any] = {}
        if stats_path.is_file():
            entries = json.loads(stats_path.read_text()).get("rounds", {})
            total = entries.get(str(layout.round_number(key)), {}).get("total", {})
        accuracy = (
            json.loads(eval_path.read_text()).get("accuracy", {}) if eval_path.is_file() else {}
        )
        shown = ", ".join(f"{name} {value:.3f}" for name, value in sorted(accuracy.items())
                          if isinstance(value, (int, float))) or "–"  # fmt: skip
        cells = [total.get(name, "–") for name in
                 ("problems", "solved", "trajectories", "correct_trajectories", "sft_rows", "pairs")]  # fmt: skip
        rows.append(f"| {key} | " + " | ".join(str(c) for c in cells) + f" | {shown} |")
    return rows


def _repeat_rows(configs: list[ConfigOut]) -> list[str]:
    return [
        f"| `{c.name}` | {c.rows + c.repeats} | {c.repeats} | {c.rows} |"
        for c in configs
        if c.repeats is not None
    ]


def card_body(configs: list[ConfigOut], inputs: CardInputs) -> str:
    """The card's markdown: recipe, configs, training with TRL, repeats, stats, provenance."""
    empty = [f"`{c.name}` {split}" for c in configs for split, n in c.splits.items() if n == 0]
    config_rows = [
        f"| `{c.name}` | " + ", ".join(f"{s}: {n}" for s, n in c.splits.items()) + f" | {c.about} | "
        + ", ".join(f"`{col}`" for col in c.columns) + " |"
        for c in configs
    ]  # fmt: skip
    revision = inputs.revision
    commit = revision["commit"] or "unknown (not a git repository)"
    dirty = {True: " (with uncommitted changes)", False: "", None: ""}[revision["dirty"]]
    code = snippets(inputs.data, inputs.model)
    lines = [
        f"# {inputs.pretty_name}", "",
        RECIPE.format(paper=PAPER), "",
        f"Rounds: {', '.join(inputs.rounds)}.", "",
        "## Configs", "",
        "| config | rows | what | columns |",
        "|---|---|---|---|",
        *config_rows, "",
    ]  # fmt: skip
    if empty:
        lines += [f"Empty in this build, so not listed as data files: {', '.join(empty)}.", ""]
    lines += [
        COLUMNS.format(trl=TRL_TESTED), "",
        "## Train with TRL", "",
        f"Tested with `trl=={TRL_TESTED}` and `transformers>=5.16.1,<5.20`. Each snippet trains one "
        "config for one epoch; `MODEL` must be " + MODEL_HINT + " (the pipeline adds them before "
        "its first training, so a base model tokenizes the markers differently).", "",
        "SFT, the pipeline's policy objective:", "",
        "```python", code["sft"].rstrip(), "```", "",
        "PPM pairs, the pipeline's PPM objective (weighted pairwise loss, summed):", "",
        "```python", code["pairs"].rstrip(), "```", "",
        "Stepwise labels with TRL's PRM trainer:", "",
        "```python", code["steps"].rstrip(), "```", "",
        "## Repeats across rounds", "",
        "A round's search can find a row an earlier round already found. Each text is published "
        "once: rows of `sft` with the same problem, prompt and completion, rows of `pairs` with "
        "the same problem, prompt, chosen and rejected, and rows of `steps` with the same problem "
        "and completions are one row: the latest round's, with that round's Q-values "
        "and labels; `rounds` lists every round that had it. `trajectories` keeps every "
        "round's rows as they are.", "",
        "| config | rows in the rounds | repeats removed | rows published |",
        "|---|---|---|---|",
        *_repeat_rows(configs), "",
        "## Rounds", "",
        "| round | problems | solved | trajectories | correct | SFT rows | pairs | held-out accuracy |",
        "|---|---|---|---|---|---|---|---|",
        *_round_rows(inputs.repo, inputs.rounds), "",
        "## Validation", "",
        "Every published table passed its checks before this build:", "",
        *[f"- `{path}`: {v['rows']} rows, {v['checks']} checks" for path, v in inputs.validation.items()],
        "",
        "## Parameters", "",
        "```yaml", inputs.params_text.rstrip(), "```", "",
        "## Provenance", "",
        f"- git commit: `{commit}`{dirty}",
        "- DVC hashes (md5 in `dvc.lock`) of the source tables:",
        *[f"  - `{path}`: `{md5 or 'not in dvc.lock'}`" for path, md5 in inputs.hashes.items()],
        "",
        "## Citation", "",
        "```bibtex",
        "@article{guan2025rstar,",
        "  title={rStar-Math: Small LLMs Can Master Math Reasoning with Self-Evolved Deep Thinking},",
        "  author={Guan, Xinyu and Zhang, Li Lyna and Liu, Yifei and Shang, Ning and Sun, Youran and Zhu, Yi and Yang, Fan and Yang, Mao},",
        "  journal={arXiv preprint arXiv:2501.04519},",
        "  year={2025}",
        "}",
        "```", "",
    ]  # fmt: skip
    return "\n".join(lines)


def write_card(folder: Path, metadata: dict[str, Any], body: str) -> Path:
    path = folder / "README.md"
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    path.write_text(f"---\n{front}---\n\n{body}")
    return path
