from __future__ import annotations

import typer

from tuneforge.cli.app import app


@app.command(context_settings={"allow_extra_args": False})
def estimate(
    config: str = typer.Argument(..., help="YAML config file."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. train.batch_size=4"),
    gpu: str | None = typer.Option(
        None,
        "--gpu",
        help="GPU to fit: h100-80gb, h200, a100-40gb, a100-80gb, 4090, 3090, l4, t4, a10g, v100-32gb, ...",
    ),
    memory: str | None = typer.Option(None, "--memory", help="Memory per device to fit, e.g. 24GiB."),
    nproc: int = typer.Option(1, "--nproc", help="Devices the run is spread over."),
    strategy: str = typer.Option("ddp", "--strategy", help="ddp, fsdp, deepspeed-zero2 or deepspeed-zero3."),
    as_json: bool = typer.Option(False, "--json", help="Print the estimate as JSON."),
):
    """Estimate the peak GPU memory per device of training CONFIG (weights, gradients, optimizer states,
    activations, logits), whether it fits, and the cheapest changes that make it fit."""
    import json

    from tuneforge.training.estimate import fit_report

    report = fit_report(config, overrides or [], gpu=gpu, memory=memory, nproc=nproc, strategy=strategy)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    print("\n".join(report.lines()))
