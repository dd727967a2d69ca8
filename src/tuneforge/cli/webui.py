"""`tuneforge webui`: the browser UI (Gradio, imported only by this command)."""

from __future__ import annotations

import os

import typer

from tuneforge.cli.app import app


@app.command()
def webui(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (this machine only by default)."),
    port: int = typer.Option(7860, "--port", min=0, max=65535, help="Port to listen on."),
    runs_dir: str = typer.Option(
        "runs", "--out", "-o", help="The runs directory: where runs, studies, reports and exports live."
    ),
    data_dir: list[str] | None = typer.Option(
        None,
        "--data-dir",
        help=(
            "A folder whose files the pages may read as data or configs (repeatable; default: the working "
            "directory). Paths outside these and the runs directory are refused."
        ),
    ),
    password: str | None = typer.Option(
        None,
        "--password",
        help=(
            "Require this password (user 'tuneforge'; default: $TUNEFORGE_WEBUI_PASSWORD). Needed for a "
            "--host other than loopback."
        ),
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback --host without a password."),
    lang: str = typer.Option("en", "--lang", help="Language of the pages: en or zh (switchable in the page)."),
):
    """Open the web UI: train, follow runs, inspect data, compare, search, chat, predict, export and serve, in
    the browser (English and Chinese). Every action runs the same command line and writes the same run
    directories as the CLI."""
    from tuneforge.errors import ConfigError

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError("the web UI needs Gradio: pip install 'tuneforge[webui]'") from None
    from tuneforge.webui.app import launch

    launch(
        host=host,
        port=port,
        runs_dir=runs_dir,
        data_dirs=data_dir or (),
        password=password or os.environ.get("TUNEFORGE_WEBUI_PASSWORD") or None,
        insecure=insecure,
        lang=lang,
    )
