from __future__ import annotations

import json

import typer

from tuneforge.cli.app import app
from tuneforge.cli.precision import precision_option, use_precision


@app.command("eval")
def eval_cmd(
    run_dir: str = typer.Argument(..., help="Run directory."),
    data: str | None = typer.Option(
        None, "--data", help=("Labelled data file (same columns as training). Default: the run's own saved test split.")
    ),
    out: str | None = typer.Option(None, "--out", "-o", help="Report directory (default RUN/eval/<data name>)."),
    text_column: str | None = typer.Option(None, "--text-column"),
    label_column: str | None = typer.Option(None, "--label-column"),
    precision: str = precision_option(),
):
    """Evaluate a trained run on labelled data (default: its own test split): metrics, per-class report,
    confusion matrix."""
    use_precision(precision)
    from tuneforge.inference import evaluate

    result = evaluate(run_dir, data, out, text_column, label_column)
    print(json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float))}, indent=2))
