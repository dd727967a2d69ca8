"""The search's workers: one worker runs trials until the study has enough; `--workers K` starts K-1 more as
processes of their own (`python -m tuneforge search ... --worker-internal N`) that share the study through its
storage, and the search waits for them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tuneforge.errors import TuneforgeError
from tuneforge.search import space as sp
from tuneforge.search.liveness import Heartbeat, ask_lock, claim, reclaim_stale, trial_id
from tuneforge.search.plan import Plan
from tuneforge.search.storage import counts, make_sampler, open_study
from tuneforge.search.trial import run_trial, trial_dir

#: a worker stops after this many trials in a row failed (a config that cannot train would loop forever)
MAX_CONSECUTIVE_FAILURES = 3
#: how long the search waits for its worker processes to be ready before it starts its own trials
READY_WAIT_SECONDS = 120


def run_worker(
    plan: Plan,
    worker: int = 0,
    deadline: float | None = None,
    echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> int:
    """Run trials until the study has plan.trials finished ones (or the deadline passes). Returns how many trials
    this worker ran.

    Raises TuneforgeError when MAX_CONSECUTIVE_FAILURES trials in a row fail; KeyboardInterrupt after marking the
    trial it interrupts FAIL."""
    from optuna.trial import TrialState

    study = open_study(plan, create=False, offset=0)
    study.sampler = make_sampler(plan, offset=7919 * worker + len(study.get_trials(deepcopy=False)))
    if worker > 0:  # a worker process: say when it can train (the search waits for that to start its own trials)
        import tuneforge.training.engine  # noqa: F401

        _ready_file(plan, worker).write_text(str(os.getpid()))
    ran, failures = 0, 0
    while True:
        with ask_lock(plan.study_dir):
            reclaim_stale(study)
            done, running = counts(study)
            if done + running >= plan.trials or (deadline is not None and time.time() >= deadline):
                break
            if plan.sampler == "grid" and done + running >= sp.grid_size(plan.params):
                break
            trial = study.ask()
            claim(trial, worker)
        ran += 1
        with Heartbeat(study._storage, trial_id(trial)):
            state, error = run_trial(plan, study, trial, worker)
        if state == TrialState.FAIL:
            failures += 1
            if failures >= MAX_CONSECUTIVE_FAILURES:
                raise TuneforgeError(
                    f"{failures} trials in a row failed (last, trial {trial.number}: {error}); "
                    f"see {trial_dir(plan.study_dir, trial.number) / 'train.log'}"
                )
        else:
            failures = 0
    return ran


def _worker_args(argv: list[str], worker: int, deadline: float | None) -> list[str]:
    args = [a for a in argv]
    out = [sys.executable, "-m", "tuneforge", "search", *args, "--worker-internal", str(worker)]
    if deadline is not None:
        out += ["--deadline-internal", f"{deadline:.3f}"]
    return out


def _die_with_parent() -> None:
    """In a worker process: end when the search process ends (Linux), so a killed search leaves no trial orphaned."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _ready_file(plan: Plan, worker: int) -> Path:
    """The file a worker process writes once it can train."""
    return plan.study_dir / f".worker-{worker}.ready"


def run_workers(plan: Plan, argv: list[str], deadline: float | None, echo: Callable[[str], None]) -> None:
    """Workers 1..K-1 in processes of their own (`tuneforge search ... --worker-internal N`), worker 0 in this one;
    all share the study through its storage."""
    env = {**os.environ, "TUNEFORGE_SEARCH_WORKER": "1"}
    procs = []
    try:
        for w in range(1, plan.workers):
            _ready_file(plan, w).unlink(missing_ok=True)
            procs.append(subprocess.Popen(_worker_args(argv, w, deadline), env=env, preexec_fn=_die_with_parent))
        # start together: a worker process needs seconds to import the training stack, in which this one would
        # otherwise take the first trials alone
        wait_until = time.time() + READY_WAIT_SECONDS
        while time.time() < wait_until and not all(
            _ready_file(plan, w).is_file() or procs[w - 1].poll() is not None for w in range(1, plan.workers)
        ):
            time.sleep(0.2)
        run_worker(plan, 0, deadline, echo)
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            with contextlib.suppress(OSError):
                p.send_signal(signal.SIGINT)
        for p in procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=60)
        raise
    finally:
        for w in range(1, plan.workers):
            _ready_file(plan, w).unlink(missing_ok=True)
    bad = [(w, c) for w, c in enumerate(codes, start=1) if c != 0]
    done, _ = counts(open_study(plan, create=False))
    if bad and done < plan.trials:
        raise TuneforgeError(
            f"worker(s) {', '.join(f'{w} (exit {c})' for w, c in bad)} stopped early; the study "
            f"has {done} of {plan.trials} finished trials (run the same command to continue)"
        )
