"""Monte Carlo Tree Search over code-augmented steps, batched over many problems (docs/algorithm.md).

All trees advance together: at each step every tree that needs an expansion contributes one
prompt to a single generation call, all new code candidates run through one
``Sandbox.run_many``, and (PPM-augmented rounds) all new non-terminal children are scored in one
PPM call. Each tree keeps its own rollout counter, so a tree that finishes a rollout early starts
its next one while the others catch up and batches stay full.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pipeline.config import MCTSConfig
from pipeline.grading.answer import extract_answer, is_equivalent
from pipeline.models.engines.base import Completion, Engine
from pipeline.search import steps
from pipeline.search.tree import Node, add_child, backup, make_root, select_child, to_rows


class Scorer(Protocol):
    """What the search needs of a PPM: scores in [-1, 1] for prompt + partial solutions."""

    def score(self, texts: list[str]) -> list[float]: ...


class CodeRunner(Protocol):
    def run_many(self, codes: Sequence[str]) -> list: ...


@dataclass
class Problem:
    problem_id: str
    question: str
    answer: str
    rollouts: int | None = None  # per-problem budget (extra rollouts for unsolved problems)


@dataclass
class SearchTree:
    problem: Problem
    prompt: str
    root: Node
    rollouts_left: int
    current: Node | None = None  # where the running rollout stands; None between rollouts

    @property
    def done(self) -> bool:
        return self.root.is_terminal or (self.rollouts_left == 0 and self.current is None)


@dataclass
class SearchStats:
    generation_calls: int = 0
    prompts: int = 0
    tokens: int = 0
    code_runs: int = 0
    code_errors: int = 0
    ppm_calls: int = 0
    nodes: int = 0
    trees_done: int = 0  # of the current search() call


@dataclass
class _Candidate:
    tree: SearchTree
    parent: Node
    parsed: steps.ParsedStep
    completion: Completion


ProgressCallback = Callable[[SearchStats], None]


class MCTS:
    """One round's search for a batch of problems.

    ``engine`` generates steps, ``sandbox`` runs their code, ``scorer`` (optional) is the
    previous round's PPM: with it the round is PPM-augmented, without it terminal-guided.
    ``terminal_reward="ppm"`` is for evaluation, where the truth must not steer the search:
    answers are still graded for the record, but the PPM's score is what is backed up.
    """

    def __init__(
        self,
        engine: Engine,
        sandbox: CodeRunner,
        config: MCTSConfig,
        scorer: Scorer | None = None,
        grade: Callable[[str | None, str], bool] = is_equivalent,
        terminal_reward: Literal["truth", "ppm"] = "truth",
    ) -> None:
        if terminal_reward == "ppm" and scorer is None:
            raise ValueError("terminal_reward='ppm' needs a PPM scorer")
        self.terminal_reward = terminal_reward
        self.engine = engine
        self.sandbox = sandbox
        self.config = config
        self.scorer = scorer
        self.grade = grade
        self.stats = SearchStats()

    # ------------------------------------------------------------------ driver

    def search(
        self, problems: Sequence[Problem], seed: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[SearchTree]:  # fmt: skip
        """Run every problem's rollouts and return the finished trees."""
        rng = random.Random(self.config.seed if seed is None else seed)
        trees = [self._new_tree(problem) for problem in problems]
        while True:
            frontier = [leaf for tree in trees if (leaf := self._descend(tree)) is not None]
            if not frontier:
                break
            self._expand(frontier, seed=rng.randrange(2**31))
            for tree in trees:
                if tree.current is not None:
                    self._advance(tree)
            if progress is not None:
                self.stats.trees_done = sum(tree.done for tree in trees)
                progress(self.stats)
        if progress is not None:
            self.stats.trees_done = len(trees)
            progress(self.stats)
        return trees

    def _new_tree(self, problem: Problem) -> SearchTree:
        root = make_root(problem.problem_id)
        prompt = steps.build_prompt(problem.question, self.config.prompt_style)
        budget = problem.rollouts if problem.rollouts is not None else self.config.rollouts
        if budget < 0:  # a negative counter never reaches 0: the search would never end
            raise ValueError(
                f"problem {problem.problem_id}: rollouts must not be negative, got {budget}"
            )
        self.stats.nodes += 1
        return SearchTree(problem, prompt, root, rollouts_left=budget)

    def _descend(self, tree: SearchTree) -> SearchTree | None:
        """Move the tree's rollout down to a node that needs expanding; None if it has no work."""
        while True:
            if tree.root.is_terminal:
                tree.current = None
                return None
            if tree.current is None:
                if tree.rollouts_left == 0:
                    return None
                tree.rollouts_left -= 1
                tree.current = tree.root
            node = tree.current
            if not node.children:
                return tree
            child = select_child(node, self.config.c_puct)
            if child is None:  # cannot happen: all-terminal parents are marked eagerly
                _mark_exhausted(node)
                tree.current = None
                continue
            tree.current = child

    def _advance(self, tree: SearchTree) -> None:
        """After an expansion: go on into the best non-terminal child, or end the rollout."""
        node = tree.current
        assert node is not None
        if node.is_terminal:
            tree.current = None
            return
        child = select_child(node, self.config.c_puct)
        tree.current = child
        # A rollout ends where every child is terminal; the next one starts from the root.
        if child is None:
            tree.current = None

    # ------------------------------------------------------------------ expansion

    def _expand(self, frontier: list[SearchTree], seed: int) -> None:
        nodes = [tree.current for tree in frontier]
        prompts = [
            steps.generation_prefix(t.prompt, n.step_texts()) for t, n in zip(frontier, nodes)
        ]
        completions = self.engine.generate(
            prompts,
            n=self.config.n_children,
            stop=steps.STOP_STRINGS,
            max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            seed=seed,
        )
        if len(completions) != len(prompts):  # zip would silently leave trees unexpanded
            raise ValueError(
                f"engine returned completions for {len(completions)} prompts, expected {len(prompts)}"
            )
        self.stats.generation_calls += 1
        self.stats.prompts += len(prompts)
        candidates: list[_Candidate] = []
        for tree, node, samples in zip(frontier, nodes, completions):
            for completion, parsed in _distinct_candidates(samples):
                candidates.append(_Candidate(tree, node, parsed, completion))
                self.stats.tokens += completion.tokens

        observations = self._run_code(candidates)
        new_children: list[tuple[SearchTree, Node]] = []
        answers: list[tuple[SearchTree, Node]] = []
        for candidate, observation in zip(candidates, observations):
            child = self._make_child(candidate, observation)
            self.stats.nodes += 1
            if not child.is_terminal:
                new_children.append((candidate.tree, child))
            elif child.terminal_kind == "answer":
                answers.append((candidate.tree, child))
        if self.terminal_reward == "ppm" and answers:
            for (_, child), score in zip(answers, self._ppm_scores(answers)):
                child.ppm_score = score
                backup(child, score)
        if self.scorer is not None and new_children:
            for (_, child), score in zip(new_children, self._ppm_scores(new_children)):
                child.ppm_score = score
                child.update(score)
        for node in nodes:  # no usable sample counts as "all children terminal" too
            if all(child.is_terminal for child in node.children):
                _mark_exhausted(node)

    def _run_code(self, candidates: list[_Candidate]) -> list[tuple[str, str | None] | None]:
        """Run each code candidate's whole program once; identical programs share one run."""
        programs: dict[str, int] = {}
        order: list[str] = []
        wanted: list[str | None] = []
        for candidate in candidates:
            if candidate.parsed.kind != "code":
                wanted.append(None)
                continue
            source = steps.program(candidate.parent.codes() + [candidate.parsed.code])
            if source not in programs:
                programs[source] = len(order)
                order.append(source)
            wanted.append(source)
        results = self.sandbox.run_many(order) if order else []
        self.stats.code_runs += len(order)
        outputs: list[tuple[str, str | None] | None] = []
        for source in wanted:
            if source is None:
                outputs.append(None)
                continue
            result = results[programs[source]]
            outputs.append((result.stdout, result.error))
        return outputs

    def _make_child(
        self, candidate: _Candidate, observation: tuple[str, str | None] | None
    ) -> Node:
        """Create one child and apply the terminal rules of docs/algorithm.md."""
        parsed, parent = candidate.parsed, candidate.parent
        text = parsed.text
        if parsed.kind == "code" and observation is not None:
            stdout, error = observation
            text = steps.with_observation(parsed, error or stdout)
        child = add_child(parent, text)
        child.tokens = candidate.completion.tokens
        child.code = parsed.code if parsed.kind == "code" else ""

        # The reference's order (rStar-math, agents/mcts.py create_child): unparsable, answer,
        # code; then max_depth, which applies only to a step that did not end its branch yet, so
        # an answer is graded at any depth and code past max_depth runs first.
        if parsed.kind == "unparsable":
            _terminate_invalid(child, "unparsable")
        elif parsed.kind == "answer":
            answer = extract_answer(parsed.text)
            if answer is None:
                _terminate_invalid(child, "unparsable")
            else:
                child.is_terminal, child.terminal_kind = True, "answer"
                child.final_answer = answer
                child.correct = bool(self.grade(answer, candidate.tree.problem.answer))
                if self.terminal_reward == "truth":
                    backup(child, 1.0 if child.correct else -1.0)
        else:
            assert observation is not None
            stdout, error = observation
            child.observation = error or stdout
            if error:
                self.stats.code_errors += 1
                child.is_error = True
                child.consecutive_errors = parent.consecutive_errors + 1
                if child.consecutive_errors >= self.config.errors_threshold:
                    _terminate_invalid(child, "too_many_errors")
            if not child.is_terminal and child.depth > self.config.max_depth:
                _terminate_invalid(child, "too_deep")
        return child

    def _ppm_scores(self, nodes: list[tuple[SearchTree, Node]]) -> list[float]:
        """One PPM call for prompt + partial solution of every node given."""
        texts = [steps.generation_prefix(tree.prompt, node.step_texts()) for tree, node in nodes]
        self.stats.ppm_calls += 1
        scores = [float(score) for score in self.scorer.score(texts)]
        if len(scores) != len(texts):
            raise ValueError(f"PPM returned {len(scores)} scores for {len(texts)} texts")
        for score in scores:  # docs/algorithm.md: tanh(v / 5) lies in [-1, 1]; NaN would stall UCT
            if not -1.0 <= score <= 1.0:
                raise ValueError(f"PPM score {score} is outside [-1, 1]")
        return scores


def _distinct_candidates(samples: list[Completion]) -> list[tuple[Completion, steps.ParsedStep]]:
    """Drop exact duplicates; if any sample stopped at <end_of_answer>, keep that one alone.

    The reference (rStar-math, llms/llms.py) keeps only the first sample whose stop reason is
    <end_of_answer> and drops every other sample of the expansion, code steps included.
    """
    seen: set[str] = set()
    kept: list[tuple[Completion, steps.ParsedStep]] = []
    for completion in samples:
        parsed = steps.parse_step(completion.text)
        if parsed.text in seen:
            continue
        seen.add(parsed.text)
        if parsed.text.endswith(steps.END_OF_ANSWER):
            return [(completion, parsed)]
        kept.append((completion, parsed))
    return kept


def _terminate_invalid(node: Node, kind: str) -> None:
    """Unparsable, too deep and too many errors: terminal, update(-1) on the node itself only."""
    node.is_terminal = True
    node.terminal_kind = kind
    node.update(-1.0)


def _mark_exhausted(node: Node) -> None:
    """A node whose children are all terminal becomes terminal, and so on up the tree."""
    current: Node | None = node
    while current is not None and not current.is_terminal:
        if current.children and not all(child.is_terminal for child in current.children):
            return
        current.is_terminal = True
        current = current.parent


def tree_rows(trees: Sequence[SearchTree], round_: int) -> list[dict]:
    rows: list[dict] = []
    for tree in trees:
        rows.extend(to_rows(tree.root, tree.problem.problem_id, round_))
    return rows
