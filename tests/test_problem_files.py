"""Problem files a user hands to `seeds.source`, `evaluate.source` or `rstar eval --problems`:
real sets read right, and broken ones fail in one line that names the file and row."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline import layout
from pipeline.cli import app
from pipeline.config import EvalConfig
from pipeline.evaluation.evaluate import held_out_problems
from pipeline.problems import load_problems
from pipeline.problems.sources import ProblemSourceError, read_problems

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GSM8K_TRAIN = DATA / "gsm8k" / "train.jsonl"
MATH_TEST, MATH500 = DATA / "math" / "MATH_test.json", DATA / "math" / "math500_test.json"


def needs(*paths: Path) -> pytest.MarkDecorator:
    missing = [str(path) for path in paths if not path.exists()]
    return pytest.mark.skipif(bool(missing), reason=f"shared data not present: {missing}")


def one_line_error(path: Path, **options) -> str:
    with pytest.raises(ProblemSourceError) as error:
        load_problems(str(path), **options)
    message = str(error.value)
    assert "\n" not in message and path.name in message
    return message


# --------------------------------------------------------------------------- broken files


@pytest.mark.parametrize("name", ["deep.jsonl", "deep.json"])
def test_json_nested_too_deeply_is_a_one_line_error(tmp_path, name):
    path = tmp_path / name
    nested = "[" * 200_000 + "]" * 200_000
    path.write_text('{"question": "q?", "answer": "1", "extra": ' + nested + "}\n")
    assert "nested too deeply" in one_line_error(path)


def test_an_integer_beyond_pythons_digit_limit_is_a_row_error(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text(
        '{"question": "a?", "answer": "1"}\n{"question": "b?", "answer": 9' + "9" * 5000 + "}\n"
    )
    assert "long.jsonl: line 2: unreadable JSON" in one_line_error(path)


def test_a_json_list_saved_as_jsonl_is_named_as_such(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text(
        '[\n  {"question": "q?", "answer": "1"},\n  {"question": "r?", "answer": "2"}\n]\n'
    )
    assert "list.jsonl: line 1: a JSON list, not JSON lines" in one_line_error(path)


def test_a_gsm8k_row_after_a_plain_first_row_is_refused_not_kept_whole(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"question": "What is 2 + 2?", "answer": 4},
        {"question": "What is 3 + 3?", "answer": "3 + 3 = <<3+3=6>>6\n#### 6"},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert "mixed.jsonl: line 2: answer is a GSM8K worked solution" in one_line_error(path)
    # Asked for by name, plain answers are kept as they are.
    assert load_problems(str(path), format="plain")["answer"][1].endswith("#### 6")


# --------------------------------------------------------------------------- answers


def test_a_math_solution_mapped_to_answer_gives_its_boxed_answer_and_level_in_meta(tmp_path):
    path = tmp_path / "math_train.json"
    rows = [
        {
            "problem": "Compute $\\frac{2}{4}$.",
            "solution": "Dividing, $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$.",
            "level": "Level 2",
            "type": "Prealgebra",
        },
        {"problem": "What is $3^2$?", "solution": "$3^2 = \\boxed{9}$", "level": "Level 1"},
    ]
    path.write_text(json.dumps(rows))
    frame = load_problems(str(path), columns={"question": "problem", "answer": "solution"})
    assert frame["answer"].to_list() == ["\\frac{1}{2}", "9"]
    meta = json.loads(frame["meta"][0])
    assert (meta["level"], meta["type"]) == ("Level 2", "Prealgebra")
    broken = tmp_path / "cut.json"
    broken.write_text(json.dumps([{"problem": "q?", "solution": "so \\boxed{\\frac{1}{2}"}]))
    message = one_line_error(broken, columns={"question": "problem", "answer": "solution"})
    assert "cut.json: item 1: answer has a \\boxed{} with no readable answer" in message


def test_a_large_float_answer_is_stored_as_written_not_as_its_binary_value(tmp_path):
    path = tmp_path / "floats.jsonl"
    path.write_text('{"question": "Avogadro-ish?", "answer": 1e23}\n')
    assert load_problems(str(path))["answer"].to_list() == ["1" + "0" * 23]


# --------------------------------------------------------------------------- evaluation


def test_held_out_seeds_that_are_missing_or_empty_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "PROBLEMS", tmp_path / "problems.parquet")
    with pytest.raises(ProblemSourceError, match=r"problems\.parquet: no such file"):
        held_out_problems(EvalConfig())
    frame = load_problems("generated", n=5, split="train")
    frame.write_parquet(tmp_path / "problems.parquet")
    with pytest.raises(ProblemSourceError, match=r"no problems in split 'validation'"):
        held_out_problems(EvalConfig(split="validation"))


def test_eval_output_that_is_a_folder_fails_before_evaluating(tmp_path, monkeypatch):
    import pipeline.evaluation.sharded as sharded

    calls = []
    monkeypatch.setattr(sharded, "run_evaluation", lambda *args, **kwargs: calls.append(args))
    params = tmp_path / "params.yaml"
    params.write_text("evaluate: {}\n")
    arguments = ["eval", "--policy", str(tmp_path), "--params", str(params), "--output"]
    result = CliRunner().invoke(app, [*arguments, str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output and not calls


def test_eval_with_a_missing_params_file_or_policy_is_one_line(tmp_path):
    problems = tmp_path / "held_out.jsonl"
    problems.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n')
    missing = ["eval", "--policy", str(tmp_path), "--params", str(tmp_path / "nope.yaml")]
    result = CliRunner().invoke(app, missing)
    assert result.exit_code == 2 and "nope.yaml: no such params file" in result.output
    params = tmp_path / "params.yaml"
    params.write_text("evaluate: {mcts_rollouts: 0}\nengine: {kind: transformers}\n")
    no_model = ["eval", "--policy", str(tmp_path / "no-model"), "--params", str(params)]
    result = CliRunner().invoke(app, [*no_model, "--problems", str(problems), "--samples", "0"])
    assert result.exit_code == 2, result.output
    assert "no-model" in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------- real sets


@needs(MATH500, MATH_TEST)
def test_math500_as_evaluate_source_gives_every_problem_with_its_answer_field():
    raw = json.loads(MATH500.read_text())
    problems, levels = held_out_problems(EvalConfig(source=str(MATH500), problems=0))
    assert len(problems) == len(raw) == 500 and set(levels.values()) == {"all"}
    by_question = {" ".join(row["question"].split()): row["answer"].strip() for row in raw}
    assert all(by_question[" ".join(p.question.split())] == p.answer for p in problems)
    # MATH500 is a subset of MATH_test, with the same ids and answers.
    full = load_problems(str(MATH_TEST))
    answers = dict(zip(full["problem_id"], full["answer"], strict=True))
    assert all(answers[p.problem_id] == p.answer for p in problems)


@needs(GSM8K_TRAIN)
def test_gsm8k_ids_do_not_depend_on_file_order_and_comma_answers_lose_commas(tmp_path):
    lines = GSM8K_TRAIN.read_text().splitlines()[:400]
    forward, backward = tmp_path / "forward.jsonl", tmp_path / "backward.jsonl"
    forward.write_text("\n".join(lines) + "\n")
    backward.write_text("\n".join(reversed(lines)) + "\n")
    a, b = read_problems(str(forward)), read_problems(str(backward))
    assert a.duplicates.is_empty() and a.problems.height == 400
    pairs = dict(zip(a.problems["problem_id"], a.problems["answer"], strict=True))
    assert pairs == dict(zip(b.problems["problem_id"], b.problems["answer"], strict=True))
    with_commas = [json.loads(line) for line in lines if "," in line.rsplit("####", 1)[1]]
    assert with_commas  # the first 400 hold several, e.g. "#### 1,080"
    for row in with_commas:
        written = row["answer"].rsplit("####", 1)[1].strip()
        stored = a.problems.filter(pl.col("question") == row["question"].strip())["answer"][0]
        assert stored == written.replace(",", "")
