from __future__ import annotations

import os

import typer

from tuneforge.cli.app import app
from tuneforge.cli.precision import precision_option, use_precision


@app.command()
def serve(
    targets: list[str] = typer.Argument(
        ...,
        metavar="TARGET...",
        help=(
            "Run directory (or its model/) or a `tuneforge export` directory; several runs of one base model and "
            "task type share one base model in one server (the request's 'model' field picks the run)."
        ),
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(
        8000,
        "--port",
        min=0,
        max=65535,
        help=("Port to listen on (0: any free port, printed at start). A port in use is an error (exit code 6)."),
    ),
    api_key: str | None = typer.Option(
        None, "--api-key", help=("Require 'Authorization: Bearer KEY' on every request (default: $TUNEFORGE_API_KEY).")
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback --host without an API key."),
    max_input_chars: int = typer.Option(
        20_000, "--max-input-chars", min=1, help=("Longest text or chat message accepted (longer: HTTP 413).")
    ),
    max_batch: int = typer.Option(
        64, "--max-batch", min=1, help=("Most texts classified in one batched forward pass.")
    ),
    timeout: float = typer.Option(300.0, "--timeout", min=1, help="Seconds a request may wait for the model."),
    precision: str = precision_option(),
):
    """Serve a model over HTTP: OpenAI-compatible /v1/chat/completions for causal LMs, /v1/classify for
    classifiers, /v1/models and /health for both. Several runs (`tuneforge serve RUN_A RUN_B`) trained from the
    same base model for the same task type load the base once, each run's adapter beside it: /v1/models lists
    them by directory name, the request's "model" field picks one (unknown: HTTP 404 model_not_found), a request
    without it gets the first; runs whose method saves a whole model load on their own model in the same server."""
    use_precision(precision)
    from tuneforge.serve.app import ServeLimits
    from tuneforge.serve.app import serve as run_server

    key = api_key or os.environ.get("TUNEFORGE_API_KEY") or None
    run_server(
        targets if len(targets) > 1 else targets[0],
        host=host,
        port=port,
        api_key=key,
        insecure=insecure,
        limits=ServeLimits(max_input_chars=max_input_chars, max_batch=max_batch, request_timeout_s=timeout),
    )
