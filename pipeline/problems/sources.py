"""Seed problem sources -> the ``problems`` table (docs/data-contracts.md).

Sources, chosen by the ``source`` string:

- ``generated``: the embedded generator (:mod:`pipeline.problems.generator`), with reference
  solutions;
- a ``.jsonl`` / ``.json`` / ``.parquet`` path: GSM8K files (answers are worked solutions ending
  in ``#### N``, detected from the content or forced with ``format="gsm8k"``; their solutions are
  converted to the step format by :mod:`pipeline.problems.gsm8k`), MATH-style JSON lists, or any
  table whose columns are mapped with ``columns={"question": ..., "answer": ...}``; a text answer
  holding ``\\boxed{...}`` (a MATH solution mapped to ``answer``) keeps the last box's content;
- ``hf:<dataset>[:<config>][@<split>]``: the same, through ``datasets.load_dataset``.

Every problem gets ``problem_id`` = hash of its normalised question, so ids are stable across
builds; duplicates (same id) are dropped keeping the first and counted. Train/test splits are
assigned by hashing the id, so adding problems never moves others between splits.

Files are UTF-8 (a byte-order mark is skipped) with LF or CRLF line ends; texts are stored with
LF line ends, so a CRLF copy of a file gives the same problems. A malformed file, row or
option is a one-line :class:`ProblemSourceError` naming the file, line/row and column or option
(README.md), raised before anything is returned.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.grading.answer import extract_answer, has_box, restore_lost_backslashes
from pipeline.ids import hash_position, problem_id
from pipeline.problems.generator import LEVELS, generate_problems
from pipeline.problems.gsm8k import GSM8KFormatError, convert_worked_solution, looks_like_gsm8k

COLUMNS = ("problem_id", "question", "answer", "source", "split", "solution", "meta")
SCHEMA = {name: pl.String for name in COLUMNS}
MAPPABLE = ("question", "answer", "solution")
FORMATS = ("gsm8k", "plain")
GENERATED = "generated"
HF_PREFIX = "hf:"
FILE_TYPES = (".jsonl", ".json", ".parquet")


class ProblemSourceError(ValueError):
    """A seed source that cannot be read; the message names the source and the row."""


@dataclass(frozen=True)
class LoadedProblems:
    """The problems of a source plus what was dropped or left without a solution, and why."""

    problems: pl.DataFrame
    duplicates: pl.DataFrame  # rows dropped because an earlier row had the same problem_id

    @property
    def unconverted(self) -> dict[str, int]:
        """Why kept problems have no reference solution (their meta's ``solution_error``)."""
        reasons = Counter(json.loads(meta).get("solution_error") for meta in self.problems["meta"])
        reasons.pop(None, None)
        return dict(sorted(reasons.items()))

    def stats(self) -> dict[str, Any]:
        """Counts for the stage's metrics file."""
        levels = Counter(
            str(json.loads(meta).get("level", "none")) for meta in self.problems["meta"]
        )
        return {
            "problems": self.problems.height,
            "by_split": _counts(self.problems["split"]),
            "by_source": _counts(self.problems["source"]),
            "by_level": dict(sorted(levels.items())),
            "with_solution": self.problems["solution"].is_not_null().sum(),
            "duplicates_dropped": self.duplicates.height,
            "unconverted_solutions": self.unconverted,
        }


def _counts(column: pl.Series) -> dict[str, int]:
    return dict(sorted(Counter(column.to_list()).items()))


@dataclass(frozen=True)
class _Row:
    """One raw record of a source and where it came from (for error messages and meta)."""

    where: str  # "path: line 3" / "path: row 3"
    record: dict[str, Any]
    origin: dict[str, Any]  # file name and row number, kept in meta


# --------------------------------------------------------------------------- public API


def load_problems(source: str, **options: Any) -> pl.DataFrame:
    """The ``problems`` table of a source; see :func:`read_problems` for the options."""
    return read_problems(source, **options).problems


def read_problems(
    source: str,
    *,
    n: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    levels: Sequence[int] | None = None,
    test_fraction: float | None = None,
    validation_fraction: float = 0.0,
    split: str | None = None,
    columns: dict[str, str] | None = None,
    format: str | None = None,
    name: str | None = None,
    dedupe: bool = True,
) -> LoadedProblems:
    """Load a source into the ``problems`` contract.

    ``n`` is the number of problems to generate (``generated``, default 400) or, elsewhere, the
    same as ``limit``: keep the first that many distinct problems. ``split`` names the split of
    every row; ``test_fraction`` (and ``validation_fraction``) instead assigns the split by hash
    (:func:`split_problems`, with ``seed``); with neither, files named like ``*test*`` are ``test`` and others ``train``.
    ``columns`` maps contract columns (question, answer, solution) to the source's names.
    ``format`` is ``gsm8k`` or ``plain`` (default: ``gsm8k`` when the first row's answer contains
    ``####``; a later ``####`` answer in a file detected as plain is then an error).
    ``name`` overrides the ``source`` column; ``dedupe=False`` keeps repeated questions.
    """
    if n is not None and limit is not None and source != GENERATED:
        raise ProblemSourceError("give either n or limit, not both")
    if split is not None and test_fraction is not None:
        raise ProblemSourceError("give either split or test_fraction, not both")
    if format is not None and format not in FORMATS:
        raise ProblemSourceError(f"unknown format {format!r}: expected one of {', '.join(FORMATS)}")
    # Options are checked before any file is read: a typo should not cost a long load.
    mapping = _column_mapping(columns)
    _check_count("n", n, generated=source == GENERATED)
    _check_count("limit", limit)
    _check_fraction(test_fraction)
    _check_fraction(validation_fraction, "validation_fraction")
    if (test_fraction or 0) + validation_fraction > 1:
        raise ProblemSourceError("test_fraction + validation_fraction must not exceed 1")
    # 0 means "all" for a file (profiles/paper.yaml: `n: 0  # 0: all`), as for `rstar eval`.
    cap = (limit if limit is not None else (n if source != GENERATED else None)) or None
    if source == GENERATED:
        if mapping or format:
            raise ProblemSourceError(
                "options columns and format do not apply to source 'generated'"
            )
        frame = _generated(400 if n is None else n, seed, _check_levels(levels))
        default_split = "train"
    else:
        if levels is not None:
            raise ProblemSourceError("option levels applies only to source 'generated'")
        label, rows, default_split = _open_source(source)
        frame = _to_frame(rows, mapping, format, label, stop_after=cap if dedupe else None)
        if frame.is_empty():  # an empty table would only fail later, in every later stage
            raise ProblemSourceError(f"{source}: no problems in the source")
    if name:
        frame = frame.with_columns(source=pl.lit(name))
    frame, duplicates = dedupe_problems(frame) if dedupe else (frame, frame.clear())
    if cap is not None:
        frame = frame.head(cap)
    if test_fraction is not None:
        frame = split_problems(frame, test_fraction, seed, validation_fraction)
    else:
        frame = frame.with_columns(split=pl.lit(split or default_split))
    return LoadedProblems(frame, duplicates)


def dedupe_problems(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Keep the first row of each ``problem_id``; return (kept, dropped)."""
    first = pl.col("problem_id").is_first_distinct()
    return frame.filter(first), frame.filter(~first)


def split_problems(
    frame: pl.DataFrame, test_fraction: float, seed: int = 0, validation_fraction: float = 0.0
) -> pl.DataFrame:
    """Assign ``train``/``validation``/``test`` by a hash of (seed, problem_id).

    Each problem's split depends on its own id only, so adding or removing problems never moves
    another one between splits; about ``test_fraction`` of them land in ``test`` and
    ``validation_fraction`` in ``validation`` (for tuning, so that ``test`` is only reported).
    """
    _check_fraction(test_fraction)
    _check_fraction(validation_fraction, "validation_fraction")

    def split_of(problem_id: str) -> str:
        position = hash_position(f"{seed}:{problem_id}")
        if position < test_fraction:
            return "test"
        return "validation" if position < test_fraction + validation_fraction else "train"

    splits = [split_of(pid) for pid in frame["problem_id"]]
    return frame.with_columns(split=pl.Series(splits, dtype=pl.String))


def _check_count(option: str, value: object, generated: bool = False) -> None:
    """``n`` / ``limit``: a whole number (params.yaml may hold ``2.5`` or ``"5"``), >= 0 for a
    file (0 = all) and >= 1 for the generator, which has no "all"."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProblemSourceError(f"{option} must be a whole number, got {value!r}")
    if generated and value < 1:
        raise ProblemSourceError(f"{option} must be >= 1 for source 'generated', got {value}")
    if value < 0:
        raise ProblemSourceError(f"{option} must be >= 0 (0 = all), got {value}")


def _check_fraction(value: object, option: str = "test_fraction") -> None:
    """A share of problems: a number in [0, 1] (NaN fails both comparisons)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ProblemSourceError(f"{option} must be a number within [0, 1], got {value!r}")


def _check_levels(levels: object) -> list[int]:
    """The generator's difficulty levels: a non-empty list drawn from 1-5."""
    if levels is None:
        return list(LEVELS)
    valid = isinstance(levels, (list, tuple)) and bool(levels)
    valid = valid and all(type(level) is int and level in LEVELS for level in levels)
    if not valid:
        raise ProblemSourceError(f"levels must be a non-empty list of 1-5, got {levels!r}")
    return list(levels)


# --------------------------------------------------------------------------- generated


def _generated(n: int, seed: int, levels: Sequence[int]) -> pl.DataFrame:
    try:
        problems = generate_problems(n, seed=seed, levels=levels)
    except ValueError as error:
        raise ProblemSourceError(f"source 'generated': {error}") from None
    return _frame(
        {
            "problem_id": problem_id(p.question),
            "question": p.question,
            "answer": p.answer,
            "source": GENERATED,
            "split": None,
            "solution": p.solution,
            "meta": _json(p.meta),
        }
        for p in problems
    )


# --------------------------------------------------------------------------- files and hub


def _open_source(source: str) -> tuple[str, Iterator[_Row], str]:
    """(source label, rows, default split) of a path or ``hf:`` spec."""
    if source.startswith(HF_PREFIX):
        return _open_hf(source)
    path = Path(source)
    suffix = path.suffix.lower()  # PROBLEMS.JSONL is JSON lines too
    if suffix not in FILE_TYPES:
        raise ProblemSourceError(
            f"unknown source {source!r}: expected 'generated', a {'/'.join(FILE_TYPES)} path "
            "or hf:<dataset>[:<config>][@<split>]"
        )
    if path.is_dir():
        raise ProblemSourceError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise ProblemSourceError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ProblemSourceError(f"{path}: empty file")
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}
    return path.stem, readers[suffix](path), _split_from_name(path.stem)


def _split_from_name(stem: str) -> str:
    words = set(re.split(r"[^a-z]+", stem.lower()))
    return "test" if "test" in words else "train"


def _read_jsonl(path: Path) -> Iterator[_Row]:
    """Streams the lines; bytes are decoded line by line so a bad byte's line can be named."""
    try:
        lines = path.open("rb")
    except OSError as error:
        raise ProblemSourceError(f"{path}: cannot read ({error.strerror})") from None
    first = True
    with lines:
        for number, raw in enumerate(lines, 1):
            where = f"{path}: line {number}"
            line = _decode(path, raw, number)
            if not line.strip():
                continue
            if first and line.lstrip().startswith("["):
                raise ProblemSourceError(
                    f"{where}: a JSON list, not JSON lines (one object per line); "
                    "name the file .json"
                )
            first = False
            record = _parse_json(line, where)
            if not isinstance(record, dict):
                raise ProblemSourceError(
                    f"{where}: expected a JSON object, got {type(record).__name__}"
                )
            yield _Row(where, record, {"file": path.name, "row": number})


def _read_json(path: Path) -> Iterator[_Row]:
    try:
        text = _decode(path, path.read_bytes())
    except OSError as error:
        raise ProblemSourceError(f"{path}: cannot read ({error.strerror})") from None
    try:
        records = _parse_json(text, str(path), whole_file=True)
    except ProblemSourceError:
        if text.lstrip().startswith("{"):  # JSON lines saved as .json
            yield from _read_jsonl(path)
            return
        raise
    if isinstance(records, dict):  # one object, pretty-printed: one record, like one JSON line
        records = [records]
    if not isinstance(records, list):
        raise ProblemSourceError(f"{path}: expected a JSON list of objects")
    for number, record in enumerate(records, 1):
        where = f"{path}: item {number}"
        if not isinstance(record, dict):
            raise ProblemSourceError(
                f"{where}: expected a JSON object, got {type(record).__name__}"
            )
        yield _Row(where, record, {"file": path.name, "row": number})


def _parse_json(text: str, where: str, whole_file: bool = False) -> Any:
    """``json.loads``, with every way it fails as one line: besides malformed text, an integer
    of more than 4300 digits is a ValueError and deep nesting a RecursionError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        at = f" at line {error.lineno}" if whole_file else ""
        raise ProblemSourceError(f"{where}: malformed JSON{at} ({error.msg})") from None
    except ValueError as error:  # int digits limit
        raise ProblemSourceError(f"{where}: unreadable JSON ({_first_line(error)})") from None
    except RecursionError:
        raise ProblemSourceError(f"{where}: unreadable JSON (nested too deeply)") from None


def _decode(path: Path, raw: bytes, line: int = 1) -> str:
    """UTF-8 text of a file (or of its ``line``); a byte-order mark at its start is skipped."""
    if line == 1 and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ProblemSourceError(f"{path}: UTF-16 text; save the file as UTF-8")
    try:
        return raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as error:
        line += raw.count(b"\n", 0, error.start)  # a whole file: count the lines before
        raise ProblemSourceError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw[error.start]:02x}); "
            "save the file as UTF-8"
        ) from None


def _read_parquet(path: Path) -> Iterator[_Row]:
    try:
        frame = pl.read_parquet(path)
    except Exception as error:  # noqa: BLE001 - polars raises several kinds for a broken file
        raise ProblemSourceError(f"{path}: cannot read Parquet ({_first_line(error)})") from None
    # A float32 0.1 reads back as 0.10000000149011612; its shortest decimal text is what was
    # written, so float32 columns go through text to float64.
    frame = frame.with_columns(pl.col(pl.Float32).cast(pl.String).cast(pl.Float64))
    for number, record in enumerate(frame.iter_rows(named=True), 1):
        yield _Row(f"{path}: row {number}", record, {"file": path.name, "row": number})


def _open_hf(source: str) -> tuple[str, Iterator[_Row], str]:
    """``hf:<dataset>[:<config>][@<split>]`` through ``datasets.load_dataset``."""
    spec, _, split = source[len(HF_PREFIX) :].partition("@")
    dataset, _, config = spec.partition(":")
    split = split or "train"
    if not dataset:
        raise ProblemSourceError(f"{source!r}: expected hf:<dataset>[:<config>][@<split>]")
    try:
        import datasets  # heavy; only needed for this source
    except ImportError:
        raise ProblemSourceError(
            f"hf:{dataset} needs the `datasets` package: pip install datasets"
        ) from None

    try:
        table = datasets.load_dataset(dataset, config or None, split=split)
    except Exception as error:  # noqa: BLE001 - the hub raises many kinds; all mean "not here"
        raise ProblemSourceError(
            f"could not load hf:{dataset} from the Hugging Face Hub (offline? "
            f"{type(error).__name__}: {_first_line(error)}); download it and pass a local path"
        ) from None
    rows = (
        _Row(f"hf:{dataset}@{split}: row {number}", dict(record), {"row": number})
        for number, record in enumerate(table, 1)
    )
    return f"hf:{dataset}", rows, split


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --------------------------------------------------------------------------- rows -> frame


def _column_mapping(columns: object) -> dict[str, str]:
    if columns is None:
        return {}
    if not isinstance(columns, Mapping):
        raise ProblemSourceError(
            f"columns must map question/answer/solution to column names, got {columns!r}"
        )
    mapping = dict(columns)
    unknown = sorted(map(str, set(mapping) - set(MAPPABLE)))
    if unknown:
        raise ProblemSourceError(
            f"columns: unknown key(s) {', '.join(unknown)}; map any of {', '.join(MAPPABLE)}"
        )
    for role, column in mapping.items():
        if not isinstance(column, str) or not column:
            raise ProblemSourceError(f"columns: {role!r} must name a column, got {column!r}")
    return mapping


def _to_frame(
    rows: Iterable[_Row],
    mapping: dict[str, str],
    format: str | None,
    label: str,
    stop_after: int | None = None,
) -> pl.DataFrame:
    """Validate and convert raw rows; GSM8K rows get converted reference solutions.

    With ``stop_after``, reading stops before the first new problem beyond that many distinct
    ones, so a small limit on a large file does not convert the whole file.
    """
    question_key = mapping.get("question", "question")
    answer_key = mapping.get("answer", "answer")
    solution_key = mapping.get("solution")
    records, seen = [], set()
    detected = None  # the format read from the first row, when not given
    for row in rows:
        question = _text(row, question_key, "question")
        pid = problem_id(question)
        if stop_after is not None and pid not in seen and len(seen) >= stop_after:
            break
        seen.add(pid)
        raw_answer = _field(row, answer_key, "answer")
        if format is None:  # decided by the first row: a file is one format throughout
            format = "gsm8k" if looks_like_gsm8k(raw_answer) else "plain"
            detected = format
        if detected == "plain" and looks_like_gsm8k(raw_answer):  # else kept whole as the answer
            raise ProblemSourceError(
                f"{row.where}: answer is a GSM8K worked solution ('####') but the first row's "
                "is not; a file is one format throughout (format='plain' keeps such answers)"
            )
        meta = {**row.origin, **_extra_fields(row.record, {question_key, answer_key, solution_key})}
        if format == "gsm8k":
            answer, solution = _convert_gsm8k(row, question, raw_answer, meta)
            source = "gsm8k"
        else:
            answer = _answer_text(row, raw_answer)
            solution = _text(row, solution_key, "solution") if solution_key else None
            source = label
        records.append(
            {
                "problem_id": pid,
                "question": question,
                "answer": answer,
                "source": source,
                "split": None,
                "solution": solution,
                "meta": _json(meta),
            }
        )
    return _frame(records)


def _convert_gsm8k(
    row: _Row, question: str, worked: object, meta: dict[str, Any]
) -> tuple[str, str | None]:
    """(answer, solution or None); why a solution could not be made goes into ``meta``."""
    if not isinstance(worked, str):
        raise ProblemSourceError(
            f"{row.where}: GSM8K answer must be text, got {type(worked).__name__}"
        )
    try:
        conversion = convert_worked_solution(question, worked)
    except GSM8KFormatError as error:
        raise ProblemSourceError(f"{row.where}: {error}") from None
    if not conversion.answer:
        raise ProblemSourceError(f"{row.where}: empty answer after '####'")
    if conversion.reason:
        meta["solution_error"] = conversion.reason
    return conversion.answer, conversion.solution


def _field(row: _Row, key: str, role: str) -> Any:
    if key not in row.record:
        columns = ", ".join(sorted(map(str, row.record))) or "none"
        mapped = "" if key == role else f" (mapped to {role})"
        raise ProblemSourceError(
            f"{row.where}: missing column {key!r}{mapped}; columns are {columns}; "
            f"map another with columns={{'{role}': ...}}"
        )
    return row.record[key]


def _text(row: _Row, key: str, role: str) -> str:
    value = _field(row, key, role)
    if not isinstance(value, str):
        raise ProblemSourceError(
            f"{row.where}: {role} in column {key!r} must be text, got {type(value).__name__}"
        )
    text = _clean(row, role, value)
    if not text:
        raise ProblemSourceError(f"{row.where}: empty {role} in column {key!r}")
    return text


def _clean(row: _Row, role: str, text: str) -> str:
    """Stripped, with LF line ends; a lone surrogate (an escape such as ``\\ud800`` in JSON)
    is refused here, since it cannot be hashed into an id or written to Parquet."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProblemSourceError(f"{row.where}: {role} is not valid Unicode") from None
    return text.replace("\r\n", "\n").strip()


def _answer_text(row: _Row, value: object) -> str:
    """Answers are strings: ``42.0`` from a numeric column becomes ``42``, and a list of answers
    (MATH has a few problems with two) becomes ``3, -3``, which graders read as a set."""
    parts = value if isinstance(value, list) else [value]
    if not parts:
        raise ProblemSourceError(f"{row.where}: empty answer")
    return ", ".join(_answer_part(row, part) for part in parts)


def _answer_part(row: _Row, value: object) -> str:
    """One answer value as text (see :func:`_answer_text`)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise ProblemSourceError(f"{row.where}: answer must be text or a number, got {value!r}")
    if isinstance(value, str):
        # MATH_test.json item 2913 stores "\tfrac" as a TAB + "frac" (pipeline.grading.answer).
        # Repaired before _clean strips it: that leading TAB is the answer's backslash. (The CR of a CRLF
        # is followed by "\n", not a letter, so it is left for _clean.)
        text = _clean(row, "answer", restore_lost_backslashes(value))
        if has_box(text):  # a MATH solution mapped to answer
            boxed = extract_answer(text)
            if boxed is None:
                raise ProblemSourceError(
                    f"{row.where}: answer has a \\boxed{{}} with no readable answer"
                )
            text = boxed  # extract_answer strips it
        if not text:
            raise ProblemSourceError(f"{row.where}: empty answer")
        return text
    if isinstance(value, int):
        return str(value)
    if not (value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)):
        raise ProblemSourceError(f"{row.where}: answer must be a finite number, got {value!r}")
    # A float as the shortest decimal text that reads back as it: 1e23 is 1 and 23 zeros, not
    # int(1e23) = 99999999999999991611392; 1e-07 is 0.0000001.
    number = value if isinstance(value, Decimal) else Decimal(repr(value))
    if number == int(number):
        return str(int(number))
    return format(number.normalize(), "f")


def _extra_fields(record: dict[str, Any], used: set[str | None]) -> dict[str, Any]:
    """Scalar columns beyond the mapped ones (MATH's index, level, type) go into meta; NaN is
    not JSON (DuckDB's json functions refuse it), so it is stored as null."""
    return {
        str(key): None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in record.items()
        if key not in used and (value is None or isinstance(value, (str, int, float, bool)))
    }


def _json(meta: dict[str, Any]) -> str:
    text = json.dumps(meta, sort_keys=True, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in an extra field: keep it as an \u escape
        text = json.dumps(meta, sort_keys=True)
    return text


def _frame(records: Iterable[dict[str, Any]]) -> pl.DataFrame:
    rows = list(records)
    return pl.DataFrame({name: [r[name] for r in rows] for name in COLUMNS}, schema=SCHEMA)
