"""Whether a study's running trials are still alive: a running trial records its heartbeat and whose process runs
it; a trial whose process died is marked FAIL (with its run directory) so that it does not count; and one worker
of this machine at a time asks for a new trial."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from pathlib import Path

#: seconds between a running trial's heartbeats, and how old a heartbeat may be before its trial is stale
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60


def trial_id(t) -> int:
    """The storage's id of a trial (what the storage's per-trial calls take; Optuna keeps it private)."""
    return t._trial_id


def reclaim_stale(study) -> list[int]:
    """Mark FAIL the RUNNING trials whose process is gone: at once for a process of this host (its PID is dead or
    reused), else through Optuna's heartbeat once it is older than the grace period. Their run directories then
    say `failed`. Returns the trial numbers marked."""
    import optuna
    from optuna.trial import TrialState

    from tuneforge.training.rundir import RunDir
    from tuneforge.training.runlock import pid_alive, process_start

    storage = study._storage
    marked = []
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with contextlib.suppress(Exception):
        optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        a = t.user_attrs
        if "pid" in a:
            gone = a.get("host") == host and (
                not pid_alive(a.get("pid")) or a.get("pid_start") not in (None, process_start(a.get("pid")))
            )
        else:  # asked but killed before it said whose it is
            started = t.datetime_start.timestamp() if t.datetime_start else now
            gone = now - started > GRACE_SECONDS
        if gone:
            with contextlib.suppress(Exception):
                storage.set_trial_user_attr(trial_id(t), "error", "its process died (killed or crashed)")
                storage.set_trial_state_values(trial_id(t), TrialState.FAIL)
    now_trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number in sorted(n for n in before if now_trials[n].state != TrialState.RUNNING):
        marked.append(number)
        path = now_trials[number].user_attrs.get("run_dir")
        run = RunDir(path) if path else None
        if run is not None and run.state() in ("interrupted", "running"):
            with contextlib.suppress(OSError):
                run.fail("killed: the search process died during this trial (marked failed in the study)")
    return marked


def claim(trial, worker: int) -> None:
    """Record on a new trial whose process runs it (what reclaim_stale reads to tell that the process died)."""
    from tuneforge.training.runlock import process_start

    for key, value in (
        ("worker", worker),
        ("pid", os.getpid()),
        ("host", socket.gethostname()),
        ("pid_start", process_start(os.getpid())),
    ):
        trial.set_user_attr(key, value)


@contextlib.contextmanager
def ask_lock(study_dir: Path):
    """One worker of this machine at a time counts the trials and asks for a new one (so K local workers never
    start more trials than --trials)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    with open(study_dir / ".ask.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Heartbeat:
    """Records a running trial's heartbeat in the storage every HEARTBEAT_SECONDS (Optuna's stale-trial check)."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="tuneforge-heartbeat")

    def _beat(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                self.storage.record_heartbeat(self.trial_id)
            self.stop.wait(HEARTBEAT_SECONDS)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)
