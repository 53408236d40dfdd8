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
console = Console()


@app.command()
def doctor() -> None:
    """Show which sandbox isolation layers this machine offers and which are active."""
    from pipeline.sandbox import isolation_report

    report = isolation_report()
    table = Table("layer", "status")
    for layer, status in report.items() if isinstance(report, dict) else vars(report).items():
        table.add_row(layer, str(status))
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
    """Check a table against its contract (DESIGN.md section 3); non-zero exit when it breaks it."""
    from pipeline.checks import run_validate_cli

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
        "seeds", help="`seeds` (test split of data/seeds) or any problem source"
    ),
    limit: int = typer.Option(50, help="evaluate at most this many problems (0 = all)"),
    samples: int = typer.Option(8, help="N of pass@N and best-of-N"),
    params: Path = typer.Option(
        Path("params.yaml"), help="params file for the mcts, engine and sandbox groups"
    ),
    output: Path = typer.Option(None, help="write the metrics JSON here"),
) -> None:
    """Evaluate a policy (and PPM) on held-out problems: greedy, pass@N, best-of-N, PPM-guided MCTS."""
    import json

    from pipeline.config import SandboxConfig, group, load_params
    from pipeline.engines import make_engine
    from pipeline.evaluate import EvalConfig, evaluate, held_out_problems
    from pipeline.io import write_json
    from pipeline.mcts import MCTSConfig
    from pipeline.sandbox import Sandbox

    settings = load_params(params)
    config = group(
        settings, "evaluate", EvalConfig, source=problems, problems=limit, samples=samples
    )
    search = group(settings, "mcts", MCTSConfig)
    engine_options = dict(settings.get("engine") or {})
    engine = make_engine(engine_options.pop("kind", "transformers"), str(policy), **engine_options)
    scorer = None
    if ppm is not None:
        from pipeline.ppm import PPM

        scorer = PPM.load(ppm)
    problem_list, levels = held_out_problems(config)
    with Sandbox(**vars(group(settings, "sandbox", SandboxConfig))) as sandbox:
        metrics = evaluate(
            engine, sandbox, problem_list, search, config, scorer=scorer, levels=levels
        )
    engine.close()
    if output is not None:
        write_json(output, metrics)
    console.print_json(json.dumps(metrics))


if __name__ == "__main__":
    app()
