"""What the web UI does, without the UI: the runs it lists and the processes it starts, in the folders it may touch.

The web UI is a thin client: every training, search, export and server it starts is the command line
(`python -m tuneforge train CONFIG`, ...) in its own process group, with its output in a log file, and every
thing it shows is read back from the files those commands write (status.json, metrics.jsonl, eval/, the
study and report directories). A page reload, a second browser or a restarted web UI finds everything again,
and a run started from the UI is the same run as one started from a shell.

`Workspace` is what the pages use: the folders (webui/sandbox.py: every path a page names must lie inside the
runs directory or a data folder), the commands it started (webui/jobs.py), and runs read through
training/runlist.py.
"""

from __future__ import annotations

import re
import sys
import threading
from datetime import datetime
from pathlib import Path

import yaml

from tuneforge.errors import CommandError, RunDirError, TuneforgeError, first_line
from tuneforge.training.console import CALLER_LOG
from tuneforge.training.rundir import RunDir
from tuneforge.training.runlist import describe, find_runs, interface, log_tail
from tuneforge.training.runlock import pid_alive
from tuneforge.webui import jobs
from tuneforge.webui.jobs import Job
from tuneforge.webui.sandbox import UI_DIR, Sandbox, slug


class Workspace(Sandbox):
    """The runs directory and data folders of one web UI (see Sandbox for the arguments), the runs in it and the
    processes it started."""

    def __init__(self, runs_dir: str | Path, data_dirs=(), cwd: str | Path | None = None):
        super().__init__(runs_dir, data_dirs, cwd)
        self.jobs: list[Job] = []
        self._lock = threading.Lock()

    def runs(self) -> list[dict]:
        """Every run under the runs directory (started here or from the command line), newest first."""
        rows = []
        for p in find_runs(self.runs_dir, max_depth=5):
            if UI_DIR in p.relative_to(self.runs_dir).parts or any(part.endswith(".overwrite") for part in p.parts):
                continue
            row = describe(p)
            row["name"] = self.rel(p)
            row["interface"] = interface(p)
            rows.append(row)
        rows.sort(key=lambda r: r.get("age_seconds") if r.get("age_seconds") is not None else 1e18)
        return rows

    # starting and stopping commands ----------------------------------------------------------------------------
    def command(self, *args: str) -> list[str]:
        """The command line of `tuneforge ARGS` run by this Python."""
        return [sys.executable, "-m", "tuneforge", *args]

    def launch(self, kind: str, argv: list[str], log: Path, target: Path | None = None) -> Job:
        """Start `argv` in its own process group (so Stop ends it and every process it started), output appended
        to `log`; `target`: the run directory it trains in, if any."""
        job = jobs.start(kind, argv, log, self.cwd, target)
        with self._lock:
            self.jobs.append(job)
        return job

    def write_config(self, raw: dict, name: str) -> Path:
        """Write `raw` as RUNS/.webui/configs/<name>.yaml; returns the file."""
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
        from tuneforge.config.overrides import apply_overrides

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
        job = self.launch("train", argv, target / CALLER_LOG, target)
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
        return self.launch("train", self.command("train", str(run / "config.yaml"), "--resume"), run / CALLER_LOG, run)

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
        jobs.end_groups(pids, grace)
        if rd.status().get("state") == "running" and not any(pid_alive(p) for p in pids):
            rd.set_status("failed", error="interrupted")  # killed before it could say so itself
        return rd.state() or "unknown"

    def run_command(self, kind: str, argv: list[str], log: Path, timeout: float = 3600) -> str:
        """Start a command like `launch` and wait for it; returns the log's tail. Raises CommandError with the
        command's own error line when it fails (or `timed out` after `timeout` seconds)."""
        job = self.launch(kind, argv, log)
        code = job.wait(timeout)
        if code is None:
            job.stop()
            raise CommandError(f"{kind} timed out after {timeout:.0f} s (log: {log})")
        tail = log_tail(log)
        if code != 0:
            lines = [line for line in tail.splitlines() if line.strip() and not line.startswith("$ ")]
            errors = [line for line in lines if line.startswith("error:")]
            raise CommandError((errors or lines or [f"{kind} failed"])[-1].removeprefix("error: "))
        return tail

    def stamp(self) -> str:
        """Now, as a name for a report or data folder (`20250101-120000`)."""
        return datetime.now().strftime("%Y%m%d-%H%M%S")


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
