"""`tuneforge search CONFIG --space SPACE.yaml` runs a search; `tuneforge search summary STUDY_DIR` prints a study's
table. `search` is a command group whose default command is the search itself, so the first spelling needs no
subcommand name."""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from tuneforge.cli.app import app


class _SearchGroup(TyperGroup):
    """Runs `run` (the search) when the first argument is not one of the group's commands."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


search_app = typer.Typer(
    name="search",
    cls=_SearchGroup,
    no_args_is_help=True,
    help="Search hyperparameters (`tuneforge search CONFIG --space SPACE.yaml`; its options: `tuneforge search run '"
    "--help`), or print a study's table "
    "(`tuneforge search summary STUDY_DIR`).",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(search_app, name="search")


@search_app.command("summary")
def summary(study_dir: str = typer.Argument(..., help="A study directory (what `search --out` wrote).")):
    """Print the trials table of a study (from its storage, else from its trials.csv)."""
    from tuneforge.search import summary as show

    typer.echo(show(study_dir))


@search_app.command("run")
def search(
    config: str | None = typer.Argument(None, help="Base YAML run config (every trial is a run of it)."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides for every trial."),
    space: str | None = typer.Option(
        None,
        "--space",
        help="Search space YAML: config keys to {float: [lo, hi], log: true} / {int: [lo, hi]} / {choice: [...]}.",
    ),
    trials: int = typer.Option(
        20,
        "--trials",
        help="Finished (complete or pruned) trials the study should have; a re-run continues until it has them.",
    ),
    timeout: float | None = typer.Option(None, "--timeout", help="Start no new trial after this many seconds."),
    study: str | None = typer.Option(None, "--study", help="Study name (default: the config file's name)."),
    study_dir: str | None = typer.Option(None, "--out", "-o", help="Study directory (default studies/<study>)."),
    storage: str | None = typer.Option(
        None,
        "--storage",
        help="SQLAlchemy URL of the study storage "
        "(default sqlite:///<dir>/study.db); postgresql://... or "
        "mysql://... lets workers on several machines share the study.",
    ),
    workers: int = typer.Option(1, "--workers", help="Trial processes on this machine."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe | random | grid | cmaes | gp."),
    pruner: str | None = typer.Option(
        None, "--pruner", help="median | hyperband | none (default median; none with several objectives)."
    ),
    objectives: str = typer.Option(
        "quality", "--objectives", help="quality | quality,time | quality,params (several: a Pareto front)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Sampler seed (default the config's train.seed)."),
    worker_internal: int | None = typer.Option(None, "--worker-internal", hidden=True),
    deadline_internal: float | None = typer.Option(None, "--deadline-internal", hidden=True),
):
    """Search hyperparameters: each trial is a normal run directory under the study directory, scored on the
    validation split; writes trials.csv, best.yaml, test.json (the best trial's test split) and report.html."""
    from tuneforge.errors import ConfigError

    if config is None:
        raise ConfigError("search needs a CONFIG; see 'tuneforge search --help'")
    if space is None:
        raise ConfigError("search needs --space SPACE.yaml (config keys and the values to try)")
    from tuneforge.search import make_plan, run_worker
    from tuneforge.search import search as run_search

    plan = make_plan(
        config,
        space,
        overrides or [],
        trials=trials,
        timeout=timeout,
        study=study,
        study_dir=study_dir,
        storage=storage,
        workers=workers,
        sampler=sampler,
        pruner=pruner,
        objectives=objectives,
        seed=seed,
        validate=worker_internal is None,
    )
    if worker_internal is not None:  # one of the --workers processes the search started
        run_worker(plan, worker_internal, deadline_internal)
        return
    run_search(plan)
