"""The typer application and the error boundary shared by every subcommand."""
from __future__ import annotations

import logging
import os
import sys
import warnings

import typer

app = typer.Typer(name="tuneforge", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Fine-tune pretrained transformers from one YAML config.",
                  context_settings={"help_option_names": ["-h", "--help"]})


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and library warnings "
                                                               "(accepted anywhere on the line).")):
    """Fine-tune pretrained transformers from one YAML config."""


def _quiet_libraries(debug: bool) -> None:
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="tuneforge: %(message)s")
    logging.getLogger("tuneforge").setLevel(logging.INFO)
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        warnings.filterwarnings("ignore")
        try:
            import transformers
            transformers.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()  # weight-loading bars; training bars stay
        except ImportError:
            pass


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and a non-zero exit code, never a traceback."""
    from tuneforge.errors import TuneforgeError
    # registers the subcommands
    from tuneforge.cli import commands  # noqa: F401

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:  # accepted anywhere on the line, not only before the subcommand
        argv = [a for a in argv if a != "--debug"]
        os.environ["TUNEFORGE_DEBUG"] = "1"
    debug = os.environ.get("TUNEFORGE_DEBUG") == "1"
    _quiet_libraries(debug)
    try:
        app(args=argv, standalone_mode=False, prog_name="tuneforge")
        return 0
    except TuneforgeError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # click usage errors and anything unexpected
        import click
        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Exit):
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 1
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {first} (run with --debug for the traceback)", file=sys.stderr)
        return 1
