"""The plan of a search: the base config, the space and every option, checked before the first trial and built
the same way in every worker process from the same command line."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.config.loader import load_config
from tuneforge.config.overrides import apply_overrides
from tuneforge.config.validation import validate_config
from tuneforge.config.yaml_reader import read_yaml
from tuneforge.errors import ConfigError, RunDirError
from tuneforge.search import space as sp
from tuneforge.search.space_check import validate_space

SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp")
PRUNERS = ("median", "hyperband", "none")
OBJECTIVES = ("quality", "quality,time", "quality,params")


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
            "--out",
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
    """The storage a search uses without --storage: SQLite in the study directory."""
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
        validate_space(params, base, where=f"{Path(space_file).name}: ")
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
        raise RunDirError(f"--out: {sdir} exists and is not a directory")
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
    """The default study name: the config file's stem, with characters unsafe in a name replaced."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(config).stem)[:100]
