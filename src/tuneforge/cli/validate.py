from __future__ import annotations

import typer

from tuneforge.cli.app import app


@app.command()
def validate(
    config: str = typer.Argument(..., help="YAML config file."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides"),
):
    """Check a config and print it resolved (with every default), or the errors."""
    from tuneforge.config import dump_config, load_config

    typer.echo(dump_config(load_config(config, overrides or [])), nl=False)


@app.command("config-reference")
def config_reference():
    """Print the reference of every config key (markdown), generated from the field descriptions."""
    from tuneforge.config.reference import reference_markdown

    typer.echo(reference_markdown())
