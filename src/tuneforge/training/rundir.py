"""The run directory: the contract every feature keeps.

    config.yaml        resolved config            status.json     running / completed / failed (+ error) / pruned
    metrics.jsonl      one row per log step       efficiency.json time, throughput, memory, parameters
    eval/              metrics.json, report.md, plots
    model/             loadable artefacts + tuneforge.json (task, method, base model, labels)
    checkpoints/       Trainer checkpoints for --resume (each complete one holds tuneforge-complete.json)
    run.lock           while a process trains here: its PID, host and start time

Safety rules kept here:
- a directory that is not a tuneforge run (no status.json with a state) is never written into or deleted;
- `output.overwrite` trains the new run beside the old one (`.<name>.overwrite/<name>`) and swaps it in only
  when it completes: a failed or killed attempt leaves the old run as it was (the attempt stays there, findable,
  until the next overwrite of the same run replaces it, or `--resume` continues it);
- one live process per run directory (run.lock); a lock or a `running` status whose PID is dead on this host
  is stale, and such a run reads as `interrupted`;
- a checkpoint counts only once complete (see `checkpoint_is_complete`).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import time
from datetime import datetime
from pathlib import Path

from tuneforge.errors import RunDirError

#: `pruned`: stopped early by a search (tuneforge search) because its validation metric lagged; never `completed`
STATES = ("running", "completed", "failed", "pruned")
LOCK_NAME = "run.lock"
CHECKPOINT_MARKER = "tuneforge-complete.json"
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
    LOCK_NAME,
}
# a directory holding only these may become a run: `tuneforge compare` opens the log of a run before training it
FRESH_OK = {"train.log"}
WEIGHT_FILES = (
    "model.safetensors",
    "adapter_model.safetensors",
    "pytorch_model.bin",
    "adapter_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def write_json(path: str | Path, data) -> None:
    """Atomic write: a reader never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def pid_alive(pid) -> bool:
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


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_start": process_start(os.getpid())}


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


def checkpoint_step(path: Path) -> int | None:
    name = path.name
    if not name.startswith("checkpoint-") or not name[len("checkpoint-") :].isdigit():
        return None
    return int(name[len("checkpoint-") :])


def checkpoint_is_complete(path: Path) -> bool:
    """A checkpoint is complete when tuneforge marked it after the Trainer finished writing it, or (checkpoints
    written before the marker existed, or a kill between the Trainer's last write and the marker) when it
    holds weights and a readable trainer_state.json for its step: transformers writes that file last and
    writes every file in place (no staging directory), so a half-written checkpoint lacks it or has it cut."""
    step = checkpoint_step(path)
    if step is None or not path.is_dir():
        return False
    if (path / CHECKPOINT_MARKER).is_file():
        return True
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return state.get("global_step") == step and any((path / w).is_file() for w in WEIGHT_FILES)


def read_dict(path: Path) -> dict:
    """A JSON object written by tuneforge, or {} when it is missing, cut by a kill, or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class RunDir:
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
        data = {**self.status(), "state": state, **extra, "updated_at": _now()}
        if state != "failed":
            data.pop("error", None)
        write_json(self.status_file, data)

    def lock_info(self) -> dict:
        return read_dict(self.lock_file)

    @staticmethod
    def _holder_alive(info: dict) -> bool:
        """Whether the process named by a lock or status is alive; one on another host is taken as alive."""
        if info.get("host") not in (None, socket.gethostname()):
            return True
        if not pid_alive(info.get("pid")):
            return False
        started = info.get("pid_start")
        return started is None or process_start(info.get("pid")) in (None, started)  # else: the PID was reused

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
            return "running" if self._holder_alive(holder) else "interrupted"
        if state == "failed" and status.get("error") == "interrupted":
            return "stopped"
        return state

    # the live-run lock
    def acquire_lock(self) -> None:
        """Take run.lock (atomic create). A lock of a live process is a one-line RunDirError; a lock whose PID is
        dead on this host is stale and replaced."""
        me = {**_me(), "started_at": _now()}
        for _ in range(40):
            try:
                fd = os.open(self.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.lock_info()
                if not info:  # being written this instant (wait), or left empty by a kill (then stale)
                    try:
                        age = datetime.now().timestamp() - self.lock_file.stat().st_mtime
                    except OSError:
                        continue
                    if age < 2:
                        time.sleep(0.1)
                        continue
                elif self._holder_alive(info):
                    raise RunDirError(
                        f"{self.path} is in use by PID {info.get('pid')} on {info.get('host')} since "
                        f"{info.get('started_at')}; wait for it or stop it (if that process is gone, delete "
                        f"{self.lock_file})"
                    ) from None
                self.lock_file.unlink(missing_ok=True)  # stale
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self._lock_path = self.lock_file
            return
        raise RunDirError(f"could not take {self.lock_file}: another process is starting in {self.path}")

    def release_lock(self) -> None:
        """Remove our lock (only ours: another process's lock is left alone). Safe to call more than once."""
        path, self._lock_path = self._lock_path, None
        if path is None:
            return
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            path.unlink(missing_ok=True)

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
    def resolve_target(cls, cfg, resume: bool = False) -> Path:
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
    def for_config(cls, cfg, resume: bool = False) -> RunDir:
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

    def _decide(self, cfg, resume: bool, fresh: bool) -> RunDir:
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
            "running", **_me(), started_at=_now(), **({"replaces": str(self.target)} if self.staged else {})
        )
        self.config.write_text(config_yaml)

    def fail(self, message: str) -> None:
        self.set_status("failed", error=message)

    def complete(self, **extra) -> None:
        """Mark the run completed and, for an overwrite, swap it into place of the run it replaces."""
        self.set_status("completed", finished_at=_now(), **extra)
        if self.staged:
            self._swap_in()

    def prune(self, step: int, **extra) -> None:
        """Mark the run pruned at `step` (stopped early by a search; it has no final model) and, for an overwrite,
        swap it into place like `complete`: it is the run that was asked for, ended early."""
        self.set_status("pruned", pruned_at_step=step, finished_at=_now(), **extra)
        if self.staged:
            self._swap_in()

    def _swap_in(self) -> None:
        new, old = self.path, self.target
        data = self.status()
        data.pop("replaces", None)
        write_json(self.status_file, data)
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
        self.path = old
        self._lock_path = None  # the lock file went with the old run
        shutil.rmtree(holder, ignore_errors=True)
