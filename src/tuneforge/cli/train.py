from __future__ import annotations

import os

import typer

from tuneforge.cli.app import app


@app.command(context_settings={"allow_extra_args": False})
def train(
    config: str = typer.Argument(..., help="YAML config file."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. train.epochs=1"),
    resume: bool = typer.Option(False, "--resume", help="Continue the unfinished run from its last checkpoint."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Train despite failed data checks (for example a chat "
        "template that does not fit the tokenizer); they warn instead.",
    ),
    nproc: int = typer.Option(
        1,
        "--nproc",
        help="Processes per node (one per GPU; on CPU, gloo DDP). Above 1 "
        "the run is started through torchrun with "
        "train.distributed.strategy (ddp, fsdp, deepspeed).",
    ),
    nnodes: int = typer.Option(
        1, "--nnodes", help="Nodes of a multi-node run (needs output.dir on a filesystem every node sees)."
    ),
    node_rank: int = typer.Option(0, "--node-rank", help="This node's index, 0 to nnodes-1 (node 0 writes the run)."),
    master_addr: str | None = typer.Option(None, "--master-addr", help="Address of node 0 (multi-node)."),
    master_port: int | None = typer.Option(
        None, "--master-port", help="Port on node 0 (default: a free port on one node, 29500 across nodes)."
    ),
):
    """Train a model as CONFIG says and write a run directory."""
    from tuneforge.training.launch import Launch

    spec = Launch(nproc, nnodes, node_rank, master_addr, master_port)
    spec.check()
    if spec.needed:
        from tuneforge.training.launch import launch

        launch(config, overrides or [], spec, resume=resume, force=force)
        return
    import tuneforge

    if os.environ.get("TUNEFORGE_LAUNCHED") == "1" and os.environ.get("TUNEFORGE_DEBUG") != "1":
        # a worker of a multi-process run: its failure is recorded for the launcher, which prints the one line
        try:
            tuneforge.train(config, overrides or [], resume=resume, force=force)
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        except Exception as exc:
            raise SystemExit(getattr(exc, "exit_code", 1)) from None
        return
    tuneforge.train(config, overrides or [], resume=resume, force=force)
