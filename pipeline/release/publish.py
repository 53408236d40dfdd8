"""Publishing the dataset to the Hugging Face Hub (docs/data-contracts.md).

``build_dataset_folder`` validates every table it publishes (pipeline.rules.checks; a broken table
stops the publish), then writes a Hub-ready folder::

    README.md                                   dataset card: YAML front matter + recipe, stats,
                                                params and the git / DVC revision it came from
    data/<config>/<split>-00000-of-00001.parquet

with one config per use (5b: the schemas TRL trainers read; pipeline.release.card says on the
card what each TRL trainer does with each column):

- ``problems``: the seed problems (the contract's ``split``: train, validation when there is one, test);
- ``trajectories``: root-to-terminal paths with their Q-values, every round;
- ``sft``: the SFT set as ``prompt`` (ending with the newline pipeline.models.train.sft puts before
  the response) / ``completion`` (the contract's ``response``);
- ``pairs``: PPM pairs as ``prompt`` (the contract's ``prefix``), ``chosen``, ``rejected``,
  ``q_margin`` (the contract's ``margin``, renamed so TRL does not subtract it in its loss)
  plus our columns (splits train and test, the contract's ``split``);
- ``steps``: TRL's stepwise-supervision (PRM) format, one row per trajectory: ``prompt``
  (the SFT prompt and the ``<code>`` opening, as the PPM sees it), ``completions`` (the step
  texts) and ``labels`` (one bool per step: Q > 0).

``sft``, ``pairs`` and ``steps`` hold each training example once: a row that several rounds
produced is the latest round's, with ``rounds`` listing them all (:func:`latest_once`).

A split with no rows is left out of the card (``datasets`` cannot load an empty Parquet split)
and named in its body. The folder is built beside ``out_dir`` and renamed into place, so a
failed build leaves nothing behind. ``push_to_hub`` checks the token and that the Hub answers
before any upload.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipeline import layout
from pipeline.release.card import (
    CardInputs,
    ConfigOut,
    card_body,
    card_metadata,
    size_category,
    write_card,
)
from pipeline.rules.sql import sql_literal
from pipeline.search import steps

__all__ = ["size_category"]  # tests and callers read it here

PUBLISHED_TABLES = ("trajectories", "sft", "pairs")  # per round; plus problems
ROWS_PER_SHARD = 200_000
TOKEN_HINT = "run `hf auth login` (or `huggingface-cli login`) or set HF_TOKEN"


class PublishError(RuntimeError):
    """Why nothing was published: a missing input, no token, no network (exit code 2)."""

    exit_code = 2


class ContractError(PublishError):
    """A table to publish breaks its contract (exit code 1, like `rstar validate`)."""

    exit_code = 1


# --------------------------------------------------------------------------- inputs


def _load_params(path: Path) -> dict[str, Any]:
    from pipeline.config import ParamsError, load_params

    try:
        return load_params(path)
    except ParamsError as error:
        raise PublishError(str(error)) from None


def parse_rounds(text: str | None) -> list[str] | None:
    """``"r1, r2"`` as ["r1", "r2"]; None (every round of the schedule) when empty or absent."""
    keys = [key.strip() for key in (text or "").split(",") if key.strip()]
    return keys or None


def select_rounds(repo: Path, params: dict[str, Any], rounds: list[str] | None) -> list[str]:
    """The rounds to publish: ``rounds``, or every round of the params schedule; each must exist."""
    keys = list(rounds) if rounds else list((params.get("rounds") or {}).keys())
    if not keys:
        raise PublishError("no rounds to publish: params.yaml has no `rounds` and none were given")
    for key in keys:
        try:
            layout.round_number(key)
        except ValueError as error:
            raise PublishError(str(error)) from None
        for table in PUBLISHED_TABLES:
            path = repo / layout.round_dir(key) / f"{table}.parquet"
            if not path.is_file():
                raise PublishError(f"{path}: missing; run `dvc repro` (or `dvc pull`) first")
    return sorted(keys, key=layout.round_number)


def validate_inputs(repo: Path, rounds: list[str], min_margin: float) -> dict[str, dict[str, Any]]:
    """Validate the problems table and every published round table (pipeline.rules.checks).

    Raises :class:`ContractError` with the summary of every failing table; returns
    {path: {rows, checks}} for the card.
    """
    from pipeline.rules.checks import ValidationError, validate_table

    problems = repo / layout.PROBLEMS
    if not problems.is_file():
        raise PublishError(f"{problems}: missing; run `dvc repro` (or `dvc pull`) first")
    try:
        reports = [validate_table("problems", problems)]
        for key in rounds:
            for table in PUBLISHED_TABLES:
                path = repo / layout.round_dir(key) / f"{table}.parquet"
                reports.append(
                    validate_table(table, path, problems_path=problems, min_margin=min_margin)
                )
    except ValidationError as error:
        raise PublishError(str(error)) from None
    broken = [report for report in reports if not report.success]
    if broken:
        details = "\n".join(report.summary() for report in broken)
        names = ", ".join(report.path for report in broken)
        verb = "breaks its" if len(broken) == 1 else "break their"
        raise ContractError(f"not published: {names} {verb} contract\n{details}")
    return {
        str(Path(r.path).relative_to(repo)): {
            "rows": r.rows,
            "checks": len(r.checks) - len(r.skipped),
        }
        for r in reports
    }


# --------------------------------------------------------------------------- configs as SQL


def _files(repo: Path, rounds: list[str], table: str) -> str:
    paths = [str(repo / layout.round_dir(key) / f"{table}.parquet") for key in rounds]
    return "read_parquet([" + ", ".join(sql_literal(p) for p in paths) + "], union_by_name = true)"


class ConfigQuery(NamedTuple):
    about: str
    sql: str  # the config's rows, in order
    split_column: str | None  # the column that names each row's split; None: all train
    before_dedup: str | None = None  # the rows of every round before repeats are removed


def latest_once(source: str, keys: str) -> str:
    """Rows of ``source`` once per ``keys``: the latest round's row, plus ``rounds``, the sorted
    rounds that had it. The pipeline trains each round on its own table only; a dataset of all
    rounds would count a repeated row once per round."""
    window = f"OVER (PARTITION BY {keys})"
    return (
        f"SELECT * EXCLUDE (latest_first) FROM (SELECT *, list_sort(list(round) {window}) AS rounds, "
        f"row_number() OVER (PARTITION BY {keys} ORDER BY round DESC) AS latest_first "
        f"FROM {source}) WHERE latest_first = 1"
    )


DEDUP_KEYS = {  # what makes two rows the same training example
    "sft": "problem_id, prompt, response",
    "pairs": "problem_id, prefix, chosen, rejected",
    "steps": "problem_id, steps",
}


def config_queries(repo: Path, rounds: list[str]) -> dict[str, ConfigQuery]:
    """Per config: what it is, its SQL over the inputs, its split column, the rows before dedup."""
    problems = f"read_parquet({sql_literal(repo / layout.PROBLEMS)})"
    trajectories, sft, pairs = (_files(repo, rounds, t) for t in PUBLISHED_TABLES)
    once = {name: f"({latest_once(table, DEDUP_KEYS[name])})"
            for name, table in (("sft", sft), ("pairs", pairs), ("steps", trajectories))}  # fmt: skip
    return {
        "problems": ConfigQuery(
            "the seed problems with their answers and reference solutions",
            f"SELECT * FROM {problems} ORDER BY problem_id",
            "split",
        ),
        "trajectories": ConfigQuery(
            "root-to-terminal paths of the MCTS trees with per-step Q-values, every round",
            f"SELECT * FROM {trajectories} ORDER BY round, problem_id, leaf_id",
            None,
        ),
        # `prompt` carries the newline pipeline.models.train.sft puts between prompt and response:
        # TRL joins prompt + completion with nothing between them.
        "sft": ConfigQuery(
            "the SFT set (top-2 correct trajectories per problem by mean Q), prompt/completion",
            (
                "SELECT prompt || chr(10) AS prompt, response AS completion, "
                f"* EXCLUDE (prompt, response) FROM {once['sft']} "
                "ORDER BY round, problem_id, rank"
            ),
            None,
            f"SELECT * FROM {sft}",
        ),
        # `margin` would enter TRL's reward loss; the pipeline's PPM loss has none.
        "pairs": ConfigQuery(
            "step-level preference pairs for the PPM: prompt (the prefix), chosen, rejected",
            (
                "SELECT prefix AS prompt, chosen, rejected, margin AS q_margin, "
                "* EXCLUDE (prefix, chosen, rejected, margin) "
                f"FROM {once['pairs']} ORDER BY round, problem_id, node_id, chosen, rejected"
            ),
            "split",
            f"SELECT * FROM {pairs}",
        ),
        "steps": ConfigQuery(
            "stepwise supervision for a PRM: prompt, completions (steps), labels (Q > 0)",
            (
                "SELECT rstar_step_prompt(p.question) AS prompt, t.steps AS completions, "
                "list_transform(t.q_values, lambda q: q > 0) AS labels, t.problem_id, t.round, "
                "t.rounds, t.leaf_id, t.q_values, t.correct, t.has_error "
                f"FROM {once['steps']} AS t JOIN {problems} AS p USING (problem_id) "
                "ORDER BY t.round, t.problem_id, t.leaf_id"
            ),
            None,
            f"SELECT * FROM {trajectories}",
        ),
    }


STEPS_CHECKS = {  # the published steps rows a PRM trainer needs; the card lists them
    "one label per step": "len(labels) != len(completions)",
    "at least one step": "len(completions) = 0",
    "no missing text": "prompt IS NULL OR list_contains(completions, NULL)",
}


def check_steps(con: duckdb.DuckDBPyConnection, query: str) -> dict[str, Any]:
    """Check the ``steps`` config's rows; :class:`ContractError` names the first failing check."""
    for name, broken in STEPS_CHECKS.items():
        found = con.sql(f"SELECT leaf_id, round FROM ({query}) WHERE {broken} LIMIT 1").fetchall()
        if found:
            leaf, round_ = found[0]
            raise ContractError(
                f"not published: steps row of leaf {leaf} (round {round_}) fails {name!r}"
            )
    rows = con.sql(f"SELECT count(*) FROM ({query})").fetchall()[0][0]
    return {"rows": rows, "checks": len(STEPS_CHECKS)}


def _step_prompts(questions: pa.Array) -> pa.Array:
    """What precedes the first step: the SFT prompt and the solution opening (search.steps)."""
    return pa.array(
        [steps.generation_prefix(steps.sft_prompt(q), []) for q in questions.to_pylist()],
        type=pa.string(),
    )


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.create_function("rstar_step_prompt", _step_prompts, ["VARCHAR"], "VARCHAR", type="arrow")
    return con


# --------------------------------------------------------------------------- writing shards


def write_split(
    con: duckdb.DuckDBPyConnection, query: str, folder: Path, split: str, rows_per_shard: int
) -> tuple[int, list[Path], list[str]]:
    """Stream ``query`` into ``<split>-NNNNN-of-NNNNN.parquet`` shards; nothing for 0 rows."""
    total = con.sql(f"SELECT count(*) FROM ({query})").fetchall()[0][0]
    reader = con.sql(query).to_arrow_reader(min(rows_per_shard, 65_536))
    columns = list(reader.schema.names)
    if total == 0:
        return 0, [], columns
    count = math.ceil(total / rows_per_shard)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{split}-{i:05d}-of-{count:05d}.parquet" for i in range(count)]
    index, written, writer = 0, 0, None
    for batch in reader:
        while batch.num_rows:
            if writer is None:
                writer = pq.ParquetWriter(paths[index], reader.schema)
            take = min(batch.num_rows, rows_per_shard - written)
            writer.write_batch(batch.slice(0, take))
            batch, written = batch.slice(take), written + take
            if written == rows_per_shard:
                writer.close()
                writer, written, index = None, 0, index + 1
    if writer is not None:
        writer.close()
    return total, paths, columns


def write_configs(
    repo: Path, rounds: list[str], folder: Path, rows_per_shard: int = ROWS_PER_SHARD
) -> tuple[list[ConfigOut], dict[str, Any]]:
    """Write every config's splits under ``folder/data/<config>/``; (configs, steps checks)."""
    configs = []
    con = _connect()
    try:
        queries = config_queries(repo, rounds)
        steps_checked = check_steps(con, queries["steps"].sql)
        for name, (about, query, split_column, before_dedup) in queries.items():
            out = ConfigOut(name, about)
            splits = ["train"]
            if split_column:
                found = con.sql(f"SELECT DISTINCT {split_column} FROM ({query})").fetchall()
                splits = sorted(
                    {row[0] for row in found} | {"train"}, key=lambda s: (s != "train", s)
                )
            for split in splits:
                part = query if not split_column else (
                    f"SELECT * FROM ({query}) WHERE {split_column} = {sql_literal(split)}"
                )  # fmt: skip
                rows, paths, out.columns = write_split(
                    con, part, folder / "data" / name, split, rows_per_shard
                )
                out.splits[split] = rows
                if rows:
                    out.files[split] = [p.relative_to(folder).as_posix() for p in paths]
            if before_dedup:
                out.repeats = con.sql(f"SELECT count(*) FROM ({before_dedup})").fetchall()[0][0]
                out.repeats -= out.rows
            configs.append(out)
    finally:
        con.close()
    return configs, steps_checked


# --------------------------------------------------------------------------- provenance


def git_revision(repo: Path) -> dict[str, Any]:
    """The commit the data came from and whether tracked files differ from it."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def lock_hashes(repo: Path, paths: list[str]) -> dict[str, str | None]:
    """The md5 that dvc.lock records for each path (None when it records none)."""
    lock_path = repo / "dvc.lock"
    recorded: dict[str, str] = {}
    if lock_path.is_file():
        lock = yaml.safe_load(lock_path.read_text()) or {}
        for stage in (lock.get("stages") or {}).values():
            for out in stage.get("outs") or []:
                recorded[out["path"]] = out.get("md5")
    return {path: recorded.get(path) for path in paths}


def source_tables(rounds: list[str]) -> list[str]:
    """The tables a build reads, as dvc.lock names them."""
    return [layout.PROBLEMS.as_posix()] + [
        (layout.round_dir(k) / f"{t}.parquet").as_posix() for k in rounds for t in PUBLISHED_TABLES
    ]


# --------------------------------------------------------------------------- the folder


def build_dataset_folder(
    repo: Path,
    rounds: list[str] | None,
    out_dir: Path,
    *,
    license: str = "mit",
    params_path: Path | None = None,
    pretty_name: str = "rStar-Math self-evolution data",
    repo_id: str | None = None,
    for_hub: bool = False,
    rows_per_shard: int = ROWS_PER_SHARD,
) -> Path:
    """Validate the tables of ``rounds`` (None: every round in params) and write a Hub-ready folder.

    The folder (``out_dir``, replaced whole) holds ``README.md`` (the dataset card) and
    ``data/<config>/<split>-NNNNN-of-NNNNN.parquet``. Raises :class:`PublishError` when an input
    is missing or a table breaks its contract; then ``out_dir`` is left as it was.

    The card's training snippets load ``out_dir`` and the last round's policy by their paths,
    so they run as written on this machine; ``for_hub`` (a push) makes them load ``repo_id``
    and the policy's path inside the repository instead.
    """
    repo = Path(repo).resolve()
    out_dir = Path(out_dir).resolve()
    params_path = Path(params_path) if params_path else repo / "params.yaml"
    params = _load_params(params_path)
    keys = select_rounds(repo, params, rounds)
    min_margin = float((params.get("pairs") or {}).get("min_margin", 0.5))
    validation = validate_inputs(repo, keys, min_margin)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        configs, steps_checked = write_configs(repo, keys, building, rows_per_shard)
        validation["steps config (from the trajectories and problems)"] = steps_checked
        policy = layout.model_dir(keys[-1])
        inputs = CardInputs(
            repo=repo, rounds=keys, params_text=params_path.read_text(), validation=validation,
            pretty_name=pretty_name,
            data=repo_id if for_hub and repo_id else str(out_dir),
            model=policy.as_posix() if for_hub else str(repo / policy),
            revision=git_revision(repo), hashes=lock_hashes(repo, source_tables(keys)),
        )  # fmt: skip
        write_card(
            building, card_metadata(configs, license, pretty_name), card_body(configs, inputs)
        )
        _replace_dir(building, out_dir)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return out_dir


def _replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` at ``target`` by renames; an old ``target`` is removed only after the swap."""
    new.chmod(0o755)  # mkdtemp makes it 0700
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- the Hub


def check_hub_access(token: str | None = None):  # -> tuple[HfApi, str]
    """A token (argument, HF_TOKEN or the saved login) that the Hub accepts; the user's name.

    Raises :class:`PublishError` in one line when there is no token, the Hub cannot be reached
    (no network, HF_HUB_OFFLINE) or it rejects the token; nothing else has happened by then.
    """
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = token or get_token()
    if not token:
        raise PublishError(f"no Hugging Face token: {TOKEN_HINT}")
    api = HfApi(token=token)
    try:
        user = api.whoami()
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            raise PublishError(
                f"the Hugging Face Hub rejected the token ({status}): {TOKEN_HINT}"
            ) from None
        raise PublishError(f"the Hugging Face Hub answered with an error: {error}") from None
    except Exception as error:  # noqa: BLE001 - offline mode, DNS, refused, timeouts (httpx, OSError)
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PublishError(
            f"cannot reach the Hugging Face Hub at {constants.ENDPOINT}: {message}"
        ) from None
    return api, user.get("name", "?")


def push_to_hub(
    folder: Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload a folder built by :func:`build_dataset_folder` as a dataset repo; returns its URL.

    Checks the token and the Hub's reachability first, then creates the repo (and the branch
    ``revision`` when given) and uploads the folder in one commit.
    """
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise PublishError(f"{folder}: no README.md; build it with build_dataset_folder first")
    api, _ = check_hub_access(token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(folder),
        revision=revision,
        commit_message=commit_message or "Upload rstar-data dataset",
    )
    return str(url)


def run_publish_cli(
    repo: Path,
    *,
    rounds: list[str] | None,
    out: Path | None,
    dry_run: bool,
    repo_id: str | None,
    private: bool = False,
    revision: str | None = None,
) -> tuple[int, str]:
    """What `rstar publish` does: (exit code, message). Without ``dry_run`` the token and the Hub
    are checked before anything is built; a dry run builds the folder only (default data/publish).
    """
    try:
        if dry_run:
            folder = build_dataset_folder(
                repo, rounds, out or repo / "data" / "publish", repo_id=repo_id
            )
            return 0, f"dataset folder written to {folder} (dry run: nothing pushed)"
        if not repo_id:
            raise PublishError("--repo-id is required to push (or use --dry-run --out DIR)")
        check_hub_access()
        with tempfile.TemporaryDirectory(prefix="rstar-publish-") as scratch:
            folder = build_dataset_folder(
                repo, rounds, out or Path(scratch) / "dataset", repo_id=repo_id, for_hub=True
            )
            url = push_to_hub(folder, repo_id, private=private, revision=revision)
        return 0, f"published {repo_id} to {url}" + (f" (branch {revision})" if revision else "")
    except PublishError as error:
        return error.exit_code, f"error: {error}"
