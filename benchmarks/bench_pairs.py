"""Benchmark: the tree rules in DuckDB (pipeline.rules.sql) against a plain per-tree Python walk.

    .venv/bin/python benchmarks/bench_pairs.py [--nodes 1000000] [--seed 0] [--workdir DIR]

1. Generates synthetic search trees (many problems, about 4 children per expansion, depth up
   to 8, graded terminals, invalid terminals, PPM-initialised steps) with statistics that follow
   the backup rule of docs/algorithm.md, as sharded `nodes` Parquet plus `problems` Parquet.
2. Runs (a) ``pipeline.rules.sql.derive_pairs`` + ``derive_sft`` and (b) the reference below:
   load the rows into dicts and walk each tree recursively, the way the paper's scripts do.
3. Compares the two outputs row by row (all columns, sorted), then prints the time and peak
   memory (resident set size of this process) of each, and last ``speedup: N.Nx``.

Exits non-zero when the outputs differ. The reference implementation is written independently
of the SQL from docs/algorithm.md and is also used by tests/test_sql.py on random trees.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import ids
from pipeline.rules import sql
from pipeline.search import steps

# --------------------------------------------------------------------------- reference rules


def edit_distance_at_least(a: str, b: str, k: int) -> bool:
    """Whether levenshtein(a, b) >= k: the textbook two-row dynamic programme, stopping as
    soon as every cell of a row reaches k (distances never shrink from one row to the next)."""
    if k <= 0 or abs(len(a) - len(b)) >= k:
        return True
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        if min(current) >= k:
            return True
        previous = current
    return previous[-1] >= k


def heldout_split(problem_id: str, heldout_fraction: float) -> str:
    """'test' when the problem's hash position (pipeline.ids) is below the fraction."""
    return "test" if ids.hash_position(problem_id) < heldout_fraction else "train"


class RefTree:
    """One search tree loaded into dicts: children in child_index order, subtree counts."""

    def __init__(self, rows: list[dict]):
        self.rows = {row["node_id"]: row for row in rows}
        self.children: dict[str, list[dict]] = defaultdict(list)
        self.root: dict | None = None
        for row in rows:
            if row["parent_id"] is None:
                self.root = row
            else:
                self.children[row["parent_id"]].append(row)
        for kids in self.children.values():
            kids.sort(key=lambda row: row["child_index"])
        assert self.root is not None, "tree without root"
        self.correct: dict[str, int] = {}
        self.wrong: dict[str, int] = {}
        self._count(self.root)

    def _count(self, node: dict) -> tuple[int, int]:
        kind = node["terminal_kind"]
        correct = int(kind == "answer" and node["correct"] is True)
        wrong = int(kind == "answer" and node["correct"] is False)  # graded answers only
        for child in self.children[node["node_id"]]:
            c, w = self._count(child)
            correct += c
            wrong += w
        self.correct[node["node_id"]] = correct
        self.wrong[node["node_id"]] = wrong
        return correct, wrong

    def kids(self, node: dict) -> list[dict]:
        return self.children[node["node_id"]]

    def continuation_mean(self, start: dict, side: dict[str, int], best: bool) -> float:
        """Mean Q along the best (or worst) same-side child chain from ``start``, included."""
        total, count, node = 0.0, 0, start
        while True:
            total += node["q"]
            count += 1
            same_side = [kid for kid in self.kids(node) if side[kid["node_id"]] > 0]
            if not same_side:
                return total / count
            if best:
                node = min(same_side, key=lambda kid: (-kid["q"], kid["child_index"]))
            else:
                node = min(same_side, key=lambda kid: (kid["q"], kid["child_index"]))


def reference_pairs(
    tree: RefTree,
    question: str,
    min_margin: float,
    min_edit: int,
    heldout_fraction: float,
) -> list[dict]:
    """docs/algorithm.md, "PPM pairs", walking one tree breadth-first."""
    root = tree.root
    assert root is not None
    prompt = steps.sft_prompt(question)
    split = heldout_split(root["problem_id"], heldout_fraction)
    pairs: list[dict] = []
    queue: deque[tuple[dict, list[str]]] = deque([(root, [])])
    while queue:
        node, texts = queue.popleft()
        kids = tree.kids(node)
        positives = sorted(
            (k for k in kids if tree.correct[k["node_id"]] > 0),
            key=lambda k: (-k["q"], k["child_index"]),
        )
        negatives = sorted(
            (k for k in kids if tree.wrong[k["node_id"]] > 0),
            key=lambda k: (k["q"], k["child_index"]),
        )
        if positives and negatives:
            n_pos = min(len(positives), 4 if len(negatives) == 1 else 2)
            n_neg = min(len(negatives), 4 if len(positives) == 1 else 2)
            for pos in positives[:n_pos]:
                for neg in negatives[:n_neg]:
                    margin = pos["q"] - neg["q"]
                    if margin <= 0:
                        continue
                    best = tree.continuation_mean(pos, tree.correct, best=True)
                    worst = tree.continuation_mean(neg, tree.wrong, best=False)
                    # The one tolerance of the rule: a margin a rounding error under
                    # min_margin is kept (pipeline.rules.sql.MARGIN_TOLERANCE).
                    if best <= worst or margin < min_margin - sql.MARGIN_TOLERANCE:
                        continue
                    if not edit_distance_at_least(pos["step_text"], neg["step_text"], min_edit):
                        continue
                    pairs.append(
                        {
                            "problem_id": node["problem_id"],
                            "round": node["round"],
                            "node_id": node["node_id"],
                            "prefix": steps.generation_prefix(prompt, texts),
                            "chosen": pos["step_text"],
                            "rejected": neg["step_text"],
                            "chosen_q": pos["q"],
                            "rejected_q": neg["q"],
                            "margin": margin,
                            "weight": 1 / (n_pos * n_neg),
                            "split": split,
                        }
                    )
        for kid in kids:
            if tree.correct[kid["node_id"]] > 0 and tree.wrong[kid["node_id"]] > 0:
                queue.append((kid, texts + [kid["step_text"]]))
    return pairs


def reference_sft(tree: RefTree, question: str, per_problem: int) -> list[dict]:
    """docs/algorithm.md, "SFT set": the top correct, error-free trajectories of one tree."""
    root = tree.root
    assert root is not None
    found: list[tuple[float, float, list[int], list[str]]] = []

    def walk(node: dict, path: list[dict]) -> None:
        for kid in tree.kids(node):
            walk(kid, path + [kid])
        is_right = node["terminal_kind"] == "answer" and node["correct"] is True
        if is_right and not any(step["is_error"] for step in path):
            q_values = [step["q"] for step in path]
            found.append(
                (
                    sum(q_values) / len(q_values),
                    min(q_values),
                    [step["child_index"] for step in path],
                    [step["step_text"] for step in path],
                )
            )

    walk(root, [])
    found.sort(key=lambda t: (-t[0], -t[1], t[2]))
    prompt = steps.sft_prompt(question)
    return [
        {
            "problem_id": root["problem_id"],
            "round": root["round"],
            "prompt": prompt,
            "response": steps.render_solution(texts),
            "mean_q": mean_q,
            "rank": rank,
        }
        for rank, (mean_q, _, _, texts) in enumerate(found[:per_problem], 1)
    ]


def reference_rules(
    node_rows: Iterable[dict],
    questions: dict[str, str],
    per_problem: int = 2,
    min_margin: float = 0.5,
    min_edit: int = 20,
    heldout_fraction: float = 0.1,
) -> tuple[list[dict], list[dict]]:
    """(pairs, sft) of every tree, from rows of the `nodes` table."""
    by_tree: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for row in node_rows:
        by_tree[(row["problem_id"], row["round"])].append(row)
    pairs: list[dict] = []
    sft: list[dict] = []
    for (problem_id, _), rows in sorted(by_tree.items()):
        tree = RefTree(rows)
        question = questions[problem_id]
        pairs.extend(reference_pairs(tree, question, min_margin, min_edit, heldout_fraction))
        sft.extend(reference_sft(tree, question, per_problem))
    return pairs, sft


# --------------------------------------------------------------------------- synthetic trees

_WORDS = (
    "total", "apples", "price", "each", "half", "twice", "remaining", "sum", "difference",
    "ratio", "per", "day", "week", "cost", "distance", "speed", "time", "area", "width",
    "length", "count", "boxes", "marbles", "students", "pages",
)  # fmt: skip
_OPS = ("+", "-", "*", "/", "//", "%")


def _step_text(rng: random.Random, depth: int) -> str:
    comment = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 9)))
    name = f"{rng.choice(_WORDS)}_{depth}"
    expr = f"{rng.randint(1, 500)} {rng.choice(_OPS)} {rng.randint(1, 99)}"
    return f"# Step {depth}: {comment}\n{name} = {expr}\n{steps.END_OF_STEP}\n"


def _answer_text(rng: random.Random, value: int) -> str:
    return f"{steps.ANSWER}The answer is \\boxed{{{value}}}{steps.END_OF_ANSWER}"


def synthetic_tree(rng: random.Random, problem_id: str, round_: int, cap: int) -> list[dict]:
    """One random search tree whose statistics follow the backup rule of docs/algorithm.md."""
    p_correct = rng.uniform(0.05, 0.95)
    ppm_round = rng.random() < 0.5
    rows: list[dict] = []
    parents: list[int] = []

    def add(parent: int, text: str, **fields: Any) -> int:
        row = {
            "problem_id": problem_id,
            "round": round_,
            "node_id": ids.node_id(rows[parent]["node_id"] if parent >= 0 else None, text)
            if parent >= 0
            else ids.root_id(problem_id),
            "parent_id": rows[parent]["node_id"] if parent >= 0 else None,
            "depth": rows[parent]["depth"] + 1 if parent >= 0 else 0,
            "child_index": fields.pop("child_index", 0),
            "step_text": text,
            "code": "",
            "is_error": False,
            "terminal_kind": None,
            "final_answer": None,
            "correct": None,
            "visits": 0,
            "value_sum": 0.0,
            "ppm_score": None,
            "tokens": len(text) // 4,
        }
        row.update(fields)
        rows.append(row)
        parents.append(parent)
        return len(rows) - 1

    add(-1, "")
    frontier = deque([0])
    while frontier and len(rows) < cap:
        at = frontier.popleft()
        depth = rows[at]["depth"]
        if at != 0 and rng.random() > 0.62:
            continue  # left unexpanded
        texts: set[str] = set()
        child_depth = depth + 1
        # An expansion that reached an answer keeps that sample alone (docs/algorithm.md); otherwise
        # its samples are code, some of them invalid terminals. max_depth spares answers only.
        if rng.random() < 0.04 + 0.07 * child_depth:
            kinds: list[str | None] = ["answer"]
        else:
            kinds = [
                rng.choices((None, "too_many_errors", "unparsable"), weights=(88, 7, 5))[0]
                for _ in range(rng.randint(3, 5))
            ]
            if child_depth > 7:
                kinds = [kind or "too_deep" for kind in kinds]
        for kind in kinds:
            if kind == "answer":
                correct = rng.random() < p_correct
                value = 42 if correct else rng.randint(0, 60)
                text = (
                    _answer_text(rng, value)
                    if rng.random() < 0.7
                    else (_step_text(rng, child_depth) + _answer_text(rng, value))
                )
            else:
                text = _step_text(rng, child_depth)
                if texts and rng.random() < 0.08:  # a near-duplicate of a sibling
                    twin = min(texts)
                    text = twin.replace("Step", "step", 1)
            if text in texts:
                continue  # the search drops exact duplicates
            texts.add(text)
            fields: dict[str, Any] = {"child_index": len(texts) - 1, "terminal_kind": kind}
            if kind == "answer":
                fields.update(final_answer=str(value), correct=correct)
            elif kind is None:
                fields.update(code=text, is_error=rng.random() < 0.1)
                if ppm_round:
                    fields["ppm_score"] = round(rng.uniform(-1, 1), 2) + 0.0
            elif kind == "too_many_errors":
                fields.update(code=text, is_error=True)
            node = add(at, text, **fields)
            if kind is None:
                frontier.append(node)
    _backup(rows, parents)
    return rows


def _backup(rows: list[dict], parents: list[int]) -> None:
    """Statistics of docs/algorithm.md: PPM init on itself, graded rewards to the root,
    invalid terminals -1 on themselves only; then Q = W / N and is_terminal."""
    for row in rows:
        if row["ppm_score"] is not None:
            row["visits"] += 1
            row["value_sum"] += row["ppm_score"]
    for index, row in enumerate(rows):
        kind = row["terminal_kind"]
        if kind == "answer":
            reward = 1.0 if row["correct"] else -1.0
            walker = index
            while walker >= 0:
                rows[walker]["visits"] += 1
                rows[walker]["value_sum"] += reward
                walker = parents[walker]
        elif kind is not None:
            row["visits"] += 1
            row["value_sum"] -= 1.0
    has_children = [False] * len(rows)
    all_terminal = [True] * len(rows)
    for index in range(len(rows) - 1, 0, -1):
        row = rows[index]
        terminal = row["terminal_kind"] is not None or (has_children[index] and all_terminal[index])
        row["is_terminal"] = terminal
        parent = parents[index]
        has_children[parent] = True
        all_terminal[parent] = all_terminal[parent] and terminal
    rows[0]["is_terminal"] = has_children[0] and all_terminal[0]
    for row in rows:
        row["q"] = row["value_sum"] / row["visits"] if row["visits"] else 0.0
        row["observation"] = ""


def write_synthetic(
    workdir: Path, n_nodes: int, seed: int, shards: int = 4
) -> tuple[str, Path, int, int]:
    """Write about ``n_nodes`` nodes as `nodes` shards plus a `problems` file."""
    rng = random.Random(seed)
    nodes_dir = workdir / "nodes"
    nodes_dir.mkdir(parents=True, exist_ok=True)
    problems: list[dict] = []
    buffer: list[dict] = []
    total, shard = 0, 0
    per_shard = max(1, n_nodes // shards)
    while total < n_nodes:
        question = f"Synthetic problem {len(problems)}: what is {rng.randint(1, 999)} apples?"
        problem_id = ids.problem_id(question)
        problems.append(
            {"problem_id": problem_id, "question": question, "answer": "42", "meta": "{}"}
        )
        tree = synthetic_tree(rng, problem_id, 1 + len(problems) % 2, cap=rng.randint(40, 700))
        buffer.extend(tree)
        total += len(tree)
        if len(buffer) >= per_shard or total >= n_nodes:
            pq.write_table(pa.Table.from_pylist(buffer), nodes_dir / f"part-{shard:03d}.parquet")
            buffer, shard = [], shard + 1
    pq.write_table(pa.Table.from_pylist(problems), workdir / "problems.parquet")
    return str(nodes_dir / "*.parquet"), workdir / "problems.parquet", total, len(problems)


# --------------------------------------------------------------------------- measuring


def _reset_peak_rss() -> None:
    """Reset the kernel's resident-set high-water mark of this process (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _proc_status_mb(field: str) -> float | None:
    """A kB figure of /proc/self/status (e.g. VmRSS) in MiB; None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_rss_mb() -> float:
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    current = _proc_status_mb("VmRSS")
    return float("nan") if current is None else current


def measure(label: str, run: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run once; print wall time, CPU time and the peak resident memory of this process."""
    _reset_peak_rss()
    before = _current_rss_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = _peak_rss_mb()
    print(
        f"{label:<24} {seconds:7.2f} s wall {cpu:7.2f} s cpu   "
        f"peak RSS {peak:6.0f} MiB (+{peak - before:.0f} over its start)",
        flush=True,
    )
    return result, seconds, peak


def _sorted_rows(rows: list[dict], columns: list[str]) -> list[tuple]:
    return sorted(tuple(row[c] for c in columns) for row in rows)


def compare(name: str, ours: list[dict], reference: list[dict]) -> bool:
    """Print OK or the first difference between two tables (all columns, sorted)."""
    columns = list(reference[0]) if reference else list(ours[0]) if ours else []
    left, right = _sorted_rows(ours, columns), _sorted_rows(reference, columns)
    if left == right:
        print(f"{name}: OK ({len(left)} rows equal)")
        return True
    print(f"{name}: MISMATCH duckdb {len(left)} rows, python {len(right)} rows")
    for index, (a, b) in enumerate(zip(left, right)):
        if a != b:
            diff = {c: (x, y) for c, x, y in zip(columns, a, b) if x != y}
            print(f"  first difference at sorted row {index}: {diff}")
            break
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1_000_000, help="nodes to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        start = time.perf_counter()
        # A child process writes the trees, so this process starts the measurements small.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
            nodes_glob, problems_path, n_nodes, n_problems = pool.submit(
                write_synthetic, workdir, args.nodes, args.seed
            ).result()
        print(
            f"generated {n_nodes} nodes of {n_problems} problems in "
            f"{time.perf_counter() - start:.1f} s: {nodes_glob}",
            flush=True,
        )

        def run_duckdb() -> None:
            sql.derive_pairs(nodes_glob, problems_path, workdir / "pairs.parquet")
            sql.derive_sft(nodes_glob, problems_path, workdir / "sft.parquet")

        def run_python() -> tuple[list[dict], list[dict]]:
            shards = sorted(Path(workdir, "nodes").glob("*.parquet"))
            node_rows = pq.ParquetDataset(shards).read().to_pylist()
            questions = {
                row["problem_id"]: row["question"]
                for row in pq.read_table(problems_path).to_pylist()
            }
            return reference_rules(node_rows, questions)

        _, duck_s, duck_mb = measure("duckdb (pipeline.rules.sql)", run_duckdb)
        (ref_pairs, ref_sft), py_s, py_mb = measure("python (per-tree walk)", run_python)

        ok = compare("pairs", pq.read_table(workdir / "pairs.parquet").to_pylist(), ref_pairs)
        ok &= compare("sft", pq.read_table(workdir / "sft.parquet").to_pylist(), ref_sft)
        print(f"peak RSS: duckdb {duck_mb:.0f} MiB, python {py_mb:.0f} MiB")
        if not ok:
            return 1
        print(f"speedup: {py_s / duck_s:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
