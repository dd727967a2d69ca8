"""Errors a user can act on. The CLI prints them as one line and exits non-zero, without a traceback.

Exit codes: 1 an unexpected error (a bug; `--debug` shows the traceback), 2 a config or usage error, 3 data,
4 a model that cannot be loaded or used, 5 a run directory, 6 a server that cannot start, 7 out of memory,
8 a method that cannot do what is asked (merge, switch adapters off), 9 a path outside the folders the web UI may
use, 10 a command the web UI ran failed, 130 interrupted. Every error class lives here, whichever layer raises it."""


def first_line(exc: BaseException, limit: int = 200, *, whole: bool = False, with_type: bool = False) -> str:
    """An exception's message as one line of at most `limit` characters, for a one-line error: its first non-empty
    line, or with `whole` every line joined by spaces. An exception without a message (`str(AssertionError())` is
    empty) gives its type name, never an empty string or an IndexError. `with_type` puts the type name first
    (`ValueError: bad value`), for errors whose type is the only clue (a bug rather than a user's mistake)."""
    raw = str(exc)
    if whole:
        text = " ".join(raw.split())
    else:
        text = next((line.strip() for line in raw.splitlines() if line.strip()), "")
    text = text[:limit]
    name = type(exc).__name__
    if with_type:
        return f"{name}: {text}" if text else name
    return text or name


class TuneforgeError(Exception):
    """Base class: the message is meant for the user, in one line."""

    exit_code = 1


class ConfigError(TuneforgeError):
    exit_code = 2


class DataError(TuneforgeError):
    exit_code = 3


class ModelError(TuneforgeError):
    exit_code = 4


class RunDirError(TuneforgeError):
    exit_code = 5


class ServeError(TuneforgeError):
    """The server cannot start: its port is in use, or its address cannot be bound."""

    exit_code = 6


class ResourceError(TuneforgeError):
    """The machine ran out of a resource during training (CUDA out of memory): the message says what to change."""

    exit_code = 7


class MethodError(TuneforgeError):
    """The run's method cannot do what is asked: merge a quantized base, switch adapters off, save or load its
    weights in this layout."""

    exit_code = 8


class PathError(TuneforgeError):
    """A path outside the folders the web UI may read or write."""

    exit_code = 9


class CommandError(TuneforgeError):
    """A command the web UI ran failed; the message is the command's own error line."""

    exit_code = 10
