"""The study's storage and Optuna objects: the RDB storage (any SQLAlchemy URL), the sampler and pruner the plan
names, opening a study (refusing one made with another space or objectives), search.json and trial counts."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from tuneforge.errors import ConfigError, first_line
from tuneforge.search import space as sp
from tuneforge.search.liveness import GRACE_SECONDS, HEARTBEAT_SECONDS
from tuneforge.search.plan import Plan, redact

#: the study's user attribute holding the space's fingerprint (set last: it marks the study complete)
SPACE_ATTR = "tuneforge_space"


def quiet_optuna() -> None:
    """Keep Optuna's info lines and experimental/heartbeat warnings off the terminal."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*heartbeat.*")


def open_storage(url: str):
    """Optuna's RDB storage with heartbeats (any SQLAlchemy URL).

    Raises ConfigError when the database cannot be opened or its driver is missing."""
    import optuna

    quiet_optuna()
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
    """The Optuna pruner `--pruner` names."""
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
                f"(or --out) for this space, or the original {attrs.get('space_file', 'space')}"
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


def base_hash(plan: Plan) -> str:
    """A short hash of the base config (overrides applied): a study warns when it continues with another."""
    import hashlib

    return hashlib.sha256(json.dumps(plan.base, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_search_json(plan: Plan) -> None:
    """STUDY_DIR/search.json: the study's name, storage (without password), options, objectives and space."""
    from tuneforge.training.jsonfile import write_json

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


def counts(study) -> tuple[int, int]:
    """(finished: complete + pruned, running) trials of the study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    return done, sum(t.state == TrialState.RUNNING for t in trials)
