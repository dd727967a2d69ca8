from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from tuneforge.cli.app import app
from tuneforge.training.runlist import age_text, describe, find_runs


@app.command()
def runs(
    directory: str = typer.Argument("runs", help="A run directory, or a directory of runs (default runs/)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON list for scripts instead of lines."),
):
    """List run directories: state (running / interrupted / completed / failed / stopped), main metric, age."""
    from tuneforge.errors import RunDirError

    root = Path(directory)
    if not root.is_dir():
        raise RunDirError(f"{directory} is not a directory")
    rows = [describe(p) for p in find_runs(root)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo(f"no runs under {directory}", err=True)
        return
    for r in rows:
        shown = f"{r['metric']}={r['value']:.4f}" if r["metric"] else "-"
        note = ""
        if r["state"] == "failed" and r["error"]:
            note = f"  ({r['error'][:80]})"
        elif r["state"] == "running" and r["pid"]:
            note = f"  (pid {r['pid']})"
        if r["replaces"]:
            note += f"  [overwrite of {r['replaces']}]"
        typer.echo(
            f"{r['state'] or '?':<12} {shown:<22} {age_text(r['age_seconds']):>5}  {os.path.normpath(r['path'])}{note}"
        )
