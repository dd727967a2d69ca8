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

    from tuneforge.config import load_config
    from tuneforge.errors import ConfigError
    from tuneforge.training.estimate import estimate_memory, fits_line, gpu_memory, parse_memory, suggestions
    from tuneforge.training.gpus import find_gpu

    if gpu and memory:
        raise ConfigError("--gpu and --memory: give one of them")
    bf16, budget, label = True, None, None
    if gpu:
        entry = find_gpu(gpu)
        bf16, budget, label = entry.bf16, gpu_memory(gpu), entry.name
    elif memory:
        budget, label = parse_memory(memory), memory
    cfg = load_config(config, overrides or [], environment=False)
    est = estimate_memory(cfg, nproc=nproc, strategy=strategy, device="cuda", bf16=bf16)
    tips = (
        suggestions(cfg, est, budget, nproc, strategy, bf16=bf16, best_effort=True)
        if budget and est.total > budget
        else []
    )
    if as_json:
        print(
            json.dumps(
                {
                    **est.to_dict(),
                    "budget": budget,
                    "fits": None if budget is None else est.total <= budget,
                    "suggestions": tips,
                },
                indent=2,
            )
        )
        return
    print(est.table())
    print("assumptions: " + "; ".join(est.assumptions))
    if budget:
        print(fits_line(est, budget, label))
        if est.total > budget:
            print(
                "suggestions (config overrides or launch options):"
                if tips
                else "no change found that saves memory; try a larger GPU"
            )
            for t in tips:
                print(f"  {t}")
