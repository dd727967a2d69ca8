"""Replacing a run (`output.overwrite`): the new run trains beside the old one, in `.<name>.overwrite/<name>`,
and only once it completes is it swapped into the old run's place, so a failed or killed attempt leaves the old
run as it was."""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

from tuneforge.errors import RunDirError
from tuneforge.training.console import CONSOLE_LOG
from tuneforge.training.runlock import LOCK_NAME

# what tuneforge writes into a run directory; anything else in a run being overwritten (a caller's train.log,
# the user's notes) is carried over into the new run rather than deleted
RUN_ENTRIES = {
    "config.yaml",
    "status.json",
    "status.json.tmp",
    "metrics.jsonl",
    "efficiency.json",
    "efficiency.json.tmp",
    "eval",
    "model",
    "model.partial",
    "checkpoints",
    "checkpoints.dropped",
    "data",
    "tensorboard",
    CONSOLE_LOG,  # the new run's own console log replaces the old one's
    LOCK_NAME,
}


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


def swap_in(new: Path, old: Path) -> None:
    """Put the completed run `new` (inside its attempt holder) in place of `old`, carrying over what the old
    directory holds besides run outputs, and remove the holder with the old run."""
    # entries of the old directory that are not run outputs stay with the run (moved, so a file that another
    # process is still writing keeps its handle)
    for entry in list(old.iterdir()):
        if entry.name not in RUN_ENTRIES and not (new / entry.name).exists():
            entry.rename(new / entry.name)
    holder = new.parent
    if not _exchange(new, old):
        replaced = holder / "replaced"
        old.rename(replaced)
        try:
            new.rename(old)
        except OSError as exc:
            raise RunDirError(f"the new run is complete in {new} but could not replace {old}: {exc}") from exc
    shutil.rmtree(holder, ignore_errors=True)
