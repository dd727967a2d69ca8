"""The command line (layer 7, thin): app.py (the typer app and the one-line error boundary), one module per
subcommand registered by commands.py, and deprecations.py (old option spellings, kept for one release)."""
