from __future__ import annotations

import typer

from tuneforge.cli.app import app


@app.command()
def merge(
    run_dir: str = typer.Argument(..., help="Run directory (or its model/ directory)."),
    out: str = typer.Option(..., "--out", "-o", help="Directory for the merged transformers checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out directory."),
    text: list[str] | None = typer.Option(
        None, "--text", help=("Input for the merged-vs-unmerged check (repeatable; default: a few fixed sentences).")
    ),
    tolerance: float | None = typer.Option(
        None,
        "--tolerance",
        help=("Largest allowed max |logit difference| (default 1e-3 for float32, 5e-2 for 16-bit)."),
    ),
):
    """Merge a run's adapter (LoRA, DoRA, QLoRA, IA3) into its base, or copy a full / freeze run, as a plain
    transformers checkpoint loadable with AutoModelFor...from_pretrained alone. Checks that the merged model
    gives the same logits as the trained one before writing."""
    from tuneforge.export.merge import merge_run

    r = merge_run(run_dir, out, texts=text, overwrite=overwrite, tolerance=tolerance)
    print(
        f"merged the {r['method']} run into {r['out_dir']}: max |logit difference| vs the unmerged model "
        f"on {r['inputs']} inputs = {r['max_abs_logit_diff']:.3g} (tolerance {r['tolerance']:g})"
    )
