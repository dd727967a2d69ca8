from __future__ import annotations

import typer

from tuneforge.cli.app import app

FORMATS = "merged, onnx, int8, onnx-int8, gguf (chat runs: llama.cpp, Ollama)"


@app.command()
def export(
    run_dir: str = typer.Argument(..., help="Run directory (or its model/ directory)."),
    format: str = typer.Option(..., "--format", help=f"One of: {FORMATS}."),
    out: str = typer.Option(..., "--out", "-o", help="Output directory (new or empty unless --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out directory."),
    max_samples: int = typer.Option(
        2000, "--max-samples", min=1, help=("Most test-split rows used for the parity check.")
    ),
    no_bench: bool = typer.Option(False, "--no-bench", help="Skip the latency/throughput measurement."),
    quant: str = typer.Option(None, "--quant", help="GGUF type for --format gguf: f16 (default), bf16, q8_0 or f32."),
):
    """Export a trained run for deployment (merged transformers checkpoint, ONNX, int8, GGUF with an Ollama
    Modelfile) and measure what it costs: parity with the trained model on the test split, size on disk, CPU
    latency and throughput. Everything measured is written to OUT/export.json."""
    from tuneforge.export.exporter import export_run

    report = export_run(
        run_dir, format, out, overwrite=overwrite, max_samples=max_samples, bench=not no_bench, quant=quant
    )
    from tuneforge.export.report import summary

    print(summary(report))
    print(f"details: {out}/export.json")
