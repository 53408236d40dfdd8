"""The build's report: one DVC metrics file per figure, keyed by round (stages/report.py)."""

from __future__ import annotations

import json

from stages import report

WARM_START = {"round": 0, "accuracy": {"greedy": 0.205}, "ci95_low": {"greedy": 0.1521},
              "ci95_high": {"greedy": 0.2663}, "seconds": 156.0}  # fmt: skip
ROUND_4 = {
    "round": 4, "solved": 80, "solved_new": 3, "solved_total": 83, "sft_rows": 109, "pairs": 12,
    "problems": 192, "eval_problems": 112, "seconds": 504.0,
    "accuracy": {"greedy": 0.3482, "maj_at_4": 0.3571, "sampled_pass_at_1": 0.3147},
    "ci95_low": {"greedy": 0.2655, "maj_at_4": 0.2738},
    "ci95_high": {"greedy": 0.4401, "maj_at_4": 0.4493},
}  # fmt: skip


def test_each_figure_is_keyed_by_round_with_its_interval_as_text():
    tables = report.report_tables([WARM_START, ROUND_4])
    assert tables["greedy"] == {"r0": 0.205, "r4": 0.3482}
    assert tables["greedy_ci95"] == {"r0": "[0.15, 0.27]", "r4": "[0.27, 0.44]"}
    assert tables["maj_at_4"] == {"r4": 0.3571}  # only the rounds that measured it
    assert tables["minutes"] == {"r0": 2.6, "r4": 8.4}
    assert tables["solved_total"] == {"r4": 83} and tables["pairs"] == {"r4": 12}
    # No interval for a figure the summary gives none for; no figure that is not compared.
    assert "sampled_pass_at_1_ci95" not in tables
    assert not {"problems", "eval_problems", "round"} & set(tables)


def test_the_stage_writes_one_file_per_figure_and_drops_stale_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = tmp_path / "data" / "metrics"
    metrics.mkdir(parents=True)
    for summary in (WARM_START, ROUND_4):
        (metrics / f"r{summary['round']}.json").write_text(json.dumps(summary))
    stale = tmp_path / "data" / "report" / "ppm_mcts.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    monkeypatch.setattr("sys.argv", ["report"])
    report.main()
    assert not stale.exists()
    written = json.loads((tmp_path / "data/report/greedy.json").read_text())
    assert list(written) == ["r0", "r4"]  # round order: the column order of `dvc metrics show`
