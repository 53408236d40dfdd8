"""Evaluation on held-out problems: greedy pass@1, pass@k, PPM best-of-N and PPM-guided MCTS.

A sampled solution is a one-child, one-rollout search: the same step parsing, code execution
and grading as the rollouts, so evaluation and data generation can never disagree on what a
solved problem is. The truth is only used to grade the answer each method finally picks.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import polars as pl

from pipeline import layout, steps
from pipeline.answer import is_equivalent
from pipeline.mcts import MCTS, CodeRunner, MCTSConfig, Problem, Scorer, SearchTree
from pipeline.tree import Node, walk


@dataclass(frozen=True)
class EvalConfig:
    """The `evaluate` params group."""

    source: str = "seeds"  # `seeds` (the test split) or any problem source load_problems reads
    problems: int = 50  # held-out problems to evaluate (0 = all)
    samples: int = 8  # N of pass@N and best-of-N
    temperature: float = 0.7
    mcts_rollouts: int = 4  # PPM-guided search budget per problem
    mcts_children: int = 4
    vote_top: int = 3  # answer of PPM-guided MCTS: vote among the top-scoring trajectories
    # The reference's evaluation: this many independent PPM-guided searches per problem, each
    # giving its best-scored answer, and a majority vote over them (0: off).
    mcts_runs: int = 0
    mcts: dict = field(default_factory=dict)  # overrides of the `mcts` group for evaluation
    seed: int = 0
    shard_size: int = 64  # problems per shard in the stage (shard i searches with its own seed)
    executor: str = "local"  # `local` (the stage's process) or `ray` (the `ray` group's cluster)

    def __post_init__(self) -> None:
        for name in ("problems", "mcts_rollouts", "mcts_runs", "vote_top"):
            if getattr(self, name) < 0:
                raise ValueError(f"evaluate.{name} must not be negative, got {getattr(self, name)}")
        if self.samples < 1 or self.mcts_children < 1:
            raise ValueError("evaluate.samples and evaluate.mcts_children must be at least 1")
        if self.shard_size < 1:
            raise ValueError(f"evaluate.shard_size must be at least 1, got {self.shard_size}")
        if self.executor not in ("local", "ray"):  # pipeline.executors.EXECUTOR_KINDS
            raise ValueError(f"evaluate.executor must be one of local, ray, got {self.executor!r}")


@dataclass
class Chain:
    """One sampled solution."""

    problem: Problem
    leaf: Node | None  # the answer node, or None when the chain ended without an answer

    @property
    def answer(self) -> str | None:
        return self.leaf.final_answer if self.leaf is not None else None

    @property
    def correct(self) -> bool:
        return bool(self.leaf is not None and self.leaf.correct)

    def text(self, prompt: str) -> str:
        texts = self.leaf.step_texts() if self.leaf is not None else []
        return steps.generation_prefix(prompt, texts)


def _answer_leaves(tree: SearchTree) -> list[Node]:
    return [node for node in walk(tree.root) if node.terminal_kind == "answer"]


def sample_chains(
    engine, sandbox: CodeRunner, problems: Sequence[Problem], k: int, search: MCTSConfig,
    temperature: float, seed: int,
) -> list[list[Chain]]:  # fmt: skip
    """``k`` independent solutions per problem, all problems and samples batched together."""
    config = replace(search, rollouts=1, n_children=1, temperature=temperature, seed=seed)
    copies = [problem for problem in problems for _ in range(k)]
    trees = MCTS(engine, sandbox, config).search(copies)
    chains = []
    for index, problem in enumerate(problems):
        group = trees[index * k : (index + 1) * k]
        chains.append([Chain(problem, next(iter(_answer_leaves(tree)), None)) for tree in group])
    return chains


def best_of_n(chains: list[list[Chain]], scorer: Scorer, prompt_style: str) -> float:
    """Pick, per problem, the answered sample the PPM scores highest; share of correct picks."""
    return sum(best_of_n_picks(chains, scorer, prompt_style)) / max(len(chains), 1)


def best_of_n_picks(chains: list[list[Chain]], scorer: Scorer, prompt_style: str) -> list[bool]:
    """Per problem: is the answered sample the PPM scores highest correct (False: none answered)."""
    picks = []
    for group in chains:
        answered = [chain for chain in group if chain.leaf is not None]
        if not answered:
            picks.append(False)
            continue
        prompt = steps.build_prompt(answered[0].problem.question, prompt_style)
        scores = scorer.score([chain.text(prompt) for chain in answered])
        best = max(range(len(answered)), key=lambda i: (scores[i], -i))
        picks.append(answered[best].correct)
    return picks


def vote(
    leaves: list[Node], top: int, same: Callable[[str, str], bool] = is_equivalent
) -> str | None:
    """Majority answer among the ``top`` leaves by PPM score; ties go to the higher score."""
    ranked = sorted(
        leaves, key=lambda leaf: -(leaf.ppm_score if leaf.ppm_score is not None else leaf.q)
    )[:top]
    groups: list[list[Node]] = []
    for leaf in ranked:
        for members in groups:
            if same(leaf.final_answer or "", members[0].final_answer or ""):
                members.append(leaf)
                break
        else:
            groups.append([leaf])
    if not groups:
        return None
    # Groups keep rank order, so max() on size alone resolves ties to the best-scored group.
    return max(groups, key=len)[0].final_answer


def ppm_guided_mcts(
    engine, sandbox: CodeRunner, problems: Sequence[Problem], scorer: Scorer, search: MCTSConfig,
    config: EvalConfig, grade: Callable[[str | None, str], bool] = is_equivalent,
) -> float:  # fmt: skip
    """Search with PPM values only (the truth never steers), then vote; share of correct votes."""
    picks = ppm_guided_mcts_picks(engine, sandbox, problems, scorer, search, config, grade)
    return sum(picks) / max(len(picks), 1)


def ppm_guided_mcts_picks(
    engine, sandbox: CodeRunner, problems: Sequence[Problem], scorer: Scorer, search: MCTSConfig,
    config: EvalConfig, grade: Callable[[str | None, str], bool] = is_equivalent,
) -> list[bool]:  # fmt: skip
    """Per problem: is the vote of a PPM-guided search correct."""
    mcts_config = replace(
        search, rollouts=config.mcts_rollouts, n_children=config.mcts_children, seed=config.seed
    )
    trees = MCTS(engine, sandbox, mcts_config, scorer=scorer, terminal_reward="ppm").search(
        problems
    )
    picks = []
    for tree in trees:
        answer = vote(_answer_leaves(tree), config.vote_top)
        picks.append(answer is not None and grade(answer, tree.problem.answer))
    return picks


def best_answer(tree: SearchTree) -> Node | None:
    """The answer leaf the PPM scored highest in one search; ties go to the earliest found."""
    return max(_answer_leaves(tree), key=lambda leaf: leaf.ppm_score, default=None)


def majority(answers: list[str], same: Callable[[str, str], bool] = is_equivalent) -> str | None:
    """The answer most runs agree on (by equivalence); ties go to the answer seen first."""
    groups: list[list[str]] = []
    for answer in answers:
        for members in groups:
            if same(answer, members[0]):
                members.append(answer)
                break
        else:
            groups.append([answer])
    return max(groups, key=len)[0] if groups else None


def voted_mcts_runs(
    engine, sandbox: CodeRunner, problems: Sequence[Problem], scorer: Scorer, search: MCTSConfig,
    config: EvalConfig, grade: Callable[[str | None, str], bool] = is_equivalent,
) -> float:  # fmt: skip
    """rStar-math's evaluation: `mcts_runs` independent PPM-guided searches per problem (one
    batch), the best-scored answer of each, and a majority vote; share of correct votes."""
    picks = voted_mcts_picks(engine, sandbox, problems, scorer, search, config, grade)
    return sum(picks) / max(len(problems), 1)


def voted_mcts_picks(
    engine, sandbox: CodeRunner, problems: Sequence[Problem], scorer: Scorer, search: MCTSConfig,
    config: EvalConfig, grade: Callable[[str | None, str], bool] = is_equivalent,
) -> list[bool]:  # fmt: skip
    """Per problem: is the majority of the voted runs' best answers correct."""
    mcts_config = replace(
        search, rollouts=config.mcts_rollouts, n_children=config.mcts_children, seed=config.seed
    )
    runs = config.mcts_runs
    copies = [problem for problem in problems for _ in range(runs)]
    trees = MCTS(engine, sandbox, mcts_config, scorer=scorer, terminal_reward="ppm").search(copies)
    picks = []
    for index, problem in enumerate(problems):
        leaves = [best_answer(tree) for tree in trees[index * runs : (index + 1) * runs]]
        answer = majority([leaf.final_answer for leaf in leaves if leaf is not None])
        picks.append(answer is not None and grade(answer, problem.answer))
    return picks


def evaluate(
    engine, sandbox: CodeRunner, problems: Sequence[Problem], search: MCTSConfig, config: EvalConfig,
    scorer: Scorer | None = None, levels: dict[str, str] | None = None,
) -> dict:  # fmt: skip
    """All evaluation methods on one problem set; a metrics dict with an `accuracy` group."""
    outcomes = problem_outcomes(engine, sandbox, problems, search, config, scorer, config.seed)
    return summarise(outcomes, config, levels or {})


def _kind(chain: Chain) -> str:
    return "correct" if chain.correct else "wrong" if chain.leaf is not None else "no_answer"


def problem_outcomes(
    engine, sandbox: CodeRunner, problems: Sequence[Problem], search: MCTSConfig, config: EvalConfig,
    scorer: Scorer | None, seed: int,
) -> list[dict]:  # fmt: skip
    """Every method's result per problem (how each chain ended, whether each pick was right):
    plain values that shards return and :func:`summarise` turns into metrics."""
    greedy = sample_chains(engine, sandbox, problems, 1, search, temperature=0.0, seed=seed)
    sampled = sample_chains(engine, sandbox, problems, config.samples, search, config.temperature, seed)
    outcomes = [
        {"problem_id": group[0].problem.problem_id, "greedy": _kind(group[0]),
         "samples": [_kind(chain) for chain in other]}
        for group, other in zip(greedy, sampled)
    ]  # fmt: skip
    if scorer is None:
        return outcomes
    seeded = replace(config, seed=seed)
    methods = {f"ppm_best_of_{config.samples}": best_of_n_picks(sampled, scorer, search.prompt_style)}
    if config.mcts_rollouts > 0:
        methods["ppm_mcts"] = ppm_guided_mcts_picks(engine, sandbox, problems, scorer, search, seeded)
    if config.mcts_rollouts > 0 and config.mcts_runs > 0:
        methods[f"ppm_mcts_vote_of_{config.mcts_runs}"] = voted_mcts_picks(
            engine, sandbox, problems, scorer, search, seeded
        )
    for index, outcome in enumerate(outcomes):
        outcome["picks"] = {name: picks[index] for name, picks in methods.items()}
    return outcomes


def summarise(outcomes: list[dict], config: EvalConfig, levels: dict[str, str]) -> dict:
    """The metrics of :func:`evaluate` from per-problem outcomes (of one batch or of shards)."""
    n = max(len(outcomes), 1)
    samples = [kind for outcome in outcomes for kind in outcome["samples"]]
    accuracy = {
        "greedy": sum(o["greedy"] == "correct" for o in outcomes) / n,
        f"pass_at_{config.samples}": sum("correct" in o["samples"] for o in outcomes) / n,
        "sampled_pass_at_1": samples.count("correct") / max(len(samples), 1),
    }
    for name in outcomes[0].get("picks", {}) if outcomes else ():
        accuracy[name] = sum(o["picks"][name] for o in outcomes) / n
    buckets: dict[str, list[dict]] = {}
    for outcome in outcomes:
        buckets.setdefault(levels.get(outcome["problem_id"], "all"), []).append(outcome)
    by_level = {
        level: {
            "problems": len(group),
            "pass_at_1": sum(o["samples"].count("correct") for o in group)
            / max(sum(len(o["samples"]) for o in group), 1),
            "pass_at_k": sum("correct" in o["samples"] for o in group) / len(group),
        }
        for level, group in sorted(buckets.items())
    }
    return {
        "problems": len(outcomes),
        "accuracy": {key: round(value, 4) for key, value in accuracy.items()},
        "by_level": by_level,
        "greedy_outcomes": dict(Counter(o["greedy"] for o in outcomes)),
        "sampled_outcomes": dict(Counter(samples)),
    }


def held_out_problems(config: EvalConfig) -> tuple[list[Problem], dict[str, str]]:
    """The evaluation set and each problem's difficulty level (from meta), sorted by id."""
    if config.source == "seeds":
        frame = pl.read_parquet(layout.PROBLEMS).filter(pl.col("split") == "test")
    else:
        from pipeline.problems import load_problems

        frame = load_problems(config.source)
    frame = frame.sort("problem_id")
    if config.problems:
        frame = frame.head(config.problems)
    problems = [
        Problem(row["problem_id"], row["question"], row["answer"])
        for row in frame.iter_rows(named=True)
    ]
    levels = {}
    for row in frame.iter_rows(named=True):
        meta = json.loads(row["meta"] or "{}") if row.get("meta") else {}
        levels[row["problem_id"]] = str(meta.get("level", "all"))
    return problems, levels
