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
