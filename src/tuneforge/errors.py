"""Errors a user can act on. The CLI prints them as one line and exits non-zero, without a traceback."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when it has none), for a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


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
