"""The run directory: the contract every feature keeps.

    config.yaml        resolved config            status.json     running / completed / failed (+ error) / pruned
    metrics.jsonl      one row per log step       efficiency.json time, throughput, memory, parameters
    eval/              metrics.json, report.md, plots
    model/             loadable artefacts + tuneforge.json (task, method, base model, labels)
    checkpoints/       Trainer checkpoints for --resume (each complete one holds tuneforge-complete.json)
    run.lock           while a process trains here: its PID, host and start time

Safety rules kept here, with the modules each rule has (overwrite.py, runlock.py, checkpoints.py):
- a directory that is not a tuneforge run (no status.json with a state) is never written into or deleted;
- `output.overwrite` trains the new run beside the old one (`.<name>.overwrite/<name>`) and swaps it in only
  when it completes: a failed or killed attempt leaves the old run as it was (the attempt stays there, findable,
  until the next overwrite of the same run replaces it, or `--resume` continues it);
- one live process per run directory (run.lock); a lock or a `running` status whose PID is dead on this host
  is stale, and such a run reads as `interrupted`;
- a checkpoint counts only once complete (see `checkpoints.checkpoint_is_complete`).
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.errors import RunDirError
from tuneforge.training.checkpoints import checkpoint_is_complete, checkpoint_step
from tuneforge.training.console import CALLER_LOG
from tuneforge.training.jsonfile import now, read_dict, write_json
from tuneforge.training.overwrite import swap_in
from tuneforge.training.runlock import LOCK_NAME, drop_lock, holder_alive, take_lock, this_process

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig

#: `pruned`: stopped early by a search (tuneforge search) because its validation metric lagged; never `completed`
STATES = ("running", "completed", "failed", "pruned")
# a directory holding only these may become a run: `tuneforge compare` opens the log of a run before training it
FRESH_OK = {CALLER_LOG}


class RunDir:
    """A run directory: its files, status and state, lock, checkpoints, and where a run of a config goes."""

    def __init__(self, path: str | Path, target: str | Path | None = None):
        self.path = Path(path)  # where this process writes
        # where the run ends up: the same directory, or the run it replaces when it completes (overwrite)
        self.target = Path(target) if target is not None else self.path
        self._lock_path: Path | None = None

    # paths
    config = property(lambda self: self.path / "config.yaml")
    status_file = property(lambda self: self.path / "status.json")
    metrics_log = property(lambda self: self.path / "metrics.jsonl")
    efficiency = property(lambda self: self.path / "efficiency.json")
    eval_dir = property(lambda self: self.path / "eval")
    model_dir = property(lambda self: self.path / "model")
    checkpoints = property(lambda self: self.path / "checkpoints")
    lock_file = property(lambda self: self.path / LOCK_NAME)

    @property
    def staged(self) -> bool:
        return self.path != self.target

    @staticmethod
    def attempt_holder(target: Path) -> Path:
        """Where an overwrite of `target` trains until it completes (the inner directory keeps the run's name)."""
        return target.parent / f".{target.name}.overwrite"

    # status
    def status(self) -> dict:
        return read_dict(self.status_file)

    def is_run(self) -> bool:
        """Written by tuneforge: a status.json with a known state."""
        return self.status().get("state") in STATES

    def set_status(self, state: str, **extra) -> None:
        data = {**self.status(), "state": state, **extra, "updated_at": now()}
        if state != "failed":
            data.pop("error", None)
        write_json(self.status_file, data)

    def lock_info(self) -> dict:
        return read_dict(self.lock_file)

    def state(self) -> str | None:
        """The run's state as a user should read it: running / interrupted / completed / pruned / failed / stopped
        (failed by Ctrl-C or SIGTERM); None when this is not a run. status.json saying `running` while its
        process is dead (killed, out of memory, power cut) is `interrupted`."""
        status = self.status()
        state = status.get("state")
        if state not in STATES:
            return None
        if state == "running":
            holder = self.lock_info() or status
            return "running" if holder_alive(holder) else "interrupted"
        if state == "failed" and status.get("error") == "interrupted":
            return "stopped"
        return state

    # the live-run lock
    def acquire_lock(self) -> None:
        """Take run.lock (atomic create). A lock of a live process is a one-line RunDirError; a lock whose PID is
        dead on this host is stale and replaced."""
        take_lock(self.lock_file, self.path)
        self._lock_path = self.lock_file

    def release_lock(self) -> None:
        """Remove our lock (only ours: another process's lock is left alone). Safe to call more than once."""
        path, self._lock_path = self._lock_path, None
        if path is not None:
            drop_lock(path)

    # checkpoints
    def checkpoint_dirs(self) -> list[Path]:
        if not self.checkpoints.is_dir():
            return []
        found = [p for p in self.checkpoints.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
        return sorted(found, key=checkpoint_step)

    def last_checkpoint(self) -> str | None:
        """The newest complete checkpoint; half-written ones (a kill during a save) are never picked."""
        complete = [p for p in self.checkpoint_dirs() if checkpoint_is_complete(p)]
        return str(complete[-1]) if complete else None

    def drop_incomplete_checkpoints(self) -> list[str]:
        """Remove half-written checkpoints (before resuming: the Trainer would otherwise count them when it
        rotates checkpoints, and write its next save into the debris of one)."""
        dropped = []
        for p in self.checkpoint_dirs():
            if not checkpoint_is_complete(p):
                shutil.rmtree(p, ignore_errors=True)
                dropped.append(p.name)
        return dropped

    # choosing the directory
    @classmethod
    def resolve_target(cls, cfg: RunConfig, resume: bool = False) -> Path:
        """Where a run of `cfg` goes, without creating or locking anything: `output.dir`; with `resume`, the newest
        unfinished `runs/<name>-*`; else a new `runs/<name>-<timestamp>` (the multi-process launcher fixes it
        this way for all its processes before they start)."""
        name = cfg.output.name or "run"
        if cfg.output.dir:
            return Path(cfg.output.dir)
        if resume:
            candidates = sorted(Path("runs").glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
            candidates = [p for p in candidates if cls(p).state() not in (None, "completed", "pruned")]
            if not candidates:
                raise RunDirError(
                    f"--resume: no unfinished run named '{name}' under runs/ (set output.dir to choose one)"
                )
            return candidates[-1]
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        target = Path("runs") / f"{name}-{stamp}"
        i = 1
        while target.exists():
            target = Path("runs") / f"{name}-{stamp}-{i}"
            i += 1
        return target

    @classmethod
    def for_config(cls, cfg: RunConfig, resume: bool = False) -> RunDir:
        """Pick the run directory for a config and take its lock (release it with `release_lock`).
        Never overwrites a run silently, never touches a directory that is not a run, and with
        output.overwrite returns a RunDir that trains beside the old run (swapped in by `complete`)."""
        target = cls.resolve_target(cfg, resume)
        run = cls(target)
        if target.exists() and not target.is_dir():
            raise RunDirError(f"run directory {target} exists and is not a directory")
        # empty, or only a log opened for this run, or only a lock (a start killed before its status.json)
        fresh = not target.exists() or {p.name for p in target.iterdir()} <= FRESH_OK | {LOCK_NAME}
        if not fresh and not run.is_run():
            raise RunDirError(
                f"{target} exists and is not a tuneforge run (no status.json); tuneforge never "
                f"writes into or deletes it: choose another output.dir"
            )
        if resume and fresh:
            raise RunDirError(f"--resume: {target} holds no run to continue")
        target.mkdir(parents=True, exist_ok=True)
        run.acquire_lock()
        try:
            return run._decide(cfg, resume, fresh)
        except BaseException:
            run.release_lock()
            raise

    def _decide(self, cfg: RunConfig, resume: bool, fresh: bool) -> RunDir:
        """With our lock held: resume / fresh start / staged overwrite / refusal."""
        target, state = self.target, self.state()
        holder = self.attempt_holder(target)
        attempt = RunDir(holder / target.name, target=target)
        if attempt.state() == "completed":
            # an overwrite that completed but was killed before it replaced the old run: finish the swap
            attempt._swap_in()
            self.acquire_lock()  # ours went away with the old run
            state = self.state()
        if resume:
            # an overwrite of this run that was killed or failed is what the user last asked for: continue it
            if attempt.state() in ("interrupted", "failed", "stopped") and attempt.last_checkpoint():
                attempt._lock_path = self._lock_path
                return attempt
            if state == "completed":
                hint = (
                    f" (an unfinished overwrite of it is in {attempt.path}, without a checkpoint)"
                    if attempt.is_run()
                    else ""
                )
                raise RunDirError(f"{target} is already completed; nothing to resume{hint}")
            if self.last_checkpoint() is None:
                raise RunDirError(f"--resume: {target} ({state}) has no complete checkpoint to continue from")
            return self
        if fresh:
            return self
        if not cfg.output.overwrite:
            raise RunDirError(
                f"run directory {target} already exists ({state}); use --resume to continue it, "
                f"or output.overwrite=true to replace it"
            )
        # train beside the old run; it is replaced only when the new one completes
        shutil.rmtree(holder, ignore_errors=True)  # a previous failed attempt; our lock on target covers it
        attempt.path.mkdir(parents=True)
        attempt._lock_path = self._lock_path
        return attempt

    # life cycle
    def start(self, config_yaml: str) -> None:
        self.set_status(
            "running", **this_process(), started_at=now(), **({"replaces": str(self.target)} if self.staged else {})
        )
        self.config.write_text(config_yaml)

    def fail(self, message: str) -> None:
        self.set_status("failed", error=message)

    def complete(self, **extra) -> None:
        """Mark the run completed and, for an overwrite, swap it into place of the run it replaces."""
        self.set_status("completed", finished_at=now(), **extra)
        if self.staged:
            self._swap_in()

    def prune(self, step: int, **extra) -> None:
        """Mark the run pruned at `step` (stopped early by a search; it has no final model) and, for an overwrite,
        swap it into place like `complete`: it is the run that was asked for, ended early."""
        self.set_status("pruned", pruned_at_step=step, finished_at=now(), **extra)
        if self.staged:
            self._swap_in()

    def _swap_in(self) -> None:
        data = self.status()
        data.pop("replaces", None)
        write_json(self.status_file, data)
        swap_in(self.path, self.target)
        self.path = self.target
        self._lock_path = None  # the lock file went with the old run
