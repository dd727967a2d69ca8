"""The commands the web UI starts and stops: each in its own process group (so stopping it ends every process it
started), its output appended to a log file, and reaped by a thread of its own so that it never lingers as a
zombie. Whether a command still runs is what that thread saw: `Popen.poll()` answers None while another thread
waits on the process, even for one that has ended."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.training.runlock import pid_alive


@dataclass(eq=False)
class Job:
    """A command the web UI started: its process (own process group) and log file."""

    kind: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen
    target: Path | None = None
    started: float = field(default_factory=time.time)
    #: the exit status, set by the reaping thread when the process has ended
    returncode: int | None = None
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        """Whether the process has not ended (been reaped) yet."""
        return not self._ended.is_set()

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status, waiting up to `timeout` seconds for the process to end; None while it still runs."""
        self._ended.wait(timeout)
        return self.returncode

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the command's process group; SIGKILL when it has not ended after `grace` seconds."""
        _signal_group(self.pid, signal.SIGTERM)
        if self.wait(grace) is None:
            _signal_group(self.pid, signal.SIGKILL)

    def _reap(self) -> None:
        self.returncode = self.proc.wait()
        self._ended.set()


def start(kind: str, argv: list[str], log: Path, cwd: Path, target: Path | None = None) -> Job:
    """Start `argv` in its own process group in `cwd`, its output appended to `log` (after a `$ command` line)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv[2:] if argv[1:2] == ['-m'] else argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    job = Job(kind, argv, log, proc, target)
    threading.Thread(target=job._reap, daemon=True).start()
    return job


def end_groups(leaders: set[int], grace: float) -> None:
    """End the processes in `leaders` and the process groups they lead: SIGTERM, SIGKILL to what is left after
    `grace` seconds, then up to 5 seconds for them to go."""
    # the processes to wait for: each leader's whole group (what it started, e.g. data loader workers)
    watched = set(leaders)
    for pid in leaders:
        watched.update(_group_members(pid))
    for pid in leaders:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and any(pid_alive(p) for p in watched):
        time.sleep(0.2)
    for pid in leaders:
        if any(pid_alive(p) for p in watched):
            _signal_group(pid, signal.SIGKILL)
    deadline = time.time() + 5
    while time.time() < deadline and any(pid_alive(p) for p in watched):
        time.sleep(0.1)


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_members(pid: int) -> set[int]:
    """The processes of the group `pid` leads (none when it leads none), read from /proc (Linux)."""
    try:
        if os.getpgid(pid) != pid:
            return set()
    except OSError:
        return set()
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 2 and fields[2] == str(pid):  # field 5 of stat: the process group
                members.add(int(entry.name))
    return members


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group `pid` leads (commands started here lead their own), else the process alone
    (a run started from a shell: its group is the shell's, which is not ours to end)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError, OSError):
        pass
