"""One live process per run directory: run.lock holds its PID, host and process start time, is taken by an
atomic create, and is stale (replaced) when that process is dead on this host; the process checks behind it."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime
from pathlib import Path

from tuneforge.errors import RunDirError
from tuneforge.training.jsonfile import now, read_dict

LOCK_NAME = "run.lock"


def pid_alive(pid) -> bool:
    """Whether process `pid` (on this host) exists and is not a zombie; False for anything that is not a PID."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    try:  # a killed child that its parent has not reaped yet is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def process_start(pid) -> str | None:
    """The start time of a process (Linux /proc, clock ticks since boot): tells a reused PID from the original."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError, TypeError, ValueError):
        return None


def this_process() -> dict:
    """What a lock or a `running` status records of the process that writes it: PID, host and start time."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_start": process_start(os.getpid())}


def holder_alive(info: dict) -> bool:
    """Whether the process named by a lock or status is alive; one on another host is taken as alive."""
    if info.get("host") not in (None, socket.gethostname()):
        return True
    if not pid_alive(info.get("pid")):
        return False
    started = info.get("pid_start")
    return started is None or process_start(info.get("pid")) in (None, started)  # else: the PID was reused


def take_lock(lock_file: Path, run_path: Path) -> None:
    """Take `lock_file` (atomic create) for the run in `run_path`. A lock of a live process is a one-line
    RunDirError; a lock whose PID is dead on this host is stale and replaced."""
    me = {**this_process(), "started_at": now()}
    for _ in range(40):
        try:
            fd = os.open(lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = read_dict(lock_file)
            if not info:  # being written this instant (wait), or left empty by a kill (then stale)
                try:
                    age = datetime.now().timestamp() - lock_file.stat().st_mtime
                except OSError:
                    continue
                if age < 2:
                    time.sleep(0.1)
                    continue
            elif holder_alive(info):
                raise RunDirError(
                    f"{run_path} is in use by PID {info.get('pid')} on {info.get('host')} since "
                    f"{info.get('started_at')}; wait for it or stop it (if that process is gone, delete "
                    f"{lock_file})"
                ) from None
            lock_file.unlink(missing_ok=True)  # stale
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
        return
    raise RunDirError(f"could not take {lock_file}: another process is starting in {run_path}")


def drop_lock(lock_file: Path) -> None:
    """Remove `lock_file` if this process holds it (another process's lock is left alone)."""
    try:
        info = json.loads(lock_file.read_text())
    except (OSError, ValueError):
        return
    if info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        lock_file.unlink(missing_ok=True)
