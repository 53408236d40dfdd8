"""The `rstar` command: small wrappers over the library for people and DVC stages."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="rstar-data: build rStar-Math self-evolution data (MCTS rollouts, SFT sets, PPM pairs).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(soft_wrap=True)  # an error stays one line, however long its path


@app.command()
def doctor() -> None:
    """Show which sandbox isolation layers this machine offers and which are active."""
    from pipeline.execution.sandbox import isolation_report

    report = isolation_report()
    table = Table("layer", "status")
    for layer, status in report.items():
        shown = {True: "active", False: "[red]inactive[/red]"}.get(status, str(status))
        table.add_row(layer, shown)
    console.print(table)


@app.command()
def profile(
    name: str = typer.Argument(None, help="Profile to activate (smoke, default, paper)."),
    repo: Path = typer.Option(Path("."), help="Repository root."),
) -> None:
    """Switch the active parameter profile (copies profiles/NAME.yaml to params.yaml).

    Without NAME, print the active profile and the available ones.
    """
    from pipeline.profiles import ProfileError, active_profile, available_profiles, switch_profile

    if name is None:
        console.print(
            f"active: {active_profile(repo)}; available: {', '.join(available_profiles(repo))}"
        )
        return
    try:
        switch_profile(repo, name)
    except ProfileError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    console.print(
        f"params.yaml now holds the {name!r} profile; run `dvc repro` to rebuild what changed"
    )


@app.command()
def validate(
    table: str = typer.Argument(..., help="problems, nodes, trajectories, sft or pairs"),
    path: Path = typer.Argument(..., help="Parquet file of that table"),
    problems: Path = typer.Option(
        None, help="problems.parquet: check that every problem id is known"
    ),
    min_margin: float = typer.Option(0.5, help="pairs: the smallest margin allowed"),
    report: Path = typer.Option(None, help="also write the full JSON report here"),
) -> None:
    """Check a table against its contract (docs/data-contracts.md); non-zero exit when it breaks it."""
    from pipeline.rules.checks import run_validate_cli

    raise typer.Exit(
        run_validate_cli(
            table, path, problems_path=problems, min_margin=min_margin, report_path=report
        )
    )


@app.command("eval")
def evaluate_models(
    policy: Path = typer.Option(..., help="policy model folder (Hugging Face format)"),
    ppm: Path = typer.Option(None, help="PPM folder; enables best-of-N and PPM-guided MCTS"),
    problems: str = typer.Option(
        "seeds", help="`seeds` (a split of data/seeds/problems.parquet) or any problem source"
    ),
    split: str = typer.Option(
        None,
        help="with `seeds`: test (to report) or validation (to tune on); default: the "
        "params file's evaluate.split",
    ),
    limit: int = typer.Option(50, help="evaluate at most this many problems (0 = all)"),
    samples: int = typer.Option(8, help="N of pass@N, maj@N and best-of-N (0: none of them)"),
    params: Path = typer.Option(
        Path("params.yaml"), help="params file for the mcts, engine and sandbox groups"
    ),
    output: Path = typer.Option(None, help="write the metrics JSON here"),
) -> None:
    """Evaluate a policy (and PPM) on held-out problems: greedy, pass@N, best-of-N, PPM-guided MCTS."""
    import json

    from pipeline.config import EvalConfig, ParamsError, group, load_params
    from pipeline.evaluation.sharded import run_evaluation
    from pipeline.executors import ExecutorError
    from pipeline.io import write_json
    from pipeline.memory import keep_freed_memory
    from pipeline.problems.sources import ProblemSourceError

    keep_freed_memory()  # as every stage does (pipeline/memory.py)
    if output is not None and output.is_dir():  # found before the evaluation, not after it
        console.print(f"[red]error:[/red] --output {output} is a folder; give a file name")
        raise typer.Exit(2)
    chosen = {"source": problems, "problems": limit, "samples": samples}
    if split is not None:
        chosen["split"] = split
    try:  # a bad value, problem file or cluster fails in one line, before any model loads
        settings = load_params(params)
        config = group(settings, "evaluate", EvalConfig, **chosen)
        metrics = run_evaluation(settings, config, policy, ppm)
    except (ParamsError, ProblemSourceError, ExecutorError, FileNotFoundError) as error:
        # FileNotFoundError: a --policy or --ppm folder that is not there (executors.Worker)
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    if output is not None:
        write_json(output, metrics)
    console.print_json(json.dumps(metrics))


@app.command()
def results(
    metrics: Path = typer.Option(Path("data/metrics"), help="folder of the rounds' metrics files"),
    evaluations: Path = typer.Option(Path("data/eval"), help="folder of the rounds' evaluations"),
) -> None:
    """Print the build's results as Markdown tables: one row per round (0 is the warm start),
    with problems solved, SFT rows, pairs and every accuracy with its 95% interval; then results
    compared on the same problems (each round's greedy with the one before and the last; the last
    round's PPM methods with greedy and maj@N): gained, lost, exact McNemar p."""
    from pipeline.evaluation.results import (
        paired_table,
        read_evaluations,
        read_metrics,
        results_table,
    )  # fmt: skip

    try:
        rows = read_metrics(metrics)
        paired = paired_table(read_evaluations(evaluations))
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    if not rows:
        console.print(f"[red]error:[/red] no rN.json in {metrics} (run `make repro` first)")
        raise typer.Exit(2)
    print(results_table(rows))
    if paired:
        print("\n" + paired)


@app.command("diff")
def diff_command(
    rev_a: str = typer.Argument("HEAD~1", help="The older revision (default: HEAD~1)."),
    rev_b: str = typer.Argument(None, help="The newer revision (default: the work tree)."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON, for scripts."),
    markdown: bool = typer.Option(
        False, "--markdown", help="Print Markdown tables (a PR comment)."
    ),
    repo: Path = typer.Option(Path("."), help="Repository root."),
) -> None:
    """Compare the data of two revisions: rows added/removed/changed, solved problems, accuracy, params."""
    from pipeline.release.diff import run_diff_cli

    if json_output and markdown:
        typer.echo("error: choose one of --json and --markdown", err=True)
        raise typer.Exit(2)
    fmt = "json" if json_output else "markdown" if markdown else "text"
    code, output = run_diff_cli(repo, rev_a, rev_b, fmt)
    typer.echo(output, err=code != 0)
    raise typer.Exit(code)


@app.command()
def publish(
    rounds: str = typer.Option(
        None, help="Comma-separated rounds, e.g. r1,r2 (default: all in params.yaml)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Build the dataset folder only; push nothing."
    ),
    out: Path = typer.Option(
        None, help="Folder to build (default: data/publish with --dry-run, else a temp folder)."
    ),
    repo_id: str = typer.Option(
        None, help="Hub dataset id, e.g. USER/rstar-math-data (required to push)."
    ),
    private: bool = typer.Option(False, "--private", help="Create the Hub dataset as private."),
    revision: str = typer.Option(None, help="Hub branch to push to (created when missing)."),
    repo: Path = typer.Option(Path("."), help="Repository root."),
) -> None:
    """Validate the tables, build a Hugging Face dataset folder and push it (unless --dry-run)."""
    from pipeline.release.publish import parse_rounds, run_publish_cli

    code, message = run_publish_cli(
        repo,
        rounds=parse_rounds(rounds),
        out=out,
        dry_run=dry_run,
        repo_id=repo_id,
        private=private,
        revision=revision,
    )
    typer.echo(message, err=code != 0)
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
