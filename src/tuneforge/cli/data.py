"""`tuneforge data inspect|prepare`: look at the data, and write it out cleaned and augmented."""

from __future__ import annotations

import typer

from tuneforge.cli.app import app

data_app = typer.Typer(
    name="data",
    no_args_is_help=True,
    help="Inspect data and write it out prepared.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_app, name="data")


@data_app.command("inspect")
def inspect(
    source: str = typer.Argument(..., help="A YAML run config, a data file, or builtin:<name>."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. data.text_column=review"),
    out: str | None = typer.Option(None, "--out", "-o", help="Report directory (default data-report-<name>)."),
):
    """Report class balance, token lengths, duplicates, suspected label errors and languages (report.md + PNGs)."""
    from tuneforge.cleaning.workflows import inspect_data

    notes: list[str] = []
    path = inspect_data(source, overrides or [], out, notes=notes)
    for line in notes:  # columns guessed for a file without text/label columns
        typer.echo(f"tuneforge: {line}")
    typer.echo(f"tuneforge: data report written to {path}")


@data_app.command("prepare")
def prepare(
    config: str = typer.Argument(..., help="A YAML run config (or a data file)."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides"),
    out: str = typer.Option(..., "--out", "-o", help="Output directory for train/validation/test files."),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl, parquet or both."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output directory."),
):
    """Write the split, cleaned and augmented data as files (plus report.md and manifest.json)."""
    from tuneforge.cleaning.workflows import prepare_data

    m = prepare_data(config, out, overrides or [], fmt, overwrite)
    typer.echo(f"tuneforge: wrote {', '.join(f'{k} {v} rows' for k, v in m['rows'].items())} to {out}")
    typer.echo("tuneforge: train on them with: " + " ".join(m["train_with"]))
