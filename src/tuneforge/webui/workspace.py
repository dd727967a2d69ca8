"""What the web UI does, without the UI: the folders it may touch, the runs it lists and the processes it starts.

The web UI is a thin client: every training, search, export and server it starts is the command line
(`python -m tuneforge train CONFIG`, ...) in its own process group, with its output in a log file, and every
thing it shows is read back from the files those commands write (status.json, metrics.jsonl, eval/, the
study and report directories). A page reload, a second browser or a restarted web UI finds everything again,
and a run started from the UI is the same run as one started from a shell.

Safety: every path a page names is resolved (symlinks and `..` included) and must lie inside the runs
directory or one of the data folders given at start; anything else is a PathError.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from tuneforge.errors import RunDirError, TuneforgeError, first_line
from tuneforge.training.rundir import RunDir, pid_alive
from tuneforge.training.runlist import describe, find_runs

#: the web UI's own files under the runs directory: configs it wrote, reports, exports, data reports
UI_DIR = ".webui"
LOG_NAME = "train.log"
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


class PathError(TuneforgeError):
    """A path outside the folders the web UI may read or write."""


class CommandError(TuneforgeError):
    """A command the web UI ran failed; the message is the command's own error line."""


def slug(text: str, default: str = "run") -> str:
    """A plain directory name made of `text` (letters, digits, dot, dash, underscore)."""
    name = _SLUG.sub("-", str(text)).strip("-.")[:80]
    return name or default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Job:
    """A command the web UI started: its process (own process group) and log file."""

    kind: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen
    target: Path | None = None
    started: float = field(default_factory=time.time)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None


class Workspace:
    """The runs directory and data folders of one web UI, and the processes it started.

    Args:
        runs_dir: where runs, studies, reports and exports are written (created if missing).
        data_dirs: folders whose files may be read as data or configs (default: the working directory).
        cwd: the working directory of the commands started (relative paths in configs resolve against it).
    """

    def __init__(self, runs_dir: str | Path, data_dirs=(), cwd: str | Path | None = None):
        self.runs_dir = Path(runs_dir).expanduser().resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.cwd = Path(cwd or os.getcwd()).resolve()
        self.data_dirs = [Path(d).expanduser().resolve() for d in (data_dirs or [self.cwd])]
        self.ui_dir = self.runs_dir / UI_DIR
        self.jobs: list[Job] = []
        self._lock = threading.Lock()

    # paths -------------------------------------------------------------------------------------------------
    @property
    def roots(self) -> list[Path]:
        return [self.runs_dir, *self.data_dirs]

    def inside(self, path: str | Path, roots: list[Path] | None = None, must_exist: bool = True) -> Path:
        """`path` resolved (relative ones against the working directory), if it lies inside one of `roots`
        (default: the runs directory and the data folders). Raises PathError otherwise."""
        text = str(path).strip()
        if not text:
            raise PathError("no path given")
        p = Path(text).expanduser()
        resolved = (p if p.is_absolute() else self.cwd / p).resolve()
        roots = self.roots if roots is None else roots
        if not any(resolved == r or r in resolved.parents for r in roots):
            shown = ", ".join(str(r) for r in roots)
            raise PathError(
                f"{text} is outside the folders this web UI may use ({shown}); start "
                f"`tuneforge webui --data-dir DIR` to allow another folder"
            )
        if must_exist and not resolved.exists():
            raise PathError(f"{text} does not exist")
        return resolved

    def data_source(self, text: str) -> str:
        """A data or model reference for a config: `builtin:` aliases as they are, paths checked to lie inside
        the allowed folders (returned as given, so the saved config stays portable)."""
        text = str(text or "").strip()
        if not text or text.startswith("builtin:"):
            return text
        self.inside(text)
        return text

    def run_dir(self, name_or_path: str) -> Path:
        """A run directory inside the runs directory, by its path relative to it or its absolute path."""
        text = str(name_or_path or "").strip()
        if not text:
            raise PathError("no run selected")
        p = Path(text)
        path = self.inside(p if p.is_absolute() else self.runs_dir / p, [self.runs_dir])
        if not RunDir(path).is_run():
            raise RunDirError(f"{text} is not a tuneforge run")
        return path

    def rel_or_abs(self, path: Path) -> str:
        """`path` relative to the working directory when inside it (how a shell there would name it)."""
        try:
            return str(Path(path).resolve().relative_to(self.cwd))
        except ValueError:
            return str(path)

    def rel(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.runs_dir))
        except ValueError:
            return str(path)

    # runs --------------------------------------------------------------------------------------------------
    def runs(self) -> list[dict]:
        """Every run under the runs directory (started here or from the command line), newest first."""
        rows = []
        for p in find_runs(self.runs_dir, max_depth=5):
            if UI_DIR in p.relative_to(self.runs_dir).parts or any(part.endswith(".overwrite") for part in p.parts):
                continue
            row = describe(p)
            row["name"] = self.rel(p)
            row["interface"] = self.interface(p)
            rows.append(row)
        rows.sort(key=lambda r: r.get("age_seconds") if r.get("age_seconds") is not None else 1e18)
        return rows

    @staticmethod
    def interface(run: Path) -> str | None:
        """`classify` or `chat` for a run with a saved model (what its task offers), else None."""
        from tuneforge.models.loader import read_run_metadata
        from tuneforge.registry import TASKS

        try:
            return TASKS.get(read_run_metadata(Path(run) / "model").get("task", "")).interface
        except (TuneforgeError, OSError, ValueError, AttributeError):
            return None

    @staticmethod
    def input_kind(run: Path) -> str:
        """`text` or `image`: what a run with a saved model is given to predict (its task's `input_kind`)."""
        from tuneforge.models.loader import read_run_metadata
        from tuneforge.registry import TASKS

        try:
            return TASKS.get(read_run_metadata(Path(run) / "model").get("task", "")).input_kind
        except (TuneforgeError, OSError, ValueError, AttributeError):
            return "text"

    @staticmethod
    def metrics(run: Path) -> list[dict]:
        """The rows of metrics.jsonl (a row cut by a kill mid-write is skipped)."""
        rows = []
        try:
            with open(Path(run) / "metrics.jsonl", encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(row, dict):
                        rows.append(row)
        except OSError:
            pass
        return rows

    @staticmethod
    def log_tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
        """The last `lines` lines of a log (progress-bar carriage returns resolved to their last state)."""
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - max_bytes))
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        out = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
        if out and not out[-1]:
            out.pop()
        return "\n".join(line for line in out[-lines:])

    # starting and stopping commands ----------------------------------------------------------------------------
    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tuneforge", *args]

    def launch(self, kind: str, argv: list[str], log: Path, target: Path | None = None) -> Job:
        """Start `argv` in its own process group (so Stop ends it and every process it started), output appended
        to `log`. The child is reaped by a thread so that it never lingers as a zombie."""
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
                cwd=self.cwd,
                env=env,
                start_new_session=True,
            )
        job = Job(kind, argv, log, proc, target)
        threading.Thread(target=proc.wait, daemon=True).start()
        with self._lock:
            self.jobs.append(job)
        return job

    def write_config(self, raw: dict, name: str) -> Path:
        d = self.ui_dir / "configs"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{slug(name)}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path

    def train_argv(self, name: str) -> tuple[Path, Path, list[str]]:
        """(config file, run directory, command) of a run the UI starts: the form's YAML as written, with the run
        directory given on the command line (the line the Train page shows is the line that runs)."""
        name = slug(name)
        target = self.runs_dir / name
        config = self.ui_dir / "configs" / f"{name}.yaml"
        return config, target, self.command("train", str(config), f"output.dir={target}")

    def start_train(self, raw: dict, name: str) -> tuple[Job, Path]:
        """Validate `raw`, write it as a YAML file and start `tuneforge train` on it into RUNS/<name>.

        Raises ConfigError (invalid config), RunDirError (the run directory is in use by a live process, or
        exists and the config does not say output.overwrite)."""
        from tuneforge.config import validate_config
        from tuneforge.config.loader import apply_overrides

        config, target, argv = self.train_argv(name)
        validate_config(apply_overrides(raw, [f"output.dir={target}"]))
        self.refuse_busy(target)
        run = RunDir(target)
        if run.is_run() and not (raw.get("output") or {}).get("overwrite"):
            raise RunDirError(
                f"{self.rel(target)} already exists ({run.state()}): pick another run name, "
                f"resume it on the Runs page, or set output.overwrite"
            )
        self.write_config(raw, config.stem)
        job = self.launch("train", argv, target / LOG_NAME, target)
        return job, target

    def refuse_busy(self, target: Path) -> None:
        """RunDirError when a live process trains in `target` (started here or anywhere on this machine)."""
        run = RunDir(target)
        if run.state() == "running":
            pid = (run.lock_info() or run.status()).get("pid")
            raise RunDirError(
                f"{self.rel(target)} is in use by a running training (PID {pid}); stop it first "
                f"or choose another run name"
            )
        with self._lock:
            busy = [j for j in self.jobs if j.target == target and j.running()]
        if busy:
            raise RunDirError(f"{self.rel(target)} is being started by PID {busy[0].pid}; wait for it or stop it")

    def resume(self, run: Path) -> Job:
        """`tuneforge train RUN/config.yaml --resume` (the run's own resolved config names its directory)."""
        self.refuse_busy(run)
        state = RunDir(run).state()
        if state in ("completed", "pruned"):
            raise RunDirError(f"{self.rel(run)} is {state}; there is nothing to resume")
        if not RunDir(run).last_checkpoint():
            raise RunDirError(f"{self.rel(run)} has no complete checkpoint to resume from")
        return self.launch("train", self.command("train", str(run / "config.yaml"), "--resume"), run / LOG_NAME, run)

    def stop(self, run: Path, grace: float = 30.0) -> str:
        """End the process training in `run` and everything it started (its process group) with SIGTERM,
        which the engine turns into status `failed: interrupted` (shown as `stopped`); after `grace` seconds
        SIGKILL, and the run is then marked stopped here. Returns the run's state afterwards."""
        rd = RunDir(run)
        pids = set()
        holder = rd.lock_info() or rd.status()
        if rd.state() == "running" and holder.get("pid"):
            pids.add(int(holder["pid"]))
        with self._lock:
            pids.update(j.pid for j in self.jobs if j.target == run and j.running())
        if not pids:
            return rd.state() or "unknown"
        # the processes to wait for: each leader's whole group (what it started, e.g. data loader workers)
        watched = set(pids)
        for pid in pids:
            watched.update(_group_members(pid))
        for pid in pids:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.time() + grace
        while time.time() < deadline and any(pid_alive(p) for p in watched):
            time.sleep(0.2)
        for pid in pids:
            if any(pid_alive(p) for p in watched):
                _signal_group(pid, signal.SIGKILL)
        deadline = time.time() + 5
        while time.time() < deadline and any(pid_alive(p) for p in watched):
            time.sleep(0.1)
        if rd.status().get("state") == "running" and not any(pid_alive(p) for p in pids):
            rd.set_status("failed", error="interrupted")  # killed before it could say so itself
        return rd.state() or "unknown"

    def stop_job(self, job: Job, grace: float = 10.0) -> None:
        _signal_group(job.pid, signal.SIGTERM)
        deadline = time.time() + grace
        while time.time() < deadline and job.running():
            time.sleep(0.1)
        if job.running():
            _signal_group(job.pid, signal.SIGKILL)

    def run_command(self, kind: str, argv: list[str], log: Path, timeout: float = 3600) -> str:
        """Start a command like `launch` and wait for it; returns the log's tail. Raises CommandError with the
        command's own error line when it fails (or `timed out` after `timeout` seconds)."""
        job = self.launch(kind, argv, log)
        try:
            job.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop_job(job)
            raise CommandError(f"{kind} timed out after {timeout:.0f} s (log: {log})") from None
        tail = self.log_tail(log)
        if job.proc.returncode != 0:
            lines = [line for line in tail.splitlines() if line.strip() and not line.startswith("$ ")]
            errors = [line for line in lines if line.startswith("error:")]
            raise CommandError((errors or lines or [f"{kind} failed"])[-1].removeprefix("error: "))
        return tail

    def stamp(self) -> str:
        return datetime.now().strftime("%Y%m%d-%H%M%S")


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


_IMAGE_LINE = re.compile(r"^\s*!\[[^\]]*\]\([^)]*\)\s*$", re.M)


def without_images(markdown: str) -> str:
    """A report's Markdown without its image lines: their relative links do not resolve in the page, which
    shows the PNGs in image components instead."""
    return _IMAGE_LINE.sub("", markdown)


def error_text(exc: BaseException) -> str:
    """One line for the page: the message of a TuneforgeError or of a ValueError (what the pages raise for input
    they cannot use), else the exception's type and first line."""
    if isinstance(exc, (TuneforgeError, ValueError)):
        return " ".join(str(exc).split())
    return first_line(exc, with_type=True)
