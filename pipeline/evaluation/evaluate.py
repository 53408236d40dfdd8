"""Evaluation on held-out problems: greedy pass@1, pass@k, PPM best-of-N and PPM-guided MCTS.

A sampled solution is a one-child, one-rollout search: the same step parsing, code execution
and grading as the rollouts, so evaluation and data generation can never disagree on what a
solved problem is. The truth is only used to grade the answer each method finally picks.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace

import polars as pl
from tqdm import tqdm

from pipeline import layout
from pipeline.config import EvalConfig
from pipeline.grading.answer import is_equivalent
from pipeline.search import steps
from pipeline.search.mcts import (
    MCTS,
    CodeRunner,
    MCTSConfig,
    Problem,
    ProgressCallback,
    Scorer,
    SearchStats,
    SearchTree,
)  # fmt: skip
from pipeline.search.rounds import levels_in_turn
from pipeline.search.tree import Node, walk


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
    temperature: float, seed: int, progress: ProgressCallback | None = None,
) -> list[list[Chain]]:  # fmt: skip
    """``k`` independent solutions per problem, all problems and samples batched together."""
    config = replace(search, rollouts=1, n_children=1, temperature=temperature, seed=seed)
    copies = [problem for problem in problems for _ in range(k)]
    trees = MCTS(engine, sandbox, config).search(copies, progress=progress)
    chains = []
    for index, problem in enumerate(problems):
        group = trees[index * k : (index + 1) * k]
        chains.append([Chain(problem, next(iter(_answer_leaves(tree)), None)) for tree in group])
    return chains


def majority_at_k(chains: list[list[Chain]]) -> list[bool]:
    """Per problem: the answer most samples agree on (no PPM) is correct."""
    results = []
    for group in chains:
        answered = [chain for chain in group if chain.answer is not None]
        answer = majority([chain.answer for chain in answered])
        results.append(any(chain.correct for chain in answered if chain.answer == answer))
    return results


def best_of_n(chains: list[list[Chain]], scorer: Scorer, prompt_style: str) -> list[bool]:
    """Per problem: the answered sample the PPM scores highest is correct.

    Every problem's samples go to the PPM in one call, so the scorer batches across problems
    rather than N texts at a time."""
    answered = [[chain for chain in group if chain.leaf is not None] for group in chains]
    texts = [
        chain.text(steps.build_prompt(chain.problem.question, prompt_style))
        for group in answered
        for chain in group
    ]
    scores = iter(scorer.score(texts) if texts else [])
    results = []
    for group in answered:
        group_scores = [next(scores) for _ in group]
        best = max(range(len(group)), key=lambda i: (group_scores[i], -i), default=None)
        results.append(best is not None and group[best].correct)
    return results


def vote(
    leaves: list[Node], top: int, same: Callable[[str, str], bool] = is_equivalent
) -> str | None:
    """Majority answer among the ``top`` leaves by PPM score; ties go to the higher score."""
    ranked = sorted(
        leaves, key=lambda leaf: -(leaf.ppm_score if leaf.ppm_score is not None else leaf.q)
    )[:top]
    # In rank order, so a tie between groups goes to the best-scored one.
    return majority([leaf.final_answer or "" for leaf in ranked], same)


def ppm_guided_mcts(
    engine, sandbox: CodeRunner, problems: Sequence[Problem], scorer: Scorer, search: MCTSConfig,
    config: EvalConfig, grade: Callable[[str | None, str], bool] = is_equivalent,
    progress: ProgressCallback | None = None,
) -> list[bool]:  # fmt: skip
    """Per problem: search with PPM values only (the truth never steers), then vote among the
    top-scored answers; the vote is correct."""
    trees = _ppm_guided_search(engine, sandbox, scorer, search, config).search(
        problems, progress=progress
    )
    results = []
    for tree in trees:
        answer = vote(_answer_leaves(tree), config.vote_top)
        results.append(answer is not None and bool(grade(answer, tree.problem.answer)))
    return results


def _ppm_guided_search(
    engine, sandbox: CodeRunner, scorer: Scorer, search: MCTSConfig, config: EvalConfig
) -> MCTS:
    """The evaluation's search: the PPM's values steer it and answers back up their scores."""
    mcts_config = replace(
        search, rollouts=config.mcts_rollouts, n_children=config.mcts_children, seed=config.seed
    )
    return MCTS(engine, sandbox, mcts_config, scorer=scorer, terminal_reward="ppm")


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
    progress: ProgressCallback | None = None,
) -> list[bool]:  # fmt: skip
    """rStar-math's evaluation: `mcts_runs` independent PPM-guided searches per problem (one
    batch), the best-scored answer of each, and a majority vote; per problem, the vote is
    correct."""
    runs = config.mcts_runs
    copies = [problem for problem in problems for _ in range(runs)]
    searcher = _ppm_guided_search(engine, sandbox, scorer, search, config)
    trees = searcher.search(copies, progress=progress)
    results = []
    for index, problem in enumerate(problems):
        leaves = [best_answer(tree) for tree in trees[index * runs : (index + 1) * runs]]
        answer = majority([leaf.final_answer for leaf in leaves if leaf is not None])
        results.append(answer is not None and bool(grade(answer, problem.answer)))
    return results


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for z = 1.96); (0, 1) when total is 0."""
    if total == 0:
        return 0.0, 1.0
    share = correct / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    half /= 1 + z * z / total
    return max(0.0, centre - half), min(1.0, centre + half)


def method_summary(
    results: dict[str, list[bool]], problem_ids: Sequence[str], levels: dict[str, str]
) -> dict:
    """Accuracy, its 95% Wilson interval and its count for every method, overall and by level."""

    def describe(outcomes: list[bool]) -> dict:
        low, high = wilson_interval(sum(outcomes), len(outcomes))
        return {"accuracy": round(sum(outcomes) / max(len(outcomes), 1), 4),
                "ci95_low": round(low, 4), "ci95_high": round(high, 4),
                "correct": sum(outcomes), "problems": len(outcomes)}  # fmt: skip

    overall = {method: describe(outcomes) for method, outcomes in results.items()}
    by_level: dict[str, dict] = {}
    for level in sorted({levels.get(pid, "all") for pid in problem_ids}):
        picked = [i for i, pid in enumerate(problem_ids) if levels.get(pid, "all") == level]
        by_level[level] = {
            method: describe([outcomes[i] for i in picked]) for method, outcomes in results.items()
        }
    return {
        "accuracy": {method: entry["accuracy"] for method, entry in overall.items()},
        "ci95": {
            method: {"low": entry["ci95_low"], "high": entry["ci95_high"]}
            for method, entry in overall.items()
        },
        "correct": {method: entry["correct"] for method, entry in overall.items()},
        "by_level": by_level,
    }


def interval_columns(metrics: dict) -> dict:
    """An evaluation's accuracies and their interval ends as flat groups, the shape of a row of
    `dvc metrics show` (the round summaries; round 0 is the warm start's report)."""
    intervals = metrics.get("ci95", {})
    return {
        "accuracy": metrics.get("accuracy", {}),
        "ci95_low": {method: ends["low"] for method, ends in intervals.items()},
        "ci95_high": {method: ends["high"] for method, ends in intervals.items()},
    }


def evaluate(
    engine, sandbox: CodeRunner, problems: Sequence[Problem], search: MCTSConfig, config: EvalConfig,
    scorer: Scorer | None = None, levels: dict[str, str] | None = None,
) -> dict:  # fmt: skip
    """All evaluation methods on one problem set, in one batch; a metrics dict (:func:`summarise`).

    Methods: greedy decoding; pass@N and maj@N of N samples; with a PPM, PPM best-of-N over the
    same samples, PPM-guided MCTS with a vote among its top leaves, and (``mcts_runs`` > 0) the
    reference's vote over independent searches. Every accuracy comes with its 95% interval.
    The stage runs the same in shards (pipeline.evaluation.sharded).
    """
    outcomes = problem_outcomes(
        engine, sandbox, problems, search, config, scorer, config.seed, show_progress=True
    )
    return summarise(outcomes, config, levels or {})


def _kind(chain: Chain) -> str:
    return "correct" if chain.correct else "wrong" if chain.leaf is not None else "no_answer"


def problem_outcomes(
    engine, sandbox: CodeRunner, problems: Sequence[Problem], search: MCTSConfig, config: EvalConfig,
    scorer: Scorer | None, seed: int, show_progress: bool = False,
) -> list[dict]:  # fmt: skip
    """Every method's result per problem (how each chain ended, whether each pick was right):
    plain values that shards return and :func:`summarise` turns into metrics."""
    n, seeded = config.samples, replace(config, seed=seed)

    def progress(trees: int, what: str):
        return _progress(trees, what) if show_progress else nullcontext(None)

    with progress(len(problems), "greedy") as bar:
        greedy = sample_chains(engine, sandbox, problems, 1, search, 0.0, seed, bar)
    sampled: list[list[Chain]] = [[] for _ in problems]
    methods = {}
    if n > 0:
        with progress(len(problems) * n, f"{n} samples") as bar:
            sampled = sample_chains(
                engine, sandbox, problems, n, search, config.temperature, seed, bar
            )
        methods[f"maj_at_{n}"] = majority_at_k(sampled)
        if scorer is not None:
            methods[f"ppm_best_of_{n}"] = best_of_n(sampled, scorer, search.prompt_style)
    if scorer is not None:
        if config.mcts_rollouts > 0:
            with progress(len(problems), "PPM-guided MCTS") as bar:
                methods["ppm_mcts"] = ppm_guided_mcts(
                    engine, sandbox, problems, scorer, search, seeded, progress=bar
                )
        if config.mcts_rollouts > 0 and config.mcts_runs > 0:
            with progress(len(problems) * config.mcts_runs, "voted MCTS runs") as bar:
                methods[f"ppm_mcts_vote_of_{config.mcts_runs}"] = voted_mcts_runs(
                    engine, sandbox, problems, scorer, search, seeded, progress=bar
                )
    return [
        {"problem_id": first[0].problem.problem_id, "greedy": _kind(first[0]),
         "samples": [_kind(chain) for chain in group],
         "picks": {name: bool(picks[index]) for name, picks in methods.items()}}
        for index, (first, group) in enumerate(zip(greedy, sampled))
    ]  # fmt: skip


def summarise(outcomes: list[dict], config: EvalConfig, levels: dict[str, str]) -> dict:
    """The metrics of :func:`evaluate` from per-problem outcomes (of one batch or of shards)."""
    n = config.samples
    results = {"greedy": [o["greedy"] == "correct" for o in outcomes]}
    if n > 0:
        results[f"pass_at_{n}"] = ["correct" in o["samples"] for o in outcomes]
    for name in outcomes[0]["picks"] if outcomes else ():
        results[name] = [o["picks"][name] for o in outcomes]
    problem_ids = [o["problem_id"] for o in outcomes]
    summary = method_summary(results, problem_ids, levels)
    samples = [kind for outcome in outcomes for kind in outcome["samples"]]
    if samples:
        summary["accuracy"]["sampled_pass_at_1"] = round(samples.count("correct") / len(samples), 4)
    return {
        "problems": len(outcomes),
        **summary,
        "greedy_outcomes": dict(Counter(o["greedy"] for o in outcomes)),
        "sampled_outcomes": dict(Counter(samples)),
        # Which problems each method solved: two evaluations on the same problems are compared
        # problem by problem (pipeline.evaluation.paired), which resolves smaller differences than
        # two intervals can.
        "by_problem": {
            problem_id: {method: picks[index] for method, picks in results.items()}
            for index, problem_id in enumerate(problem_ids)
        },
    }


@contextmanager
def _progress(trees: int, what: str) -> Iterator[Callable[[SearchStats], None]]:
    """A progress bar over finished searches (each problem, or each sample of one, is a tree)."""
    with tqdm(total=trees, desc=f"evaluate: {what}", unit="tree", leave=False) as bar:

        def update(stats: SearchStats) -> None:
            bar.update(stats.trees_done - bar.n)
            bar.set_postfix(nodes=stats.nodes)

        yield update


def held_out_problems(config: EvalConfig) -> tuple[list[Problem], dict[str, str]]:
    """The evaluation set and each problem's difficulty level (from meta).

    From the seeds, the `evaluate.split` split (`test` to report, `validation` to tune on).
    The first `evaluate.problems` are taken level by level in turn (by problem_id within a
    level), so a cut keeps the levels balanced."""
    from pipeline.problems.sources import ProblemSourceError, load_problems

    if config.source == "seeds":
        if not layout.PROBLEMS.is_file():
            raise ProblemSourceError(
                f"{layout.PROBLEMS}: no such file; run the seeds stage or give a problem file"
            )
        frame = pl.read_parquet(layout.PROBLEMS).filter(pl.col("split") == config.split)
        if frame.is_empty():  # else every accuracy is a meaningless 0 of 0
            raise ProblemSourceError(f"{layout.PROBLEMS}: no problems in split {config.split!r}")
    else:
        frame = load_problems(config.source)
    ranked = levels_in_turn(frame.iter_rows(named=True))
    if config.problems:
        ranked = ranked[: config.problems]
    problems = [Problem(row["problem_id"], row["question"], row["answer"]) for _, row in ranked]
    return problems, {row["problem_id"]: level for level, row in ranked}


def seen_in_training(problems: Sequence[Problem], source: str) -> list[str]:
    """The held-out problems that are also training seeds: the same normalised question, hence
    the same ``problem_id``. Always none for the seeds' own test or validation split (a question
    is in one split only); a problem file can share questions with the seeds the policy and the
    PPM were trained on (MATH500 with MATH's test set as seeds, a GSM8K file with GSM8K train),
    and then its accuracy is not held-out."""
    if source == "seeds" or not layout.PROBLEMS.is_file():
        return []
    seeds = pl.read_parquet(layout.PROBLEMS, columns=["problem_id", "split"])
    trained = set(seeds.filter(pl.col("split") == "train")["problem_id"])
    return sorted(problem.problem_id for problem in problems if problem.problem_id in trained)
