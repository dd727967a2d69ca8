from __future__ import annotations

from typing import List, Optional

import typer

from tuneforge.cli.app import app


@app.command(context_settings={"allow_extra_args": False})
def train(config: str = typer.Argument(..., help="YAML config file."),
          overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. train.epochs=1"),
          resume: bool = typer.Option(False, "--resume", help="Continue the unfinished run from its last checkpoint."),
          force: bool = typer.Option(False, "--force", help="Train despite failed data checks (for example a chat "
                                                           "template that does not fit the tokenizer); they warn instead.")):
    """Train a model as CONFIG says and write a run directory."""
    import tuneforge

    tuneforge.train(config, overrides or [], resume=resume, force=force)
