from __future__ import annotations

import typer

from tuneforge.cli.app import app


@app.command()
def report(
    run_dirs: list[str] = typer.Argument(..., help="Run directories, or directories of runs."),
    out: str | None = typer.Option(
        None, "--out", "-o", help="Where to write the report (default: the runs' common parent directory)."
    ),
    title: str | None = typer.Option(None, "--title", help="Heading of the report."),
):
    """Compare existing run directories: compare.json, report.md and a self-contained report.html."""
    from tuneforge.compare import build_report

    rep = build_report(run_dirs, out, title=title)
    typer.echo(f"report: {rep.html_path} (and report.md, compare.json)", err=True)
    if rep.data.get("best"):
        typer.echo(
            f"report: best {rep.data['metric']}: {rep.data['best']}; best per unit of cost: {rep.data['best_value']}",
            err=True,
        )
