"""The typer application and the error boundary shared by every subcommand."""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

import typer

from tuneforge.errors import first_line

app = typer.Typer(
    name="tuneforge",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Fine-tune pretrained transformers from one YAML config.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global(
    debug: bool = typer.Option(
        False, "--debug", help="Show full tracebacks and library warnings (accepted anywhere on the line)."
    ),
):
    """Fine-tune pretrained transformers from one YAML config."""


def _quiet_libraries(debug: bool) -> None:
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="tuneforge: %(message)s")
    logging.getLogger("tuneforge").setLevel(logging.INFO)
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        warnings.filterwarnings("ignore")
        # bitsandbytes notes on every CPU start-up that an optional kernel package is missing: not the user's problem
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        try:
            import transformers

            transformers.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()  # weight-loading bars; training bars stay
        except ImportError:
            pass


#: every error line the CLI prints stays under this many characters
MAX_ERROR_LINE = 300


_LONG_PATH = re.compile(r"(?<![\w.])/[^\s:'\"(),]{40,}")


def _short_path(match) -> str:
    parts = match.group(0).rstrip("/").split("/")
    return "…/" + "/".join(parts[-2:]) if len(parts) > 3 else match.group(0)


def error_line(message: str) -> str:
    """`error: <message>` on one line and under MAX_ERROR_LINE characters. A longer message loses its middle (an
    ellipsis marks the cut): the start names the key or file, the end usually says what to do."""
    text = " ".join(str(message).split()) or "unknown error"
    line = f"error: {text}"
    if len(line) < MAX_ERROR_LINE:
        return line
    # a deep path (a temp dir, a run folder) is the cheapest thing to shorten: its last two parts name the file
    line = _LONG_PATH.sub(_short_path, line)
    if len(line) < MAX_ERROR_LINE:
        return line
    head = 140
    return line[:head] + " … " + line[len(line) - (MAX_ERROR_LINE - head - 4) :]


def _usage_message(exc) -> str:
    """A click usage error as one line: what is wrong, and where help is."""
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None and ctx.command_path else ""
    return f"{message}{where}"


_COMMAND: list = []


def _click_command():
    """The click command typer builds from `app`, built once per set of registered commands (building it takes
    tens of milliseconds, which in-process callers such as the config fuzzer pay per call otherwise)."""
    key = (len(app.registered_commands), len(app.registered_groups))
    if not _COMMAND or _COMMAND[0] != key:
        _COMMAND[:] = [key, typer.main.get_command(app)]
    return _COMMAND[1]


def _click_exceptions() -> tuple[tuple, tuple, tuple, tuple]:
    """(usage errors, other click errors, exits, aborts) of click and of the copy typer vendors (typer._click)."""
    import click

    modules = [click.exceptions]
    try:
        from typer._click import exceptions as vendored

        modules.append(vendored)
    except ImportError:
        pass
    return tuple(
        tuple(getattr(m, name) for m in modules if hasattr(m, name))
        for name in ("UsageError", "ClickException", "Exit", "Abort")
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and a non-zero exit code, never a traceback.
    Usage errors (unknown option, missing argument) exit 2 like config errors."""
    # registers the subcommands
    from tuneforge.cli import commands  # noqa: F401
    from tuneforge.errors import TuneforgeError

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:  # accepted anywhere on the line, not only before the subcommand
        argv = [a for a in argv if a != "--debug"]
        os.environ["TUNEFORGE_DEBUG"] = "1"
    from tuneforge.cli.deprecations import rewrite

    argv = rewrite(argv)  # old option spellings still work for one release, with a notice
    debug = os.environ.get("TUNEFORGE_DEBUG") == "1"
    _quiet_libraries(debug)
    usage_errors, click_errors, exits, aborts = _click_exceptions()
    try:
        _click_command()(args=argv, standalone_mode=False, prog_name="tuneforge")
        return 0
    except TuneforgeError as exc:
        if debug:
            raise
        print(error_line(str(exc)), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except usage_errors as exc:  # unknown option, missing or extra argument, bad value
        print(error_line(_usage_message(exc)), file=sys.stderr)
        return 2
    except click_errors as exc:
        print(error_line(exc.format_message()), file=sys.stderr)
        return exc.exit_code or 1
    except exits as exc:
        return exc.exit_code
    except aborts:
        print("error: aborted", file=sys.stderr)
        return 1
    except RecursionError:  # last resort: input nested deeper than any check expected
        if debug:
            raise
        print("error: input nested too deeply (run with --debug for the traceback)", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            raise
        print(error_line(f"{first_line(exc, with_type=True)} (run with --debug for the traceback)"), file=sys.stderr)
        return 1
