"""A whole `tuneforge search`: create or continue the study, run its workers, write its outputs (`search`); and the
trials table of a finished study (`summary`). Optuna is the sampler, pruner and (through its RDB storage) the
distributed engine.

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

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import RunDirError
from tuneforge.search import space as sp
from tuneforge.search.liveness import ask_lock, reclaim_stale
from tuneforge.search.plan import Plan, redact
from tuneforge.search.storage import base_hash, counts, open_storage, open_study, quiet_optuna, write_search_json
from tuneforge.search.workers import run_worker, run_workers


@dataclass
class SearchResult:
    """What `search` returns: the study directory, its finished trials, the best trial and the files written."""

    study_dir: Path
    finished: int
    best: dict | None
    files: dict


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
                f"study '{plan.study_name}' another --out"
            )
    plan.study_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(plan, create=True)
    digest = base_hash(plan)
    if study.user_attrs.get("base_config") not in (None, digest):
        echo(
            "tuneforge: warning: the base config (or its overrides) differs from the one this study started with; "
            "the trials of both count in one study"
        )
    study.set_user_attr("base_config", digest)
    write_search_json(plan)
    if plan.sampler == "grid" and plan.trials > sp.grid_size(plan.params):
        echo(
            f"tuneforge: the grid has {sp.grid_size(plan.params)} points: the search ends when they are tried "
            f"(--trials {plan.trials} is more)"
        )
    with ask_lock(plan.study_dir):
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
        run_workers(plan, argv or plan.argv(), deadline, echo)
    with ask_lock(plan.study_dir):  # searches sharing this directory write its files one at a time
        return write_outputs(plan, open_study(plan, create=False), echo)


def summary(study_dir: str | Path) -> str:
    """The trials table of a study directory again (from its storage when reachable, else trials.csv).

    Raises RunDirError when the directory holds no study."""
    from tuneforge.search.report import format_table, rows_from_csv, trial_rows

    d = Path(study_dir)
    info_file = d / "search.json"
    if not info_file.is_file():
        raise RunDirError(f"search summary: {study_dir} is not a study directory (no search.json)")
    try:
        info = json.loads(info_file.read_text())
    except ValueError:
        raise RunDirError(f"search summary: {info_file} is unreadable") from None
    rows = None
    if "***" not in str(info.get("storage")):
        try:
            import optuna

            quiet_optuna()
            study = optuna.load_study(study_name=info["study"], storage=open_storage(info["storage"]))
            rows = trial_rows(study, info.get("objectives") or ["quality"], info.get("metric", "metric"))
        except Exception:
            rows = None
    if rows is None:
        if not (d / "trials.csv").is_file():
            raise RunDirError(f"search summary: cannot read the study's storage and {d / 'trials.csv'} does not exist")
        rows = rows_from_csv(d / "trials.csv")
    return format_table(rows, info.get("metric", "metric"), info.get("study", d.name))
