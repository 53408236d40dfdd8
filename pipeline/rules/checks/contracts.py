"""The columns of every table, as docs/data-contracts.md states them.

One :class:`Contract` per table: each column's name, its kind of value, whether it may be null
and whether its values are large (free text, lists). ``kind`` is a family of Parquet (Arrow)
types, not one exact type, so a writer may pick int32 or int64, string or large_string: ``str``,
``int``, ``float``, ``bool``, ``list[str]``, ``list[float]``. ``id_columns`` name a row in the
examples of a failed check.

Large columns stay out of pandas: their rules run in DuckDB straight off the Parquet file. At a
million nodes, turning three text columns into pandas and letting Great Expectations hash them
(it fingerprints every batch) took most of the validation time.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.search.tree import NODE_COLUMNS  # the nodes table's one definition

SPLITS = ("train", "validation", "test")  # problems
PAIR_SPLITS = ("train", "test")  # pairs: held out by problem for the PPM


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    nullable: bool = False
    large: bool = False


@dataclass(frozen=True)
class Contract:
    table: str
    columns: tuple[Column, ...]
    id_columns: tuple[str, ...]

    def column(self, name: str) -> Column:
        return next(column for column in self.columns if column.name == name)


def _columns(spec: str, large: str = "") -> tuple[Column, ...]:
    """``"name:kind name:kind? ..."``; a trailing ``?`` marks a nullable column; ``large``
    names the columns of free text and lists."""
    columns = []
    for item in spec.split():
        name, kind = item.split(":")
        columns.append(
            Column(name, kind.rstrip("?"), nullable=kind.endswith("?"), large=name in large.split())
        )
    return tuple(columns)


CONTRACTS: dict[str, Contract] = {
    "problems": Contract(
        "problems",
        _columns(
            "problem_id:str question:str answer:str source:str split:str solution:str? meta:str",
            large="question solution",
        ),
        id_columns=("problem_id",),
    ),
    "nodes": Contract(
        "nodes",
        _columns(
            "problem_id:str round:int node_id:str parent_id:str? depth:int child_index:int "
            "step_text:str code:str observation:str is_error:bool is_terminal:bool "
            "terminal_kind:str? final_answer:str? correct:bool? visits:int value_sum:float "
            "q:float ppm_score:float? tokens:int",
            large="step_text code observation",
        ),
        id_columns=("node_id",),
    ),
    "trajectories": Contract(
        "trajectories",
        _columns(
            "problem_id:str round:int leaf_id:str node_ids:list[str] steps:list[str] "
            "q_values:list[float] mean_q:float min_q:float final_answer:str? correct:bool "
            "has_error:bool",
            large="node_ids steps q_values",
        ),
        id_columns=("leaf_id",),
    ),
    "sft": Contract(
        "sft",
        _columns(
            "problem_id:str round:int prompt:str response:str mean_q:float rank:int",
            large="prompt response",
        ),
        id_columns=("problem_id", "rank"),
    ),
    "pairs": Contract(
        "pairs",
        _columns(
            "problem_id:str round:int node_id:str prefix:str chosen:str rejected:str "
            "chosen_q:float rejected_q:float margin:float weight:float split:str",
            large="prefix chosen rejected",
        ),
        id_columns=("problem_id", "node_id"),
    ),
}

TABLES = tuple(CONTRACTS)

# The nodes contract adds nullability and sizes to pipeline.search.tree.NODES_SCHEMA; the columns
# agree.
assert tuple(column.name for column in CONTRACTS["nodes"].columns) == NODE_COLUMNS
