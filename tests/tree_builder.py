"""Hand-made search trees for tests, written as `nodes` and `problems` Parquet (docs/data-contracts.md).

A :class:`Tree` keeps the node statistics the way the search does (docs/algorithm.md), so a
test states only the shape of a tree and reads Q values off the backup rule:

- a graded answer adds (N += 1, W += r) to itself and every ancestor, r = +1 right, -1 wrong;
- an invalid terminal (too_deep, unparsable, too_many_errors) adds update(-1) to itself only;
- a step created with ``ppm=s`` gets update(s) once on itself (PPM-augmented rounds);
- Q = W / N, 0 when N = 0.

    tree = Tree("p1")
    a = tree.step(tree.root, "x = 1")           # Q(a) = 0 until something is backed up
    tree.answer(a, "\\boxed{1}", correct=True)   # Q(a) = 1, Q(root) = 1
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import ids

NODES_SCHEMA = pa.schema(
    [
        ("problem_id", pa.string()),
        ("round", pa.int64()),
        ("node_id", pa.string()),
        ("parent_id", pa.string()),
        ("depth", pa.int64()),
        ("child_index", pa.int64()),
        ("step_text", pa.string()),
        ("code", pa.string()),
        ("observation", pa.string()),
        ("is_error", pa.bool_()),
        ("is_terminal", pa.bool_()),
        ("terminal_kind", pa.string()),
        ("final_answer", pa.string()),
        ("correct", pa.bool_()),
        ("visits", pa.int64()),
        ("value_sum", pa.float64()),
        ("q", pa.float64()),
        ("ppm_score", pa.float64()),
        ("tokens", pa.int64()),
    ]
)

PROBLEMS_SCHEMA = pa.schema(
    [
        ("problem_id", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("solution", pa.string()),
        ("meta", pa.string()),
    ]
)

INVALID_KINDS = ("too_deep", "unparsable", "too_many_errors")


@dataclass
class Node:
    """One node of a hand-made tree, with the statistics of section 2."""

    node_id: str
    parent: Node | None
    step_text: str
    depth: int
    child_index: int
    code: str = ""
    is_error: bool = False
    terminal_kind: str | None = None
    final_answer: str | None = None
    correct: bool | None = None
    ppm_score: float | None = None
    visits: int = 0
    value_sum: float = 0.0
    children: list[Node] = field(default_factory=list)

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def is_terminal(self) -> bool:
        """Created terminal, or every child is terminal."""
        if self.terminal_kind is not None:
            return True
        return bool(self.children) and all(child.is_terminal for child in self.children)

    def update(self, value: float) -> None:
        self.visits += 1
        self.value_sum += value


class Tree:
    """The search tree of one problem in one round."""

    def __init__(self, problem_id: str = "p1", round: int = 1, question: str | None = None):
        self.problem_id = problem_id
        self.round = round
        self.question = question if question is not None else f"Question of {problem_id}?"
        self.root = Node(ids.root_id(problem_id), None, "", 0, 0)
        self.nodes: list[Node] = [self.root]

    def _add(self, parent: Node, text: str, **fields: object) -> Node:
        node_id = ids.node_id(parent.node_id, text)
        if any(child.node_id == node_id for child in parent.children):
            raise ValueError(f"duplicate sibling step text {text!r} (the search drops these)")
        node = Node(node_id, parent, text, parent.depth + 1, len(parent.children), **fields)  # type: ignore[arg-type]
        parent.children.append(node)
        self.nodes.append(node)
        return node

    def step(
        self, parent: Node, text: str, *, error: bool = False, ppm: float | None = None
    ) -> Node:
        """A code step; ``ppm`` initialises its value once, as in PPM-augmented rounds."""
        node = self._add(parent, text, code=text, is_error=error, ppm_score=ppm)
        if ppm is not None:
            node.update(ppm)
        return node

    def answer(self, parent: Node, text: str, *, correct: bool, final: str = "1") -> Node:
        """A graded answer terminal, backed up to the root."""
        node = self._add(parent, text, terminal_kind="answer", final_answer=final, correct=correct)
        reward = 1.0 if correct else -1.0
        walker: Node | None = node
        while walker is not None:
            walker.update(reward)
            walker = walker.parent
        return node

    def invalid(self, parent: Node, text: str, kind: str = "too_many_errors") -> Node:
        """An invalid terminal: update(-1) on itself only."""
        if kind not in INVALID_KINDS:
            raise ValueError(f"unknown invalid terminal kind {kind!r}")
        node = self._add(parent, text, terminal_kind=kind, is_error=kind == "too_many_errors")
        node.update(-1.0)
        return node

    def rows(self) -> list[dict]:
        return [
            {
                "problem_id": self.problem_id,
                "round": self.round,
                "node_id": node.node_id,
                "parent_id": node.parent.node_id if node.parent else None,
                "depth": node.depth,
                "child_index": node.child_index,
                "step_text": node.step_text,
                "code": node.code,
                "observation": "",
                "is_error": node.is_error,
                "is_terminal": node.is_terminal,
                "terminal_kind": node.terminal_kind,
                "final_answer": node.final_answer,
                "correct": node.correct,
                "visits": node.visits,
                "value_sum": node.value_sum,
                "q": node.q,
                "ppm_score": node.ppm_score,
                "tokens": len(node.step_text.split()),
            }
            for node in self.nodes
        ]


def write_nodes(path: Path, *trees: Tree, drop: tuple[str, ...] = ()) -> Path:
    """Write the trees as one `nodes` Parquet file, leaving out the columns in ``drop``."""
    table = pa.Table.from_pylist([row for tree in trees for row in tree.rows()], NODES_SCHEMA)
    pq.write_table(table.drop_columns(list(drop)), path)
    return path


def write_problems(path: Path, *trees: Tree, levels: dict[str, str] | None = None) -> Path:
    """Write the trees' problems as a `problems` Parquet file (one row per problem)."""
    seen: dict[str, dict] = {}
    for tree in trees:
        level = (levels or {}).get(tree.problem_id)
        seen[tree.problem_id] = {
            "problem_id": tree.problem_id,
            "question": tree.question,
            "answer": "1",
            "source": "test",
            "split": "train",
            "solution": None,
            "meta": json.dumps({"level": level} if level else {}),
        }
    pq.write_table(pa.Table.from_pylist(list(seen.values()), PROBLEMS_SCHEMA), path)
    return path
