"""The run's console output, kept in the run directory (`console.log`), so a run started from a shell shows its log in
the web UI's Runs page and can be read after the terminal is gone. A run whose output already goes into the run's
`train.log` (the web UI and `tuneforge compare` start runs that way) is not copied twice."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

CONSOLE_LOG = "console.log"
#: the log file the web UI and `tuneforge compare` send a run's output to
CALLER_LOG = "train.log"


class _Tee:
    """A text stream that writes to the console and to the log file. Progress-bar redraws (text ending in `\\r`)
    reach the console only: the file gets each line in its final state, so it stays small and readable."""

    def __init__(self, console: TextIO, log: ConsoleLog):
        self._console, self._log = console, log

    def write(self, text: str) -> int:
        n = self._console.write(text)
        self._log.add(text)
        return n

    def flush(self) -> None:
        self._console.flush()
        self._log.flush()

    def __getattr__(self, name: str):  # isatty, fileno, encoding, ...: the console's
        return getattr(self._console, name)


class ConsoleLog:
    """While open, everything the process writes to `sys.stdout` / `sys.stderr` also goes to `path` (appended, so a
    resumed run continues the same log). `write_line` writes to the file alone (progress lines when the console
    shows a progress bar instead)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file: TextIO | None = None
        self._pending = ""
        self._saved: tuple[TextIO, TextIO] | None = None
        self._handlers: list[tuple[logging.StreamHandler, TextIO]] = []

    def __enter__(self) -> ConsoleLog:
        self._file = open(self.path, "a", encoding="utf-8", errors="replace")  # closed in __exit__
        self._saved = (sys.stdout, sys.stderr)
        tees = {id(sys.stdout): _Tee(sys.stdout, self), id(sys.stderr): _Tee(sys.stderr, self)}
        sys.stdout, sys.stderr = tees[id(self._saved[0])], tees[id(self._saved[1])]
        # logging handlers hold the stream they were made with (logging.basicConfig's is the console's stderr)
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for h in getattr(logger, "handlers", []):
                if type(h) is logging.StreamHandler and id(h.stream) in tees:
                    self._handlers.append((h, h.setStream(tees[id(h.stream)])))
        return self

    def __exit__(self, *exc) -> None:
        for h, stream in self._handlers:
            h.setStream(stream)
        self._handlers.clear()
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        if self._file is not None:
            if self._pending:
                self._file.write(self._pending.rsplit("\r", 1)[-1] + "\n")
            self._file.close()
            self._file = None

    def add(self, text: str) -> None:
        """Append console text, keeping of each line only what follows its last carriage return."""
        if self._file is None:
            return
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._file.write(line.rsplit("\r", 1)[-1] + "\n")
        if len(self._pending) > 100_000:  # a bar redrawn for hours without a newline: keep its last state only
            self._pending = self._pending.rsplit("\r", 1)[-1]

    def write_line(self, line: str) -> None:
        if self._file is not None:
            self._file.write(line.rstrip("\n") + "\n")
            self._file.flush()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()


def already_captured(*run_dirs: Path) -> bool:
    """Whether this process's output already goes into the `train.log` of one of `run_dirs` (a run the web UI or
    compare started as a process writing there, or a search trial whose output is redirected there), so the
    console log would repeat it."""
    streams = []
    for stream in (sys.stderr, sys.__stderr__):
        try:
            streams.append(os.fstat(stream.fileno()))
        except (AttributeError, OSError, ValueError):  # a StringIO, a closed or missing stream
            continue
    for d in run_dirs:
        try:
            log = os.stat(Path(d) / CALLER_LOG)
        except OSError:
            continue
        if any(os.path.samestat(s, log) for s in streams):
            return True
    return False
