"""`tuneforge search`: hyperparameter search over normal runs, with Optuna as the sampler, pruner and (through its
RDB storage) the distributed engine.

One search is an Optuna study in a storage (default: SQLite in the study directory) plus a study directory:

    STUDY_DIR/study.db          the default storage: an interrupted search continues when run again
    STUDY_DIR/search.json       the study's name, storage (without password), objectives and space
    STUDY_DIR/trials/trial-N/   one normal run directory per trial (its train.log holds the trial's output)
    STUDY_DIR/trials.csv, best.yaml, test.json, report.html, plots/   written when the search ends (report.py)

Trials run in-process in each worker; `--workers K` starts K worker processes on this machine that share the
study through its storage; workers on other machines join with the same command and `--storage`.

`--trials N` is the number of finished (complete or pruned) trials the study should have: a search that was
killed continues until it has N. A trial whose process died stays RUNNING in the storage; it is marked FAIL
when a search starts again (at once for a process of this host that is gone, through Optuna's heartbeat after
the grace period for one of another host) and does not count.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config.loader import apply_overrides, load_config, read_yaml, validate_config
from tuneforge.errors import ConfigError, RunDirError, TuneforgeError, first_line
from tuneforge.search import space as sp

SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp")
PRUNERS = ("median", "hyperband", "none")
OBJECTIVES = ("quality", "quality,time", "quality,params")
#: seconds between a running trial's heartbeats, and how old a heartbeat may be before its trial is stale
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
#: a worker stops after this many trials in a row failed (a config that cannot train would loop forever)
MAX_CONSECUTIVE_FAILURES = 3
#: how long the search waits for its worker processes to be ready before it starts its own trials
READY_WAIT_SECONDS = 120
SPACE_ATTR = "tuneforge_space"


@dataclass
class Plan:
    """Everything a worker needs, built from the command line (the same way in every worker)."""

    config: str
    space_file: str
    params: list
    base: dict  # the base raw config, overrides applied
    study_name: str
    study_dir: Path
    storage: str
    trials: int
    timeout: float | None
    workers: int
    sampler: str
    pruner: str
    objectives: list[str]
    seed: int
    metric: str
    greater: bool
    task: str
    overrides: list[str] = field(default_factory=list)

    @property
    def directions(self) -> list[str]:
        return ["maximize" if self.greater else "minimize"] + ["minimize"] * (len(self.objectives) - 1)

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def argv(self) -> list[str]:
        """`tuneforge search` arguments that make this plan again (what worker processes are started with)."""
        return [
            self.config,
            *self.overrides,
            "--space",
            self.space_file,
            "--trials",
            str(self.trials),
            "--study",
            self.study_name,
            "--dir",
            str(self.study_dir),
            "--storage",
            self.storage,
            "--workers",
            str(self.workers),
            "--sampler",
            self.sampler,
            "--pruner",
            self.pruner,
            "--objectives",
            ",".join(self.objectives),
            "--seed",
            str(self.seed),
        ]


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{study_dir.resolve() / 'study.db'}"


def redact(url: str) -> str:
    """A storage URL without its password (for files and messages)."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    cred, host = rest.split("@", 1)
    user, has_password, _ = cred.partition(":")
    return f"{head}://{user}{':***' if has_password else ''}@{host}"


def make_plan(
    config: str,
    space_file: str,
    overrides=(),
    trials: int = 20,
    timeout: float | None = None,
    study: str | None = None,
    study_dir: str | None = None,
    storage: str | None = None,
    workers: int = 1,
    sampler: str = "tpe",
    pruner: str | None = None,
    objectives: str = "quality",
    seed: int | None = None,
    validate: bool = True,
) -> Plan:
    """Read the base config and the space, check the options, and (with `validate`) check every key and range of
    the space against the config.

    Raises ConfigError (one line) for anything the user must fix before the first trial."""
    from tuneforge.registry import TASKS

    if not Path(config).is_file():
        raise ConfigError(
            f"config {config} does not exist" if not Path(config).exists() else f"config {config} is not a file"
        )
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    from tuneforge.registry import closest

    if sampler not in SAMPLERS:
        raise ConfigError(
            f"--sampler: unknown sampler '{sampler}'{closest(sampler, SAMPLERS)}; available: {', '.join(SAMPLERS)}"
        )
    objs = [o.strip() for o in objectives.split(",") if o.strip()]
    if ",".join(objs) not in OBJECTIVES:
        raise ConfigError(f"--objectives: '{objectives}' is not one of {', '.join(OBJECTIVES)}")
    multi = len(objs) > 1
    if pruner is None:
        pruner = "none" if multi else "median"
    if pruner not in PRUNERS:
        raise ConfigError(
            f"--pruner: unknown pruner '{pruner}'{closest(pruner, PRUNERS)}; available: {', '.join(PRUNERS)}"
        )
    if multi and pruner != "none":
        raise ConfigError(
            f"--pruner {pruner}: Optuna prunes single-objective studies only; with --objectives "
            f"{objectives} use --pruner none"
        )
    if multi and sampler == "cmaes":
        raise ConfigError(
            "--sampler cmaes optimises a single objective; with several --objectives use tpe, random or gp"
        )

    base = apply_overrides(read_yaml(config), overrides)
    cfg = validate_config(copy.deepcopy(base))
    params = sp.load_space(space_file)
    if validate:
        sp.validate_space(params, base, where=f"{Path(space_file).name}: ")
        load_config(raw=copy.deepcopy(base))  # can this machine run it (precision, trackers)
    if sampler == "grid":
        sp.grid(params)  # a finite space, or a one-line error
    if cfg.train.eval_strategy == "no":
        raise ConfigError(
            "train.eval_strategy is 'no': a search scores each trial on the validation split during "
            "training; set train.eval_strategy to epoch or steps"
        )
    task_cls = TASKS.get(cfg.task.type)
    metric = cfg.eval.metric
    name = study or sp_stem(config)
    if not name or any(c in name for c in "/\\\x00"):
        raise ConfigError(f"--study: '{name}' is not a usable study name (no slashes)")
    sdir = Path(study_dir) if study_dir else Path("studies") / name
    if sdir.exists() and not sdir.is_dir():
        raise RunDirError(f"--dir: {sdir} exists and is not a directory")
    return Plan(
        config=str(config),
        space_file=str(space_file),
        params=params,
        base=base,
        study_name=name,
        study_dir=sdir,
        storage=storage or default_storage(sdir),
        trials=trials,
        timeout=timeout,
        workers=workers,
        sampler=sampler,
        pruner=pruner,
        objectives=objs,
        seed=seed if seed is not None else cfg.train.seed,
        metric=metric,
        greater=bool(task_cls.metrics.get(metric, True)),
        task=cfg.task.type,
        overrides=list(overrides),
    )


def sp_stem(config: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(config).stem)[:100]


# ---- storage and study ----------------------------------------------------------------------------------------
def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*heartbeat.*")


def open_storage(url: str):
    """Optuna's RDB storage with heartbeats (any SQLAlchemy URL).

    Raises ConfigError when the database cannot be opened or its driver is missing."""
    import optuna

    _quiet_optuna()
    kwargs: dict = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    for attempt in range(3):  # workers that start together race to create the tables: the loser tries again
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS, **kwargs
            )
        except ImportError as exc:
            raise ConfigError(f"--storage {redact(url)}: the database driver is not installed ({exc})") from None
        except Exception as exc:
            if attempt < 2 and not isinstance(exc, (ValueError, TypeError)):
                time.sleep(1 + attempt)
                continue
            raise ConfigError(
                f"--storage {redact(url)}: cannot open the study storage: {first_line(exc, 160)}"
            ) from None


def make_sampler(plan: Plan, offset: int = 0):
    """The Optuna sampler `--sampler` names, seeded with the plan's seed + `offset` (one per worker and start,
    so two workers or a resumed search do not draw the same values).

    Raises ConfigError when the sampler's optional dependency is missing."""
    import optuna

    seed = (plan.seed + offset) % (2**32)
    if plan.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if plan.sampler == "grid":
        return optuna.samplers.GridSampler(sp.grid(plan.params), seed=seed)
    if plan.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ConfigError("--sampler cmaes needs the cmaes package: pip install cmaes") from None
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if plan.sampler == "gp":
        try:
            import scipy  # noqa: F401
        except ImportError:
            raise ConfigError("--sampler gp needs scipy: pip install scipy") from None
        return optuna.samplers.GPSampler(seed=seed)
    # multivariate + group: conditional spaces are modelled per branch; the constant liar keeps parallel workers
    # from all trying the same region
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        constant_liar=plan.workers > 1,
        n_startup_trials=min(10, max(2, plan.trials // 3)),
    )


def make_pruner(plan: Plan):
    import optuna

    if plan.pruner == "median":
        # prune below the median of earlier trials at the same step, once a few trials finished
        return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(2, plan.trials // 4)), n_warmup_steps=0)
    if plan.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(plan: Plan, create: bool = True, offset: int = 0):
    """Create or load the study; refuse one made with a different space or objectives.

    Raises ConfigError for a different space, objectives or metric, or a study not made by tuneforge."""
    import optuna

    storage = open_storage(plan.storage)
    sampler, pruner = make_sampler(plan, offset), make_pruner(plan)
    for attempt in range(3):
        try:
            if create:
                study = optuna.create_study(
                    storage=storage,
                    study_name=plan.study_name,
                    directions=plan.directions,
                    sampler=sampler,
                    pruner=pruner,
                    load_if_exists=True,
                )
            else:
                study = optuna.load_study(study_name=plan.study_name, storage=storage, sampler=sampler, pruner=pruner)
            break
        except KeyError:
            raise ConfigError(f"study '{plan.study_name}' is not in {redact(plan.storage)}") from None
        except Exception:
            if attempt == 2:
                raise
            time.sleep(1 + attempt)
    attrs = study.user_attrs
    mine = sp.fingerprint(plan.params)
    where = f"study '{plan.study_name}' in {redact(plan.storage)}"
    if SPACE_ATTR in attrs:
        if attrs[SPACE_ATTR] != mine:
            raise ConfigError(
                f"{where} was started with a different search space; use another --study name "
                f"(or --dir) for this space, or the original {attrs.get('space_file', 'space')}"
            )
        if attrs.get("objectives") != plan.objectives or attrs.get("metric") != plan.metric:
            raise ConfigError(
                f"{where} optimises {attrs.get('metric')} "
                f"({','.join(attrs.get('objectives') or [])}); this search asks for {plan.metric} "
                f"({','.join(plan.objectives)}): use another --study name"
            )
    elif study.get_trials(deepcopy=False):
        raise ConfigError(f"{where} already has trials that tuneforge did not make; use another --study name")
    elif create:
        for key, value in (
            ("space_file", Path(plan.space_file).name),
            ("space", sp.describe(plan.params)),
            ("objectives", plan.objectives),
            ("metric", plan.metric),
            ("task", plan.task),
            (SPACE_ATTR, mine),
        ):  # the fingerprint last: it marks the study complete
            study.set_user_attr(key, value)
    if list(study.directions) and [d.name.lower() for d in study.directions] != plan.directions:
        raise ConfigError(
            f"{where} has directions {[d.name.lower() for d in study.directions]}, not "
            f"{plan.directions}: use another --study name"
        )
    return study


def _base_hash(plan: Plan) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(plan.base, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_search_json(plan: Plan) -> None:
    from tuneforge.training.rundir import write_json

    write_json(
        plan.study_dir / "search.json",
        {
            "study": plan.study_name,
            "storage": redact(plan.storage),
            "config": plan.config,
            "space_file": plan.space_file,
            "space": sp.describe(plan.params),
            "overrides": plan.overrides,
            "trials": plan.trials,
            "sampler": plan.sampler,
            "pruner": plan.pruner,
            "objectives": plan.objectives,
            "metric": plan.metric,
            "greater_is_better": plan.greater,
            "directions": plan.directions,
        },
    )


# ---- stale trials -----------------------------------------------------------------------------------------------
def _trial_id(t) -> int:
    return t._trial_id


def reclaim_stale(study) -> list[int]:
    """Mark FAIL the RUNNING trials whose process is gone: at once for a process of this host (its PID is dead or
    reused), else through Optuna's heartbeat once it is older than the grace period. Their run directories then
    say `failed`. Returns the trial numbers marked."""
    import optuna
    from optuna.trial import TrialState

    from tuneforge.training.rundir import RunDir, pid_alive, process_start

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
                storage.set_trial_user_attr(_trial_id(t), "error", "its process died (killed or crashed)")
                storage.set_trial_state_values(_trial_id(t), TrialState.FAIL)
    now_trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number in sorted(n for n in before if now_trials[n].state != TrialState.RUNNING):
        marked.append(number)
        path = now_trials[number].user_attrs.get("run_dir")
        run = RunDir(path) if path else None
        if run is not None and run.state() in ("interrupted", "running"):
            with contextlib.suppress(OSError):
                run.fail("killed: the search process died during this trial (marked failed in the study)")
    return marked


def trial_dir(study_dir: Path, number: int) -> Path:
    return study_dir / "trials" / f"trial-{number}"


@contextlib.contextmanager
def _ask_lock(study_dir: Path):
    """One worker of this machine at a time counts the trials and asks for a new one (so K local workers never
    start more trials than --trials)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    with open(study_dir / ".ask.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Heartbeat:
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


# ---- one worker -------------------------------------------------------------------------------------------------
def counts(study) -> tuple[int, int]:
    """(finished: complete + pruned, running) trials of the study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    return done, sum(t.state == TrialState.RUNNING for t in trials)


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
        with _ask_lock(plan.study_dir):
            reclaim_stale(study)
            done, running = counts(study)
            if done + running >= plan.trials or (deadline is not None and time.time() >= deadline):
                break
            if plan.sampler == "grid" and done + running >= sp.grid_size(plan.params):
                break
            trial = study.ask()
            for key, value in (
                ("worker", worker),
                ("pid", os.getpid()),
                ("host", socket.gethostname()),
                ("pid_start", _pid_start()),
            ):
                trial.set_user_attr(key, value)
        ran += 1
        with _Heartbeat(study._storage, _trial_id(trial)):
            state, error = _run_trial(plan, study, trial, worker)
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


def _pid_start():
    from tuneforge.training.rundir import process_start

    return process_start(os.getpid())


def _run_trial(plan: Plan, study, trial, worker: int):
    """Sample, train (output in the trial's train.log), tell the study. Returns (state, error or None)."""
    from optuna.trial import TrialState

    from tuneforge.training.callbacks import PruneCallback
    from tuneforge.training.engine import train

    t0 = time.time()
    run_dir = trial_dir(plan.study_dir, trial.number).resolve()
    values: dict[str, Any] = {}
    try:
        values = sp.sample(trial, plan.params)
        raw = sp.apply(plan.base, values)
        raw["output"] = {
            **(raw.get("output") or {}),
            "dir": str(run_dir),
            "name": f"trial-{trial.number}",
            "overwrite": False,
        }
        trial.set_user_attr("params", values)
        trial.set_user_attr("run_dir", str(run_dir))
        cfg = load_config(raw=raw)
        callbacks = []
        if not plan.multi and plan.pruner != "none":

            def report(step: int, value: float) -> bool:
                trial.report(value, step)
                return trial.should_prune()

            callbacks.append(PruneCallback(plan.metric, report))
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "train.log", "a") as log, _trial_output(log):
            result = train(cfg, callbacks=callbacks, evaluate_test=False)
    except KeyboardInterrupt:
        _tell(study, trial, TrialState.FAIL, error="interrupted")
        raise
    except TuneforgeError as exc:
        _tell(study, trial, TrialState.FAIL, error=str(exc))
        _progress(plan, study, trial, values, time.time() - t0, failed=str(exc))
        return TrialState.FAIL, str(exc)
    except Exception as exc:
        msg = first_line(exc, with_type=True)
        _tell(study, trial, TrialState.FAIL, error=msg)
        _progress(plan, study, trial, values, time.time() - t0, failed=msg)
        return TrialState.FAIL, msg
    seconds = time.time() - t0
    trial.set_user_attr("seconds", round(seconds, 2))
    val = result.metrics.get("validation") or {}
    quality = val.get(plan.metric)
    if result.pruned_at_step is not None:
        trial.set_user_attr("pruned_at_step", result.pruned_at_step)
        _tell(study, trial, TrialState.PRUNED)
        _progress(plan, study, trial, values, seconds, pruned=result.pruned_at_step, quality=quality)
        return TrialState.PRUNED, None
    if not isinstance(quality, (int, float)) or math.isnan(float(quality)):
        msg = (
            f"the run has no validation {plan.metric} (does the config hold out a validation split? "
            f"data.split.validation)"
        )
        _tell(study, trial, TrialState.FAIL, error=msg)
        _progress(plan, study, trial, values, seconds, failed=msg)
        return TrialState.FAIL, msg
    objectives = [float(quality)]
    for extra in plan.objectives[1:]:
        if extra == "time":
            objectives.append(float(result.efficiency.get("train_seconds") or seconds))
        else:
            objectives.append(float(result.efficiency.get("trainable_params") or 0))
    trial.set_user_attr("train_seconds", result.efficiency.get("train_seconds"))
    trial.set_user_attr("trainable_params", result.efficiency.get("trainable_params"))
    _tell(study, trial, TrialState.COMPLETE, values=objectives if plan.multi else objectives[0])
    _progress(plan, study, trial, values, seconds, quality=quality)
    return TrialState.COMPLETE, None


@contextlib.contextmanager
def _trial_output(stream):
    """A trial's output (the engine's lines, its log messages) goes to its train.log; the terminal keeps one
    progress line per trial."""
    import logging

    logger = logging.getLogger("tuneforge")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("tuneforge: %(message)s"))
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with contextlib.redirect_stderr(stream), contextlib.redirect_stdout(stream):
            yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _tell(study, trial, state, values=None, error: str | None = None) -> None:
    if error is not None:
        with contextlib.suppress(Exception):
            trial.set_user_attr("error", error[:500])
    try:
        study.tell(trial, values, state=state)
    except Exception:
        pass


def format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if (abs(v) < 1e-3 or abs(v) >= 1e4) and v != 0 else f"{v:.4g}"
    return str(v)


def format_params(values: dict) -> str:
    return " ".join(f"{sp.short(k)}={format_value(v)}" for k, v in values.items())


def _progress(
    plan: Plan,
    study,
    trial,
    values: dict,
    seconds: float,
    quality=None,
    pruned: int | None = None,
    failed: str | None = None,
) -> None:
    """One line per finished trial: `trial 3/10: accuracy=0.8123 (best 0.8200, trial 1) lr=... 42s`."""
    from optuna.trial import TrialState

    done, _ = counts(study)
    head = f"trial {done}/{plan.trials} (#{trial.number})"
    if failed is not None:
        line = f"{head}: failed: {' '.join(failed.split())[:200]} {format_params(values)} {seconds:.0f}s"
    else:
        shown = f"{plan.metric}={quality:.4f}" if isinstance(quality, (int, float)) else f"{plan.metric}=?"
        best = ""
        complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if complete:
            if plan.multi:
                best = f" (Pareto front: {len(study.best_trials)} trials)"
            else:
                b = study.best_trial
                best = f" (best {b.value:.4f}, trial {b.number})"
        line = f"{head}: {shown}{best} {format_params(values)} {seconds:.0f}s"
        if pruned is not None:
            line += f" [pruned at step {pruned}]"
    print(" ".join(line.split()), file=sys.stderr, flush=True)


# ---- the whole search -----------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    study_dir: Path
    finished: int
    best: dict | None
    files: dict


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


def search(
    plan: Plan,
    argv: list[str] | None = None,
    echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> SearchResult:
    """Create or continue the study, run its trials (in this process, or `plan.workers` worker processes started
    with `argv`, the search's own command-line arguments), then write trials.csv, best.yaml, test.json, plots and
    report.html.

    Raises ConfigError / RunDirError for problems found before the first trial, TuneforgeError when every trial
    fails, KeyboardInterrupt on Ctrl-C (the interrupted trial is marked FAIL; running the command again
    continues)."""
    from tuneforge.search.report import write_outputs

    info_file = plan.study_dir / "search.json"
    if info_file.is_file():
        try:
            owner = json.loads(info_file.read_text()).get("study")
        except ValueError:
            owner = None
        if owner not in (None, plan.study_name):
            raise RunDirError(
                f"{plan.study_dir} holds study '{owner}' (its trials/ are that study's runs); give "
                f"study '{plan.study_name}' another --dir"
            )
    plan.study_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(plan, create=True)
    base_hash = _base_hash(plan)
    if study.user_attrs.get("base_config") not in (None, base_hash):
        echo(
            "tuneforge: warning: the base config (or its overrides) differs from the one this study started with; "
            "the trials of both count in one study"
        )
    study.set_user_attr("base_config", base_hash)
    write_search_json(plan)
    if plan.sampler == "grid" and plan.trials > sp.grid_size(plan.params):
        echo(
            f"tuneforge: the grid has {sp.grid_size(plan.params)} points: the search ends when they are tried "
            f"(--trials {plan.trials} is more)"
        )
    with _ask_lock(plan.study_dir):
        marked = reclaim_stale(study)
    if marked:
        echo(f"tuneforge: marked failed the trial(s) {', '.join(map(str, marked))} whose process died")
    done, running = counts(study)
    deadline = time.time() + plan.timeout if plan.timeout else None
    echo(
        f"tuneforge: study '{plan.study_name}' in {plan.study_dir} ({redact(plan.storage)}): {done} of "
        f"{plan.trials} trials finished"
        + (f", {running} running elsewhere" if running else "")
        + f"; {plan.sampler} sampler, {plan.pruner} pruner, objective {plan.metric} "
        f"({'max' if plan.greater else 'min'}imize) on the validation split"
    )
    if plan.workers <= 1:
        run_worker(plan, 0, deadline, echo)
    else:
        _run_workers(plan, argv or plan.argv(), deadline, echo)
    with _ask_lock(plan.study_dir):  # searches sharing this directory write its files one at a time
        return write_outputs(plan, open_study(plan, create=False), echo)


def _ready_file(plan: Plan, worker: int) -> Path:
    return plan.study_dir / f".worker-{worker}.ready"


def _run_workers(plan: Plan, argv: list[str], deadline: float | None, echo) -> None:
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


def summary(study_dir: str | Path) -> str:
    """The trials table of a study directory again (from its storage when reachable, else trials.csv).

    Raises RunDirError when the directory holds no study."""
    from tuneforge.search.report import format_table, rows_from_csv, trial_rows

    d = Path(study_dir)
    info_file = d / "search.json"
    if not info_file.is_file():
        raise RunDirError(f"--summary: {study_dir} is not a study directory (no search.json)")
    try:
        info = json.loads(info_file.read_text())
    except ValueError:
        raise RunDirError(f"--summary: {info_file} is unreadable") from None
    rows = None
    if "***" not in str(info.get("storage")):
        try:
            import optuna

            _quiet_optuna()
            study = optuna.load_study(study_name=info["study"], storage=open_storage(info["storage"]))
            rows = trial_rows(study, info.get("objectives") or ["quality"], info.get("metric", "metric"))
        except Exception:
            rows = None
    if rows is None:
        if not (d / "trials.csv").is_file():
            raise RunDirError(f"--summary: cannot read the study's storage and {d / 'trials.csv'} does not exist")
        rows = rows_from_csv(d / "trials.csv")
    return format_table(rows, info.get("metric", "metric"), info.get("study", d.name))
