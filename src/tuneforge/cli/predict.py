from __future__ import annotations

import json
from pathlib import Path

import typer

from tuneforge.cli.app import app
from tuneforge.cli.precision import precision_option, use_precision
from tuneforge.errors import ConfigError, DataError


def read_texts(path: str, column: str | None) -> list[str]:
    """The texts of `path`: a .txt file's non-empty lines, or a table's `column` (default `text`)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"file not found: {path}")
    if p.suffix == ".txt":
        try:
            return [l for l in p.read_text(encoding="utf-8").splitlines() if l.strip()]
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    from tuneforge.data.columns import check_cells, require_columns
    from tuneforge.data.sources import read_table

    df = read_table(path)
    col = column or ("text" if "text" in df.columns else None)
    if col is None:
        raise DataError(
            f"{path}: no 'text' column; name one with --text-column (columns: {', '.join(map(str, df.columns))})"
        )
    require_columns(df, {"--text-column": col}, path)
    df = check_cells(df, {col: ("--text-column", "text")}, path).dropna(subset=[col])
    texts = [str(t) for t in df[col].tolist() if str(t).strip()]
    if not texts:
        raise DataError(f"{path}: column '{col}' holds no text")
    return texts


@app.command()
def predict(
    run_dir: str = typer.Argument(..., help="Run directory (or its model/ directory)."),
    texts: list[str] | None = typer.Argument(
        None,
        help=(
            "Texts to classify. Leading arguments that are run directories are more runs (one base model and "
            "task type: they share the base model)."
        ),
    ),
    file: str | None = typer.Option(None, "--file", "-f", help="A .txt (one text per line), .csv or .jsonl file."),
    column: str | None = typer.Option(None, "--text-column", help="Text column of --file (default: text)."),
    run: str | None = typer.Option(
        None,
        "--run",
        help=(
            "With several runs: the one that answers, by directory name (its lines look as for one run). "
            'Without --run every run answers: one line per text, {"text", "runs": {name: prediction}}.'
        ),
    ),
    batch_size: int = typer.Option(64, "--batch-size"),
    precision: str = precision_option(),
):
    """Classify texts; prints one JSON line per text with its label and per-class probabilities (a reward-model
    run: its score, {"text", "score"}, the text scored as it is given). Several runs of
    one base model (`tuneforge predict RUN_A RUN_B TEXT...`) share the base model: --run picks the one that answers,
    else every run answers."""
    use_precision(precision)
    from tuneforge.inference import predict as run_predict
    from tuneforge.inference.adapters import is_run_path, predict_runs, run_names

    items, runs = list(texts or []), [run_dir]
    while items and is_run_path(items[0]):
        runs.append(items.pop(0))
    if file:
        items += read_texts(file, column)
    if not items:
        raise DataError("nothing to predict: give texts as arguments or --file")
    if len(runs) == 1:
        if run is not None and run != run_names(runs)[0]:
            raise ConfigError(f"--run: no run named '{run}' (runs: {run_names(runs)[0]})")
        rows = run_predict(run_dir, items, batch_size=batch_size)
    else:
        rows = predict_runs(runs, items, run=run, batch_size=batch_size)
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))
