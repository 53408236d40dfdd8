"""`rstar results`: the per-round table the README's results come from."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.evaluation.results import read_metrics, results_table

WARM_START = {"round": 0, "enabled": True, "eval_problems": 200, "seconds": 600.0,
              "accuracy": {"greedy": 0.1}, "ci95_low": {"greedy": 0.066},
              "ci95_high": {"greedy": 0.149}}  # fmt: skip
ROUND_2 = {"round": 2, "problems": 48, "solved": 12, "solved_new": 3, "solved_total": 15,
           "sft_rows": 24, "pairs": 7, "eval_problems": 200, "seconds": 90.0,
           "accuracy": {"greedy": 0.2, "maj_at_4": 0.25},
           "ci95_low": {"greedy": 0.15, "maj_at_4": 0.196},
           "ci95_high": {"greedy": 0.261, "maj_at_4": 0.313}}  # fmt: skip


def write(folder, name, metrics):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(metrics))


def test_one_row_per_round_in_round_order_with_intervals(tmp_path):
    write(tmp_path, "r10.json", {**ROUND_2, "round": 10})
    write(tmp_path, "r2.json", ROUND_2)
    write(tmp_path, "r0.json", WARM_START)
    lines = results_table(read_metrics(tmp_path)).splitlines()
    assert lines[0] == (
        "| round | solved (new / total) | SFT rows | pairs | eval problems | greedy | maj_at_4 "
        "| minutes |"
    )
    # r10 after r2 (numeric order); a method a round did not run is an empty cell, not 0.
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 0", "| 2", "| 10"]
    assert lines[2] == "| 0 | warm start |  |  | 200 | 0.100 [0.07, 0.15] |  | 10.0 |"
    assert lines[3] == (
        "| 2 | 12 of 48 (3 / 15) | 24 | 7 | 200 | 0.200 [0.15, 0.26] | 0.250 [0.20, 0.31] | 1.5 |"
    )


def test_results_without_metrics_or_with_a_broken_file_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["results", "--metrics", str(tmp_path)])
    assert result.exit_code == 2 and "no rN.json" in result.output
    (tmp_path / "r1.json").write_text("{not json")
    result = CliRunner().invoke(app, ["results", "--metrics", str(tmp_path)])
    assert result.exit_code == 2 and "r1.json: not a metrics JSON file" in result.output
    assert "Traceback" not in result.output
