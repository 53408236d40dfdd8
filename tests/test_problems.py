"""Seed sources -> the `problems` table: every loader, GSM8K conversion, errors, splits, stage."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from pipeline.ids import problem_id
from pipeline.problems.gsm8k import convert_worked_solution, final_answer, to_python
from pipeline.problems.sources import (
    COLUMNS,
    ProblemSourceError,
    load_problems,
    read_problems,
    split_problems,
)
from pipeline.search.steps import (
    END_OF_OUTPUT,
    OUTPUT,
    parse_step,
    solution_program,
    split_solution,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GSM8K_TRAIN, GSM8K_TEST = DATA / "gsm8k" / "train.jsonl", DATA / "gsm8k" / "test.jsonl"
MATH_TEST, MATH500 = DATA / "math" / "MATH_test.json", DATA / "math" / "math500_test.json"


def needs(*paths: Path) -> pytest.MarkDecorator:
    missing = [str(path) for path in paths if not path.exists()]
    return pytest.mark.skipif(bool(missing), reason=f"shared data not present: {missing}")


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def printed_output(solution: str) -> str:
    return solution.split(OUTPUT)[1].split(END_OF_OUTPUT)[0]


NATALIA = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
    "clips in May. How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}


# --------------------------------------------------------------------------- GSM8K conversion


def test_gsm8k_worked_solution_becomes_one_program_with_prose_comments():
    conversion = convert_worked_solution(NATALIA["question"], NATALIA["answer"])
    # 24 is not in the question, so the second line reuses the first line's variable, and
    # 48 + 24.0 is a float: the print rounds it so the output reads like the answer.
    assert conversion.solution == (
        "<code>\n"
        "# Step 1: Natalia sold 48/2 = 24 clips in May.\n"
        "clips = 48 / 2\n"
        "<end_of_step>\n"
        "# Step 2: Natalia sold 48+24 = 72 clips altogether in April and May.\n"
        "clips_2 = 48 + clips\n"
        "print(round(clips_2))\n"
        "<end_of_code>\n"
        "<output>72<end_of_output>\n"
        "<answer>The answer is \\boxed{72}<end_of_answer>"
    )
    assert conversion.answer == "72" and conversion.reason is None


def test_gsm8k_lines_without_calculations_become_comments_of_the_next_step():
    worked = (
        "First count the boxes.\nThere are 3*4 = <<3*4=12>>12 boxes.\n"
        "Each box has 2 apples, so 12*2 = <<12*2=24>>24 apples.\nThat is all.\n#### 24"
    )
    steps = split_solution(
        convert_worked_solution("3 rows of 4 boxes, 2 apples each?", worked).solution
    )
    first, last = parse_step(steps[0]), parse_step(steps[1].split(OUTPUT)[0])
    assert (
        first.code == "# Step 1: First count the boxes.\n# There are 3*4 = 12 boxes.\nboxes = 3 * 4"
    )
    assert last.code.endswith("# That is all.\nprint(apples)") and last.ends_code
    assert printed_output(steps[1]) == "24"


@pytest.mark.parametrize(
    ("expression", "python"),
    [
        ("3 x 4", "3 * 4"),
        ("2×5", "2 * 5"),
        ("1,000-250", "1000 - 250"),
        ("2^3", "2 ** 3"),
        ("20%*50", "20 / 100 * 50"),
        ("$40 − $4", "40 - 4"),
        ("1 1/2 * 4", "(1 + 1 / 2) * 4"),
        ("44(.50)", "44 * 0.5"),
        ("10 % 3", "10 % 3"),
        ("08+2", "8 + 2"),
    ],
)
def test_calculator_expressions_are_read_as_python_arithmetic(expression, python):
    import ast

    assert ast.unparse(to_python(expression)) == python


@pytest.mark.parametrize(
    "expression", ["import os", "__import__('os')", "(1).real", "[1, 2]", "3 apples"]
)
def test_anything_but_arithmetic_is_refused(expression):
    assert to_python(expression) is None


def test_unusable_annotation_keeps_the_calculators_result_literally():
    worked = "He has 3 bags * 4 = <<3 bags*4=12>>12 apples.\nHe eats 2: 12-2 = <<12-2=10>>10 apples.\n#### 10"
    conversion = convert_worked_solution("3 bags of 4 apples, eats 2. How many left?", worked)
    program = solution_program(conversion.solution)
    assert "apples = 12  # as written: 3 bags*4" in program
    assert conversion.literal_steps == 1 and printed_output(conversion.solution) == "10"


def test_prose_calculations_and_percent_answers_are_converted():
    worked = (
        "The shirt costs 5*4 = <<5*4=20>>20 dollars.\nShe pays 20 + 5 = $25 in total.\n"
        "That is 25/100 * 100% = 25% of her money.\n#### 25"
    )
    conversion = convert_worked_solution("A question with 5 and 4 and 100.", worked)
    program = solution_program(conversion.solution)
    assert "step2 = dollars + 5" in program
    assert program.endswith("print(round(step3 * 100))")
    assert printed_output(conversion.solution) == "25"


def test_solution_is_refused_rather_than_wrong_when_no_calculation_gives_the_answer():
    worked = "Let x be her age.\nThen 2x = 14, so x = 7.\n#### 7"
    conversion = convert_worked_solution("Twice her age is 14. How old is she?", worked)
    assert conversion.solution is None and "no calculation" in conversion.reason
    wrong = convert_worked_solution("q", "It is 2+2 = <<2+2=4>>4.\n#### 5")
    assert wrong.solution is None and wrong.reason == "no calculation gives the final answer"


def test_final_answer_drops_thousands_separators():
    assert final_answer("So 1000+234 = <<1000+234=1234>>1,234\n#### 1,234") == "1234"
    assert (
        convert_worked_solution("q", "1000+234 = <<1000+234=1234>>1,234\n#### 1,234").answer
        == "1234"
    )


# --------------------------------------------------------------------------- real problem sets


@pytest.fixture(scope="module")
def gsm8k():
    """Both GSM8K files, loaded once (converting 8,792 solutions takes a few seconds)."""
    if not (GSM8K_TRAIN.exists() and GSM8K_TEST.exists()):
        pytest.skip(f"shared data not present: {GSM8K_TRAIN.parent}")
    return {path.stem: read_problems(str(path)) for path in (GSM8K_TRAIN, GSM8K_TEST)}


def test_gsm8k_files_load_with_answers_splits_and_converted_solutions(gsm8k):
    loaded = gsm8k
    train, test = loaded["train"].problems, loaded["test"].problems
    assert (train.height, test.height) == (7473, 1319)
    assert set(train["split"]) == {"train"} and set(test["split"]) == {"test"}
    assert set(train["source"]) == {"gsm8k"}
    assert all(re.fullmatch(r"-?\d+", answer) for answer in train["answer"])  # no "1,000"
    first = train.row(0, named=True)
    assert first["answer"] == "72" and first["problem_id"] == problem_id(first["question"])
    for frame, result in ((train, loaded["train"]), (test, loaded["test"])):
        missing = frame.filter(pl.col("solution").is_null())
        assert missing.height == sum(result.unconverted.values())
        assert missing.height < 0.03 * frame.height  # 97.8% convert
        assert all("solution_error" in json.loads(meta) for meta in missing["meta"])
    # A limit reads only the first rows, and the counts describe the problems kept.
    first = read_problems(str(GSM8K_TRAIN), n=300).stats()
    assert first["problems"] == 300
    assert first["with_solution"] + sum(first["unconverted_solutions"].values()) == 300


@needs(MATH_TEST, MATH500)
def test_math_json_lists_load_with_meta_and_no_solution():
    math = load_problems(str(MATH_TEST))
    math500 = load_problems(str(MATH500))
    assert (math.height, math500.height) == (5000, 500)
    assert math["solution"].null_count() == 5000 and set(math["split"]) == {"test"}
    assert json.loads(math500["meta"][0])["index"] == 0
    # MATH500 is a subset of the MATH test set: the same questions give the same ids.
    assert set(math500["problem_id"]) <= set(math["problem_id"])
    two_answers = math.filter(pl.col("answer") == "3, -3")
    assert two_answers.height == 1  # a list answer becomes a comma-separated set


# Runs many programs inside one sandbox run, each in a fresh namespace, and prints what each
# printed (or the error it raised) as one repr per line.
BATCH_HARNESS = """
import contextlib, io
for _program in PROGRAMS:
    _printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(_printed):
            exec(_program, {})
        print(repr(_printed.getvalue()))
    except Exception as _error:
        print(repr(f"ERROR {type(_error).__name__}: {_error}"))
"""


def run_in_sandbox_batches(box, programs: list[str], size: int = 100) -> list[str]:
    """What each program prints, running ``size`` programs per sandbox run (a fork each is slow)."""
    import ast

    printed = []
    batches = [programs[i : i + size] for i in range(0, len(programs), size)]
    codes = [f"PROGRAMS = {batch!r}\n{BATCH_HARNESS}" for batch in batches]
    for batch, result in zip(batches, box.run_many(codes)):
        assert result.error is None, result.error
        lines = result.stdout.splitlines()
        assert len(lines) == len(batch)
        printed.extend(ast.literal_eval(line) for line in lines)
    return printed


def test_every_converted_gsm8k_solution_prints_its_answer_in_the_sandbox(gsm8k):
    """All 8,600 converted GSM8K solutions run in the sandbox and are graded correct.

    One sandbox run per program costs ~2 minutes on 2 cores, so every program runs in a fresh
    namespace inside batched sandbox runs, and every 25th also runs on its own.
    """
    sandbox = pytest.importorskip("pipeline.execution.sandbox")
    answer = pytest.importorskip("pipeline.grading.answer")
    frame = pl.concat([loaded.problems for loaded in gsm8k.values()])
    rows = list(frame.filter(pl.col("solution").is_not_null()).iter_rows(named=True))
    programs = [solution_program(row["solution"]) for row in rows]
    with sandbox.Sandbox(workers=2, timeout_s=60, memory_mb=1024) as box:
        printed = run_in_sandbox_batches(box, programs)
        alone = box.run_many(programs[::25])
    shown = [printed_output(row["solution"]) for row in rows]
    failures = [
        (row["question"][:60], out)
        for row, out, want in zip(rows, printed, shown)
        if out.strip() != want
    ]
    assert not failures, f"{len(failures)} of {len(rows)} print something else, e.g. {failures[:3]}"
    assert [r.stdout.strip() for r in alone] == shown[::25] and not any(r.error for r in alone)
    # Grade each distinct (printed, answer) pair once: many problems share them.
    pairs = sorted({(out, row["answer"]) for out, row in zip(shown, rows)})
    wrong = [pair for pair in pairs if not answer.is_equivalent(*pair)]
    assert not wrong, f"{len(wrong)} printed answers are graded wrong, e.g. {wrong[:3]}"


# --------------------------------------------------------------------------- generic sources


def test_generic_jsonl_with_a_column_mapping(tmp_path):
    path = write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"problem": "What is 2 + 3?", "final": 5, "difficulty": "easy"},
            {"problem": "What is 7 / 2?", "final": "7/2", "difficulty": "medium"},
        ],
    )
    frame = load_problems(str(path), columns={"question": "problem", "answer": "final"})
    assert frame.columns == list(COLUMNS)
    assert frame["answer"].to_list() == ["5", "7/2"]
    assert frame["source"].to_list() == ["mine", "mine"]
    assert frame["solution"].to_list() == [None, None]
    assert json.loads(frame["meta"][1]) == {"difficulty": "medium", "file": "mine.jsonl", "row": 2}


def test_generic_parquet_with_a_column_mapping_and_numeric_answers(tmp_path):
    path = tmp_path / "extra_train.parquet"
    pl.DataFrame({"q": ["One plus one?", "Half of 9?"], "a": [2.0, 4.5]}).write_parquet(path)
    frame = load_problems(str(path), columns={"question": "q", "answer": "a"}, name="extra")
    assert frame["answer"].to_list() == ["2", "4.5"]
    assert set(frame["source"]) == {"extra"} and set(frame["split"]) == {"train"}
    assert frame["problem_id"].to_list() == [problem_id("One plus one?"), problem_id("Half of 9?")]


def test_gsm8k_format_is_detected_from_content_in_any_file(tmp_path):
    path = write_jsonl(tmp_path / "word_problems.jsonl", [NATALIA])
    frame = load_problems(str(path))
    assert frame["answer"][0] == "72" and frame["solution"][0].startswith("<code>")
    plain = load_problems(str(path), format="plain")
    assert plain["answer"][0] == NATALIA["answer"].strip() and plain["solution"][0] is None


def test_duplicates_are_dropped_keeping_the_first_and_counted(tmp_path):
    path = write_jsonl(
        tmp_path / "dups.jsonl",
        [
            {"question": "What is 1 + 1?", "answer": "2"},
            {"question": "  what is 1 +   1? ", "answer": "two"},  # same after normalising
            {"question": "What is 2 + 2?", "answer": "4"},
        ],
    )
    loaded = read_problems(str(path))
    assert loaded.problems["answer"].to_list() == ["2", "4"]
    assert loaded.duplicates["answer"].to_list() == ["two"]
    assert loaded.stats()["duplicates_dropped"] == 1
    assert read_problems(str(path), dedupe=False).problems.height == 3


def test_limit_keeps_the_first_distinct_problems(tmp_path):
    rows = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(10)]
    path = write_jsonl(tmp_path / "many.jsonl", rows[:3] + rows)
    assert load_problems(str(path), limit=4)["answer"].to_list() == ["0", "2", "4", "6"]
    assert load_problems(str(path), n=2).height == 2


def test_a_limit_stops_reading_so_later_rows_are_not_converted_or_checked(tmp_path):
    path = write_jsonl(tmp_path / "long.jsonl", [NATALIA, NATALIA, {"question": "q"}])
    path.write_text(path.read_text() + "this line is not JSON\n")
    loaded = read_problems(str(path), limit=1)
    assert loaded.problems.height == 1 and loaded.duplicates.height == 1
    with pytest.raises(ProblemSourceError, match="line 3: missing column 'answer'"):
        read_problems(str(path), limit=2)


def test_hf_source_reports_offline_hub_in_one_line(monkeypatch, tmp_path):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    with pytest.raises(ProblemSourceError) as error:
        load_problems("hf:openai/gsm8k:main@train")
    message = str(error.value)
    assert message.startswith("could not load hf:openai/gsm8k from the Hugging Face Hub (offline?")
    assert "\n" not in message


def test_hf_source_passes_config_and_split_and_maps_columns(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"problem": "What is 6 * 7?", "solution_text": "42"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    frame = load_problems(
        "hf:org/set:cfg@validation", columns={"question": "problem", "answer": "solution_text"}
    )
    assert calls == [("org/set", "cfg", "validation")]
    assert frame.row(0, named=True)["answer"] == "42"
    assert frame["source"][0] == "hf:org/set" and frame["split"][0] == "validation"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        ('{"question": "q", "answer": "1"}\n{"question": "q2", "answer": \n', {}, r"bad\.jsonl: line 2: malformed JSON"),
        ('{"question": "q", "answer": "1"}\n[1, 2]\n', {}, r"bad\.jsonl: line 2: expected a JSON object"),
        ('{"problem": "q", "answer": "1"}\n', {}, r"bad\.jsonl: line 1: missing column 'question'"),
        ('{"question": "q", "answer": "1"}\n', {"columns": {"answer": "final"}}, r"line 1: missing column 'final' \(mapped to answer\)"),
        ('{"question": "q", "answer": "  "}\n', {}, r"bad\.jsonl: line 1: empty answer"),
        ('{"question": "", "answer": "1"}\n', {}, r"line 1: empty question in column 'question'"),
        ('{"question": "q", "answer": "no marker"}\n', {"format": "gsm8k"}, r"line 1: no '#### <answer>' line"),
        ('{"question": "q", "answer": "x\\n#### "}\n', {}, r"line 1: empty answer after '####'"),
        ('{"question": "q", "answer": "1"}\n', {"columns": {"prompt": "q"}}, r"columns: unknown key\(s\) prompt"),
        ('{"question": "q", "answer": "1"}\n', {"split": "train", "test_fraction": 0.1}, r"either split or test_fraction"),
        ('{"question": "q", "answer": "1"}\n', {"levels": [1]}, r"levels applies only to source 'generated'"),
    ],
)  # fmt: skip
def test_bad_rows_and_options_give_one_line_errors_naming_file_and_row(
    tmp_path, content, options, message
):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ProblemSourceError, match=message) as error:
        load_problems(str(path), **options)
    assert "\n" not in str(error.value)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ProblemSourceError, match=r"missing\.jsonl: no such file"):
        load_problems(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ProblemSourceError, match=r"unknown source 'problems\.csv'"):
        load_problems("problems.csv")
    (tmp_path / "broken.json").write_text('[{"question": "q", "answer": "1"},')
    with pytest.raises(ProblemSourceError, match=r"broken\.json: malformed JSON at line 1"):
        load_problems(str(tmp_path / "broken.json"))
    (tmp_path / "items.json").write_text('[{"question": "q", "answer": "1"}, "oops"]')
    with pytest.raises(ProblemSourceError, match=r"items\.json: item 2: expected a JSON object"):
        load_problems(str(tmp_path / "items.json"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ProblemSourceError, match=r"bad\.parquet: cannot read Parquet"):
        load_problems(str(tmp_path / "bad.parquet"))


# --------------------------------------------------------------------------- generated + splits


def test_generated_source_follows_the_contract_and_is_deterministic():
    frame = load_problems("generated", n=50, seed=3, test_fraction=0.3)
    assert frame.columns == list(COLUMNS) and frame.schema == pl.Schema(
        dict.fromkeys(COLUMNS, pl.String)
    )
    assert frame.height == 50 and frame["problem_id"].n_unique() == 50
    assert frame["problem_id"].to_list() == [problem_id(q) for q in frame["question"]]
    assert frame.equals(load_problems("generated", n=50, seed=3, test_fraction=0.3))
    assert {json.loads(meta)["level"] for meta in frame["meta"]} == {1, 2, 3, 4, 5}
    assert (
        load_problems("generated", n=10, levels=[2])["meta"]
        .map_elements(lambda meta: json.loads(meta)["level"], return_dtype=pl.Int64)
        .to_list()
        == [2] * 10
    )


def test_split_by_hash_is_stable_when_problems_are_added():
    small = load_problems("generated", n=300, seed=0)
    large = load_problems("generated", n=1000, seed=5)  # other problems, plus the small ones
    combined = pl.concat([large, small]).unique("problem_id", keep="first", maintain_order=True)
    before = dict(split_problems(small, 0.2, seed=1).select("problem_id", "split").iter_rows())
    after = dict(split_problems(combined, 0.2, seed=1).select("problem_id", "split").iter_rows())
    assert all(after[pid] == split for pid, split in before.items())
    share = sum(split == "test" for split in after.values()) / len(after)
    assert 0.16 < share < 0.24
    reseeded = dict(split_problems(small, 0.2, seed=2).select("problem_id", "split").iter_rows())
    assert reseeded != before
    with pytest.raises(ProblemSourceError, match="test_fraction"):
        split_problems(small, 1.5)


def test_a_validation_split_comes_only_from_problems_that_were_train():
    problems = load_problems("generated", n=600, seed=0)
    plain = dict(split_problems(problems, 0.2, seed=1).select("problem_id", "split").iter_rows())
    three = dict(
        split_problems(problems, 0.2, seed=1, validation_fraction=0.1)
        .select("problem_id", "split").iter_rows()
    )  # fmt: skip
    # The test split is untouched; validation problems were train problems before.
    assert {pid for pid, s in three.items() if s == "test"} == {
        pid for pid, s in plain.items() if s == "test"
    }
    assert all(plain[pid] == "train" for pid, s in three.items() if s == "validation")
    assert 0.06 < sum(s == "validation" for s in three.values()) / len(three) < 0.14
    with pytest.raises(ProblemSourceError, match="must not exceed 1"):
        read_problems("generated", n=10, test_fraction=0.6, validation_fraction=0.5)


# --------------------------------------------------------------------------- the stage


def test_seeds_stage_writes_problems_and_stats_atomically(tmp_path):
    from stages.seeds import main

    params = tmp_path / "params.yaml"
    params.write_text(
        "seeds:\n  source: generated\n  n: 30\n  seed: 0\n  test_fraction: 0.2\n"
        "  levels: [1, 5]\n  columns: {}\n"
    )
    out = tmp_path / "seeds"
    main(["--params", str(params), "--out", str(out)])
    frame = pl.read_parquet(out / "problems.parquet")
    stats = json.loads((out / "stats.json").read_text())
    assert frame.height == 30 and stats["problems"] == 30
    assert stats["by_level"] == {"1": 15, "5": 15} and stats["duplicates_dropped"] == 0
    assert sum(stats["by_split"].values()) == 30 and stats["by_source"] == {"generated": 30}
    assert sorted(path.name for path in out.iterdir()) == [
        "dropped.parquet",
        "problems.parquet",
        "stats.json",
    ]


def test_seeds_stage_reports_bad_params_and_sources_in_one_line(tmp_path):
    from stages.seeds import main

    params = tmp_path / "params.yaml"
    params.write_text("seeds:\n  source: generated\n  n: 5\n  colour: red\n")
    with pytest.raises(SystemExit, match=r"seeds: params group 'seeds': unknown key\(s\) colour"):
        main(["--params", str(params), "--out", str(tmp_path / "out")])
    params.write_text(f"seeds:\n  source: {tmp_path / 'nothing.jsonl'}\n")
    with pytest.raises(SystemExit, match=r"nothing\.jsonl: no such file"):
        main(["--params", str(params), "--out", str(tmp_path / "out")])
    params.write_text("seeds:\n  source: generated\n  n: 5\n  levels: 3\n")
    with pytest.raises(SystemExit, match=r"^seeds: seeds.levels must be a list or null, got 3"):
        main(["--params", str(params), "--out", str(tmp_path / "out")])
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"question": "What is 1 + 1?", "answer": "2"}])
    params.write_text(f"seeds:\n  source: {pool}\n  columns: [question]\n")
    with pytest.raises(SystemExit, match=r"^seeds: seeds.columns must be a mapping"):
        main(["--params", str(params), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- review: options


def test_n_zero_means_all_rows_of_a_file_as_the_paper_profile_says(tmp_path):
    # profiles/paper.yaml sets `n: 0  # 0: all`; three distinct rows -> three problems.
    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(3)]
    path = write_jsonl(tmp_path / "pool.jsonl", rows)
    assert load_problems(str(path), n=0)["answer"].to_list() == ["1", "2", "3"]
    assert load_problems(str(path), limit=0).height == 3
    # Generating zero problems is never what a user means.
    with pytest.raises(ProblemSourceError, match=r"n must be >= 1 for source 'generated', got 0"):
        load_problems("generated", n=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n": -1}, r"n must be >= 0 \(0 = all\), got -1"),
        ({"limit": -5}, r"limit must be >= 0 \(0 = all\), got -5"),
        ({"n": 2.5}, r"n must be a whole number, got 2\.5"),
        ({"n": "5"}, r"n must be a whole number, got '5'"),
        ({"n": True}, r"n must be a whole number, got True"),
        ({"test_fraction": 1.5}, r"test_fraction must be a number within \[0, 1\], got 1\.5"),
        ({"test_fraction": -0.1}, r"test_fraction must be a number within \[0, 1\], got -0\.1"),
        ({"test_fraction": float("nan")}, r"test_fraction must be .* got nan"),
        ({"test_fraction": "0.2"}, r"test_fraction must be a number within \[0, 1\], got '0\.2'"),
        ({"columns": ["question"]}, r"columns must map question/answer/solution to column names"),
        ({"columns": {"question": 3}}, r"columns: 'question' must name a column, got 3"),
    ],
)  # fmt: skip
def test_bad_option_values_are_one_line_errors_naming_the_option(tmp_path, options, message):
    path = write_jsonl(tmp_path / "ok.jsonl", [{"question": "What is 1 + 1?", "answer": "2"}])
    with pytest.raises(ProblemSourceError, match=message) as error:
        read_problems(str(path), **options)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("levels", [[0], [1, 6], [], 3, ["1"], [True]])
def test_levels_outside_1_to_5_are_refused_naming_the_option(levels):
    with pytest.raises(ProblemSourceError, match=r"levels must be a non-empty list of 1-5, got"):
        read_problems("generated", n=3, levels=levels)
    with pytest.raises(ProblemSourceError, match=r"n must be >= 1 for source 'generated', got -3"):
        read_problems("generated", n=-3)


# --------------------------------------------------------------------------- review: files


def test_a_directory_or_an_empty_file_is_named_as_such(tmp_path):
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(ProblemSourceError, match=r"folder\.jsonl: is a directory, not a file"):
        load_problems(str(tmp_path / "folder.jsonl"))
    for name in ("empty.jsonl", "empty.json", "empty.parquet"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(ProblemSourceError, match=rf"{name}: empty file"):
            load_problems(str(tmp_path / name))
    # Files with no rows in them: blank lines, an empty JSON list, a Parquet without rows.
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    (tmp_path / "nothing.json").write_text("[]")
    pl.DataFrame(schema={"question": pl.String, "answer": pl.String}).write_parquet(
        tmp_path / "norows.parquet"
    )
    for name in ("blank.jsonl", "nothing.json", "norows.parquet"):
        with pytest.raises(ProblemSourceError, match=rf"{name}: no problems in the source"):
            load_problems(str(tmp_path / name))


def test_a_byte_order_mark_is_skipped_and_other_encodings_are_named(tmp_path):
    row = '{"question": "What is 1 + 1?", "answer": "2"}'
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + row.encode() + b"\n")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf[" + row.encode() + b"]")
    for name in ("bom.jsonl", "bom.json"):
        frame = load_problems(str(tmp_path / name))
        assert frame["problem_id"].to_list() == [problem_id("What is 1 + 1?")]
    # Latin-1 "é" (byte 0xe9) on line 2: the error names the file and the line.
    latin = row + "\n" + '{"question": "Caf\xe9 bill?", "answer": "3"}\n'
    (tmp_path / "latin.jsonl").write_bytes(latin.encode("latin-1"))
    with pytest.raises(ProblemSourceError, match=r"latin\.jsonl: line 2: not UTF-8 text"):
        load_problems(str(tmp_path / "latin.jsonl"))
    (tmp_path / "latin.json").write_bytes(
        ("[" + row + ",\n" + row.replace("1 + 1", "\xe9") + "]").encode("latin-1")
    )
    with pytest.raises(ProblemSourceError, match=r"latin\.json: line 2: not UTF-8 text"):
        load_problems(str(tmp_path / "latin.json"))
    (tmp_path / "wide.jsonl").write_bytes((row + "\n").encode("utf-16"))
    with pytest.raises(
        ProblemSourceError, match=r"wide\.jsonl: UTF-16 text; save the file as UTF-8"
    ):
        load_problems(str(tmp_path / "wide.jsonl"))


def test_crlf_files_and_crlf_inside_texts_give_the_same_problems_as_lf(tmp_path):
    rows = [{"question": "Line one.\r\nWhat is 2 + 2?", "answer": "4\r\n"}]
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(write_jsonl(tmp_path / "x.jsonl", rows).read_bytes().replace(b"\n", b"\r\n"))
    lf = write_jsonl(
        tmp_path / "lf.jsonl", [{"question": "Line one.\nWhat is 2 + 2?", "answer": "4"}]
    )
    got, want = (
        load_problems(str(crlf)).row(0, named=True),
        load_problems(str(lf)).row(0, named=True),
    )
    assert got["question"] == "Line one.\nWhat is 2 + 2?" and got["answer"] == "4"
    assert got["problem_id"] == want["problem_id"]


def test_a_lone_surrogate_is_a_row_error_not_a_crash(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text('{"question": "What is \\ud800 + 1?", "answer": "2"}\n')
    with pytest.raises(
        ProblemSourceError, match=r"odd\.jsonl: line 1: question is not valid Unicode"
    ):
        load_problems(str(path))


def test_a_pretty_printed_json_object_is_read_as_one_record(tmp_path):
    path = tmp_path / "one.json"
    path.write_text('{\n  "data": [1, 2]\n}\n')
    with pytest.raises(
        ProblemSourceError, match=r"one\.json: item 1: missing column 'question'; columns are data"
    ):
        load_problems(str(path))


# --------------------------------------------------------------------------- review: answers


@pytest.mark.parametrize(
    ("answer", "stored"),
    [
        (3, "3"),
        (2.0, "2"),  # a float column's whole number reads as the integer
        ([1.5, 2], "1.5, 2"),  # a list of answers, floats included, is a set
        ("\tfrac{1}{2}", "\\tfrac{1}{2}"),  # JSON read "\t" of "\tfrac" as a TAB: put it back
        ("\x0crac{3}{4}", "\\frac{3}{4}"),  # "\f" of "\frac" read as a form feed
        (["\\left(\tfrac32, 1\\right)", "(0, 0)"], "\\left(\\tfrac32, 1\\right), (0, 0)"),
        ("4 \x08eta", "4 \\beta"),
    ],
)
def test_non_string_answers_and_lost_backslashes_are_stored_as_text(tmp_path, answer, stored):
    path = tmp_path / "answers.json"
    path.write_text(json.dumps([{"question": "A\tquestion keeps\ttabs?", "answer": answer}]))
    row = load_problems(str(path)).row(0, named=True)
    assert row["answer"] == stored
    # Tabs in questions are real (MATH has "have\tequal\tperimeters"): left alone.
    assert row["question"] == "A\tquestion keeps\ttabs?"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (float("nan"), r"line 1: answer must be a finite number, got nan"),
        (float("inf"), r"line 1: answer must be a finite number, got inf"),
        ([], r"line 1: empty answer"),
        ([1, None], r"line 1: answer must be text or a number, got None"),
        ([[1]], r"line 1: answer must be text or a number, got \[1\]"),
    ],
)
def test_answers_that_are_not_a_value_are_row_errors(tmp_path, answer, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q?", "answer": answer}) + "\n")  # NaN is allowed
    with pytest.raises(ProblemSourceError, match=message):
        load_problems(str(path))


def test_parquet_decimal_and_float32_answers_read_as_written(tmp_path):
    from decimal import Decimal

    path = tmp_path / "typed.parquet"
    pl.DataFrame(
        {"question": ["a?", "b?"], "answer": [0.1, 2.5], "price": [Decimal("1.50"), Decimal("2")]},
        schema={"question": pl.String, "answer": pl.Float32, "price": pl.Decimal(10, 2)},
    ).write_parquet(path)
    # float32 0.1 is 0.10000000149011612 as a Python float; the file says 0.1.
    assert load_problems(str(path))["answer"].to_list() == ["0.1", "2.5"]
    assert load_problems(str(path), columns={"answer": "price"})["answer"].to_list() == ["1.5", "2"]
    wrong = tmp_path / "ints.parquet"
    pl.DataFrame({"question": [1, 2], "answer": ["1", "2"]}).write_parquet(wrong)
    with pytest.raises(
        ProblemSourceError,
        match=r"ints\.parquet: row 1: question in column 'question' must be text, got int",
    ):
        load_problems(str(wrong))


def test_meta_stays_strict_json_with_nan_or_a_lone_surrogate_in_extra_columns(tmp_path):
    # NaN is not JSON (DuckDB's json functions refuse it) and a lone surrogate cannot be
    # written to Parquet: they become null and an escape, instead of failing the load.
    path = tmp_path / "extra.jsonl"
    path.write_text('{"question": "q?", "answer": "1", "score": NaN, "note": "\\ud800"}\n')
    frame = load_problems(str(path))
    frame.write_parquet(tmp_path / "out.parquet")

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    meta = json.loads(frame["meta"][0], parse_constant=refuse)
    assert meta == {"file": "extra.jsonl", "note": "\ud800", "row": 1, "score": None}


@needs(MATH_TEST)
def test_math_test_answer_with_a_tab_for_a_backslash_is_repaired():
    # MATH_test.json item 2913 holds "\\left(\tfrac32, ..." : JSON turned "\t" into a TAB.
    math = load_problems(str(MATH_TEST))
    answers = {
        json.loads(meta)["row"]: answer for meta, answer in math.select("meta", "answer").rows()
    }
    assert answers[2913].startswith("\\left(\\tfrac32, -\\tfrac52\\right), ")
    assert not math["answer"].str.contains("[\t\x08\x0c]").any()


# --------------------------------------------------------------------------- review: hub, stage


def test_hf_source_without_the_datasets_package_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(ProblemSourceError, match=r"hf:org/set needs the `datasets` package"):
        load_problems("hf:org/set")


def test_seeds_stage_loads_a_whole_file_with_n_zero_and_keeps_duplicates_to_look_at(tmp_path):
    from stages.seeds import main

    rows = [{"question": f"What is {i} * 2?", "answer": str(2 * i)} for i in range(4)]
    source = write_jsonl(tmp_path / "pool.jsonl", rows + rows[:1])  # the first one twice
    params = tmp_path / "params.yaml"
    params.write_text(f"seeds:\n  source: {source}\n  n: 0\n  test_fraction: 0.5\n")
    out = tmp_path / "seeds"
    main(["--params", str(params), "--out", str(out)])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["problems"] == 4 and stats["duplicates_dropped"] == 1
    assert pl.read_parquet(out / "dropped.parquet")["question"].to_list() == ["What is 0 * 2?"]


def test_seeds_stage_writes_nothing_for_an_undecodable_file(tmp_path):
    from stages.seeds import main

    source = tmp_path / "pool.jsonl"
    source.write_bytes(b'{"question": "Caf\xe9?", "answer": "1"}\n')
    params = tmp_path / "params.yaml"
    params.write_text(f"seeds:\n  source: {source}\n")
    with pytest.raises(SystemExit, match=r"seeds: .*pool\.jsonl: line 1: not UTF-8 text"):
        main(["--params", str(params), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- review: GSM8K


@pytest.mark.parametrize(
    "worked",
    [
        "It is <<1e400=1e400>>1e400 things.\n#### 5",  # a constant beyond floats
        "It is <<1e308*10=1e309>>1e309 things.\n#### 5",  # a result beyond floats
        "It is <<" + "1+" * 900 + "1=901>>901 things.\n#### 901",  # deeper than Python recurses
        "It is <<" + "-" * 400 + "1=1>>1 thing.\n#### 1",
        "It is " + "1+" * 3000 + "1 = 3001 things.\n#### 3001",
    ],
)
def test_gsm8k_conversion_refuses_absurd_calculations_instead_of_crashing(worked):
    # Each used to raise (OverflowError, RecursionError) and end the load with a traceback.
    # Now the calculation is unusable: an annotated one keeps its written result literally
    # (as for any unparsable annotation), a prose one is skipped.
    conversion = convert_worked_solution("A question.", worked)
    answer = worked.rsplit("#### ", 1)[1]
    assert conversion.answer == answer
    if conversion.solution is None:
        assert conversion.reason
    else:
        assert printed_output(conversion.solution) == answer
