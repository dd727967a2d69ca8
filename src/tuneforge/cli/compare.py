from __future__ import annotations

import typer

from tuneforge.cli.app import app


@app.command()
def compare(
    config: str = typer.Argument(..., help="Base YAML config: model, data, task and budget."),
    overrides: list[str] | None = typer.Argument(
        None, help="key=value overrides for every run; method.KEY=V applies to methods that have KEY."
    ),
    methods: str = typer.Option(
        "full,lora", "--methods", help="Comma-separated methods, e.g. full,freeze,lora,qlora,adapter,prefix,prompt."
    ),
    seeds: str | None = typer.Option(
        None, "--seeds", help="Comma-separated seeds, e.g. 1,2,3 (default: the config's seed, once)."
    ),
    max_steps: int | None = typer.Option(None, "--max-steps", help="train.max_steps for every run."),
    out: str | None = typer.Option(
        None, "--out", "-o", help="Comparison directory (default runs/compare-<config>-<time>)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Skip runs already completed; redo the others."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo every run even if it exists."),
    method_configs: str | None = typer.Option(
        None, "--method-configs", help="Directory of <method>-<task>.yaml files (default configs/methods)."
    ),
    keep_learning_rate: bool = typer.Option(
        False,
        "--keep-learning-rate",
        help="Train every method at the config's train.learning_rate instead of each method's own.",
    ),
    vary: str | None = typer.Option(
        None,
        "--vary",
        help="Also compare the values of one config key, e.g. task.loss=dpo,orpo,simpo,kto (each with every method).",
    ),
    in_process: bool = typer.Option(
        False,
        "--in-process",
        help="Train in this process instead of one process per run (faster start; peak memory then accumulates).",
    ),
):
    """Train the same task, data and budget with several methods (or values of one key, --vary) and write a
    measured comparison (compare.json, report.md, report.html)."""
    from tuneforge.compare import compare as run_compare

    def echo(line: str) -> None:
        typer.echo(line, err=True)

    run_compare(
        config,
        methods,
        seeds,
        max_steps,
        out,
        overrides or [],
        resume=resume,
        overwrite=overwrite,
        method_configs=method_configs,
        keep_learning_rate=keep_learning_rate,
        isolate=not in_process,
        echo=echo,
        vary=vary,
    )
