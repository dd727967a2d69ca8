"""One trial: sample its values, train it as a normal run in its own directory (its output in its train.log), tell
the study how it ended, and print its one progress line."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any

from tuneforge.config.loader import load_config
from tuneforge.errors import TuneforgeError, first_line
from tuneforge.search import space as sp
from tuneforge.search.plan import Plan
from tuneforge.search.storage import counts
from tuneforge.training.console import CALLER_LOG


def trial_dir(study_dir: Path, number: int) -> Path:
    """The run directory of trial `number`."""
    return study_dir / "trials" / f"trial-{number}"


def run_trial(plan: Plan, study, trial, worker: int):
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
        with open(run_dir / CALLER_LOG, "a") as log, _trial_output(log):
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
    """A sampled value as progress lines show it (floats to 3-4 significant digits)."""
    if isinstance(v, float):
        return f"{v:.3g}" if (abs(v) < 1e-3 or abs(v) >= 1e4) and v != 0 else f"{v:.4g}"
    return str(v)


def format_params(values: dict) -> str:
    """A trial's values as progress lines show them: `lr=0.0003 bs=16`."""
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
