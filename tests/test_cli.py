"""The `rstar` command line: a user's mistake is one line on the console and exit code 2."""

from __future__ import annotations

from typer.testing import CliRunner

from pipeline.cli import app


def test_eval_of_a_broken_problem_file_fails_before_loading_any_model(tmp_path):
    problems = tmp_path / "held_out.jsonl"
    problems.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n{"question": \n')
    result = CliRunner().invoke(
        app, ["eval", "--policy", str(tmp_path / "no-model"), "--problems", str(problems)]
    )
    assert result.exit_code == 2, result.output
    assert "held_out.jsonl: line 2" in result.output and "Traceback" not in result.output


def test_unknown_profile_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["profile", "no-such-profile"])
    assert result.exit_code == 2 and "no-such-profile" in result.output


def test_eval_split_option_reaches_the_evaluation(tmp_path, monkeypatch):
    import pipeline.evaluation.sharded as sharded

    seen = {}

    def record(params, config, policy, ppm=None, label="evaluate"):
        seen["split"] = config.split
        return {"accuracy": {}}

    monkeypatch.setattr(sharded, "run_evaluation", record)
    params = tmp_path / "params.yaml"
    params.write_text("evaluate: {split: test}\n")
    arguments = ["eval", "--policy", str(tmp_path), "--params", str(params), "--samples", "0"]
    assert CliRunner().invoke(app, arguments).exit_code == 0
    assert seen["split"] == "test"  # the params file's split by default
    result = CliRunner().invoke(app, [*arguments, "--split", "validation"])
    assert result.exit_code == 0, result.output
    assert seen["split"] == "validation"


def test_eval_with_an_unknown_split_is_a_one_line_error(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("evaluate: {}\n")
    result = CliRunner().invoke(
        app, ["eval", "--policy", str(tmp_path), "--params", str(params), "--split", "holdout"]
    )
    assert result.exit_code == 2 and "evaluate.split" in result.output
    assert "Traceback" not in result.output
