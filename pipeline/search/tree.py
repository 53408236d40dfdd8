"""Search-tree nodes, their statistics, and the `nodes` table they become (docs/algorithm.md)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import polars as pl

from pipeline import ids

TERMINAL_KINDS = ("answer", "too_deep", "too_many_errors", "unparsable")

# The `nodes` table (docs/data-contracts.md): its one definition, read by the rollout writer and
# the table checks.
NODES_SCHEMA = {
    "problem_id": pl.String, "round": pl.Int32, "node_id": pl.String, "parent_id": pl.String,
    "depth": pl.Int32, "child_index": pl.Int32, "step_text": pl.String, "code": pl.String,
    "observation": pl.String, "is_error": pl.Boolean, "is_terminal": pl.Boolean,
    "terminal_kind": pl.String, "final_answer": pl.String, "correct": pl.Boolean,
    "visits": pl.Int64, "value_sum": pl.Float64, "q": pl.Float64, "ppm_score": pl.Float64,
    "tokens": pl.Int64,
}  # fmt: skip
NODE_COLUMNS = tuple(NODES_SCHEMA)


@dataclass(eq=False)
class Node:
    """One step of a solution. The root holds no step; its children are first steps."""

    node_id: str
    parent: Node | None = None
    depth: int = 0
    child_index: int = 0
    step_text: str = ""
    code: str = ""  # this step's own code; the program is the ancestors' code plus this
    observation: str = ""
    is_error: bool = False
    consecutive_errors: int = 0
    is_terminal: bool = False
    terminal_kind: str | None = None
    final_answer: str | None = None
    correct: bool | None = None
    visits: int = 0
    value_sum: float = 0.0
    ppm_score: float | None = None
    tokens: int = 0
    children: list[Node] = field(default_factory=list)

    @property
    def q(self) -> float:
        """Q = W / N, and 0 for a node never visited (docs/algorithm.md)."""
        return self.value_sum / self.visits if self.visits else 0.0

    def update(self, reward: float) -> None:
        self.visits += 1
        self.value_sum += reward

    def path(self) -> list[Node]:
        """Nodes from the first step down to this one (the root excluded)."""
        nodes: list[Node] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]

    def step_texts(self) -> list[str]:
        return [node.step_text for node in self.path()]

    def codes(self) -> list[str]:
        return [node.code for node in self.path()]


def make_root(problem_id: str) -> Node:
    return Node(node_id=ids.root_id(problem_id))


def add_child(parent: Node, step_text: str) -> Node:
    child = Node(
        node_id=ids.node_id(parent.node_id, step_text),
        parent=parent,
        depth=parent.depth + 1,
        child_index=len(parent.children),
        step_text=step_text,
    )
    parent.children.append(child)
    return child


def backup(node: Node, reward: float) -> None:
    """A graded terminal's reward goes to every node from it up to the root."""
    current: Node | None = node
    while current is not None:
        current.update(reward)
        current = current.parent


def uct(child: Node, parent_visits: int, c_puct: float) -> float:
    """Q + c * sqrt(ln N_parent / N_child); the exploration term is 0 when a count is 0."""
    if parent_visits == 0 or child.visits == 0:
        return child.q
    return child.q + c_puct * math.sqrt(math.log(parent_visits) / child.visits)


def select_child(node: Node, c_puct: float) -> Node | None:
    """Best non-terminal child by UCT; ties go to the earliest child (strict > keeps the first)."""
    best: Node | None = None
    best_score = -math.inf
    for child in node.children:
        if child.is_terminal:
            continue
        score = uct(child, node.visits, c_puct)
        if score > best_score:
            best, best_score = child, score
    return best


def walk(root: Node) -> Iterator[Node]:
    """Pre-order traversal, children in creation order; iterative so deep trees are fine."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def to_rows(root: Node, problem_id: str, round_: int) -> list[dict]:
    rows = []
    for node in walk(root):
        rows.append(
            {
                "problem_id": problem_id,
                "round": round_,
                "node_id": node.node_id,
                "parent_id": node.parent.node_id if node.parent else None,
                "depth": node.depth,
                "child_index": node.child_index,
                "step_text": node.step_text,
                "code": node.code,
                "observation": node.observation,
                "is_error": node.is_error,
                "is_terminal": node.is_terminal,
                "terminal_kind": node.terminal_kind,
                "final_answer": node.final_answer,
                "correct": node.correct,
                "visits": node.visits,
                "value_sum": float(node.value_sum),
                "q": node.q,
                "ppm_score": node.ppm_score,
                "tokens": node.tokens,
            }
        )
    return rows
