"""`tuneforge compare`: the same task, data and budget trained with several methods (and seeds), one run
directory each under one comparison directory, then the report.

Learning rate: per method. A config's `train.learning_rate` is written for *its* method (the LoRA quickstart
sets 1e-3, which would wreck full fine-tuning), so compare drops it and every method trains at its own
rate: `train.learning_rate` from configs/methods/<method>-<task>.yaml when that file sets one, else the
method's default. An explicit `train.learning_rate=...` override on the compare command line, or
`keep_learning_rate`, applies one rate to every method.

Each run trains in a fresh process by default, so peak memory is that run's own (the RSS high-water mark of a
process never goes down) and a crash in one method cannot take the others with it."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from tuneforge.config.loader import resolved_config
from tuneforge.config.overrides import apply_overrides
from tuneforge.config.validation import validate_config
from tuneforge.config.yaml_reader import read_yaml
from tuneforge.errors import ConfigError, RunDirError, TuneforgeError, first_line
from tuneforge.training.console import CALLER_LOG
from tuneforge.training.rundir import RunDir

ALL_METHODS = ["full", "freeze", "lora", "qlora", "adapter", "prefix", "prompt"]


@dataclass
class PlannedRun:
    method: str
    seed: int
    path: Path
    raw: dict  # the complete raw config of this run (validated when it runs)
    error: str | None = None  # a config problem found while planning: the run fails without training
    skipped: bool = False


@dataclass
class CompareResult:
    out_dir: Path
    runs: list[PlannedRun] = field(default_factory=list)
    report: object = None


def parse_list(text: str | None, what: str) -> list[str]:
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    if not items:
        raise ConfigError(f"{what}: give a comma-separated list, for example {what} full,lora")
    dup = sorted({x for x in items if items.count(x) > 1})
    if dup:
        raise ConfigError(f"{what}: listed twice: {', '.join(dup)}")
    return items


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    seeds = []
    for s in parse_list(text, "--seeds"):
        try:
            seeds.append(int(s))
        except ValueError:
            raise ConfigError(f"--seeds: '{s}' is not an integer") from None
    return seeds


def default_method_configs_dir() -> Path:
    """configs/methods under the working directory, else the one shipped beside the package's source tree."""
    here = Path("configs/methods")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[3] / "configs" / "methods"


def task_file_names(task: str) -> list[str]:
    """The names method files use for a task: its own and its `Task.aliases` (lora-sft.yaml for causal_lm)."""
    from tuneforge.registry import TASKS

    return [task, *TASKS.get(task).aliases] if task in TASKS else [task]


def _method_file_settings(method: str, task: str, directory: Path) -> tuple[dict | None, float | None, Path | None]:
    path = next((p for p in (directory / f"{method}-{t}.yaml" for t in task_file_names(task)) if p.is_file()), None)
    if path is None:
        return None, None, None
    raw = read_yaml(path)
    section = raw.get("method")
    if section is None:
        return None, None, path
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: 'method' must be a mapping")
    if section.get("name", method) != method:
        raise ConfigError(f"{path}: method.name is '{section.get('name')}', but the file is for '{method}'")
    lr = (raw.get("train") or {}).get("learning_rate") if isinstance(raw.get("train"), dict) else None
    return {**section, "name": method}, lr, path


def plan(
    config: str | Path,
    methods: list[str],
    seeds: list[int] | None,
    max_steps: int | None,
    out: Path,
    overrides=(),
    method_configs: Path | None = None,
    keep_learning_rate: bool = False,
) -> list[PlannedRun]:
    """The runs of a comparison, each with its complete raw config (nothing is trained or written).

    Each method's settings: the `method:` section of <method_configs>/<method>-<task>.yaml when it exists;
    else the config's own `method:` section when it names this method or all its keys apply to it; else
    the method's defaults.

    Args:
        config: the base run config (task, data, model, budget).
        methods: registered method names.
        seeds: train.seed of each repetition; None: the config's own seed, once. The data split keeps the
            config's seed (data.split.seed, else train.seed), so all runs share the same test rows.
        max_steps: train.max_steps for every run (None: the config's budget).
        out: the comparison directory; run k of method m goes to out/<m>-seed<k>.
        overrides: key=value overrides for every run. `method.<key>=v` applies to the methods that have
            that key (for example method.r=4 to lora and qlora).
        method_configs: the directory of <method>-<task>.yaml files (default configs/methods).
        keep_learning_rate: train every method at the config's train.learning_rate instead of per-method rates.

    Raises ConfigError for an unknown method, a malformed override or an invalid base config."""
    from tuneforge.registry import METHODS

    for m in methods:
        METHODS.get(m, key="--methods")
    overrides = list(overrides)
    method_over = [o for o in overrides if o.split("=", 1)[0].strip().startswith("method.")]
    common = [o for o in overrides if o not in method_over]
    base = apply_overrides(read_yaml(config), common)
    base_cfg = validate_config(copy.deepcopy(base))  # problems of the shared part stop everything, early
    task = base_cfg.task.type
    explicit_lr = any(o.split("=", 1)[0].strip() == "train.learning_rate" for o in common)
    for o in method_over:
        key = o.split("=", 1)[0].strip().split(".")[1]
        if "=" not in o or not any(key in METHODS.get(m).Config.model_fields for m in methods):
            raise ConfigError(f"override '{o}': none of the methods {', '.join(methods)} has a key '{key}'")
    directory = method_configs or default_method_configs_dir()
    base_method = base.get("method") if isinstance(base.get("method"), dict) else {}
    runs = []
    for m in methods:
        section, file_lr, _ = _method_file_settings(m, task, directory)
        fields = METHODS.get(m).Config.model_fields
        if section is None:
            # the config's own settings when they were written for this method or all apply to it (a LoRA
            # config's r/alpha/targets carry over to qlora), else the method's defaults
            own = {k: v for k, v in base_method.items() if k != "name"}
            reuse = base_method.get("name") == m or (own and all(k in fields for k in own))
            section = {**(copy.deepcopy(own) if reuse else {}), "name": m}
        mine = [o for o in method_over if o.split("=", 1)[0].strip().split(".")[1] in fields]
        section = apply_overrides({"method": section}, mine)["method"]
        for seed in seeds if seeds is not None else [base_cfg.train.seed]:
            raw = copy.deepcopy(base)
            raw["method"] = copy.deepcopy(section)
            train = raw.setdefault("train", {}) or {}
            raw["train"] = train
            if not (explicit_lr or keep_learning_rate):
                train.pop("learning_rate", None)
                if file_lr is not None:
                    train["learning_rate"] = file_lr
            train["seed"] = seed
            if seeds is not None and base_cfg.data.split.seed is None:
                # one held-out split for every seed: the spread then measures training randomness, and every
                # method is scored on the same test rows
                data = raw["data"] = dict(raw.get("data") or {})
                data["split"] = {**(data.get("split") or {}), "seed": base_cfg.train.seed}
            if max_steps is not None:
                train["max_steps"] = max_steps
            path = out / f"{m}-seed{seed}"
            raw["output"] = {
                **(raw.get("output") or {}),
                "dir": str(path),
                "name": f"{m}-seed{seed}",
                "overwrite": True,
            }
            runs.append(PlannedRun(method=m, seed=seed, path=path, raw=raw))
    for r in runs:
        try:
            validate_config(copy.deepcopy(r.raw))
        except ConfigError as exc:
            r.error = str(exc)
    return runs


def _check_existing(runs: list[PlannedRun], resume: bool, overwrite: bool) -> None:
    """Decide per run whether it is skipped (--resume and completed with the same config) before any
    training, so a conflict is reported at once rather than after hours."""
    for r in runs:
        exists = r.path.is_dir() and any(r.path.iterdir())
        if not exists:
            continue
        state = RunDir(r.path).status().get("state")
        if resume and state == "completed" and r.error is None:
            saved = yaml.safe_load((r.path / "config.yaml").read_text()) if (r.path / "config.yaml").is_file() else None
            try:
                # validated again, so a key added (with its default) since that run was made is no difference
                saved = resolved_config(saved) if isinstance(saved, dict) else None
            except ConfigError:
                saved = None
            if saved != resolved_config(r.raw):
                raise RunDirError(
                    f"--resume: {r.path} was trained with a different config; compare into a new "
                    f"--out directory, or use --overwrite to retrain it"
                )
            r.skipped = True
        elif not (resume or overwrite):
            raise RunDirError(
                f"{r.path} already exists ({state or 'not a run'}); use --resume to skip completed "
                f"runs and redo the others, or --overwrite to redo everything"
            )


def _run_subprocess(run: PlannedRun, cfg_path: Path) -> str | None:
    """Train in a fresh interpreter; returns None on success, else the error message."""
    log_path = run.path / CALLER_LOG
    run.path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with open(log_path, "w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "tuneforge", "train", str(cfg_path)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    if proc.returncode == 0:
        return None
    status = RunDir(run.path).status()
    if status.get("state") == "failed" and status.get("error"):
        return status["error"]
    tail = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    msg = next((ln for ln in reversed(tail) if ln.startswith("error:")), tail[-1] if tail else "")
    msg = msg.removeprefix("error: ") or f"training process exited with code {proc.returncode}"
    if proc.returncode < 0:
        sig = -proc.returncode
        msg = f"training process killed by signal {sig}" + (" (out of memory?)" if sig == 9 else "")
    if status.get("state") in (None, "running"):
        # a killed process could not mark its own run; an overwrite trains elsewhere and leaves the old run intact
        RunDir(run.path).fail(msg)
    return msg


def _run_in_process(run: PlannedRun) -> str | None:
    from tuneforge.config import load_config
    from tuneforge.training.engine import train

    try:
        train(load_config(raw=copy.deepcopy(run.raw)))
    except TuneforgeError as exc:
        return str(exc)
    except Exception as exc:
        return first_line(exc, 1000, with_type=True)
    return None


def _write_failed(run: PlannedRun) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    (run.path / "config.yaml").write_text(yaml.safe_dump(run.raw, sort_keys=False))
    RunDir(run.path).fail(run.error)


def compare(
    config: str | Path,
    methods: list[str] | str = "full,lora",
    seeds: list[int] | str | None = None,
    max_steps: int | None = None,
    out: str | Path | None = None,
    overrides=(),
    resume: bool = False,
    overwrite: bool = False,
    method_configs: str | Path | None = None,
    keep_learning_rate: bool = False,
    isolate: bool = True,
    echo=print,
) -> CompareResult:
    """Train every method (x seed) on the same task, data and budget, then write the comparison report.

    Args:
        config: the base run config.
        methods: method names (list or comma-separated string).
        seeds: seeds (list or comma-separated string); None: the config's seed once.
        max_steps: train.max_steps for every run.
        out: the comparison directory (default runs/compare-<config name>-<timestamp>).
        overrides: key=value overrides for every run (see `plan`).
        resume: skip runs already completed with the same config; redo the others from scratch (a run
            resumed from a checkpoint would under-report its training time).
        overwrite: redo every run even when it exists.
        method_configs: directory of <method>-<task>.yaml files (default configs/methods).
        keep_learning_rate: one rate (the config's) for every method instead of per-method rates.
        isolate: train each run in a fresh process (clean peak-memory figures); False trains in this process.
        echo: where progress lines go.

    Returns a CompareResult with the runs and the Report. A failing method is recorded in the report with its
    error and does not stop the others.
    Raises ConfigError / RunDirError for problems found before training (unknown method, bad override,
    invalid config, existing runs without --resume / --overwrite)."""
    methods = parse_list(methods, "--methods") if isinstance(methods, str) else list(methods)
    seeds = parse_seeds(seeds) if isinstance(seeds, str) else seeds
    if max_steps is not None and max_steps < 1:
        raise ConfigError("--max-steps must be at least 1")
    if out is None:
        out = Path("runs") / f"compare-{Path(config).stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} exists and is not a directory")
    runs = plan(
        config,
        methods,
        seeds,
        max_steps,
        out,
        overrides,
        Path(method_configs) if method_configs else None,
        keep_learning_rate,
    )
    _check_existing(runs, resume, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    cfg_dir = out / "configs"
    cfg_dir.mkdir(exist_ok=True)
    (out / "compare.args.json").write_text(
        json.dumps(
            {
                "config": str(config),
                "methods": methods,
                "seeds": seeds,
                "max_steps": max_steps,
                "overrides": list(overrides),
                "keep_learning_rate": keep_learning_rate,
            },
            indent=2,
        )
    )
    total = len(runs)
    for i, r in enumerate(runs, 1):
        tag = f"compare [{i}/{total}] {r.method} seed {r.seed}"
        if r.skipped:
            echo(f"{tag}: already completed, skipped (--resume)")
            continue
        if r.error:
            _write_failed(r)
            echo(f"{tag}: FAILED before training: {r.error}")
            continue
        cfg_path = cfg_dir / f"{r.method}-seed{r.seed}.yaml"
        cfg_path.write_text(yaml.safe_dump(r.raw, sort_keys=False))
        echo(f"{tag}: training -> {r.path}")
        t0 = time.perf_counter()
        r.error = _run_subprocess(r, cfg_path) if isolate else _run_in_process(r)
        took = time.perf_counter() - t0
        if r.error:
            echo(f"{tag}: FAILED after {took:.0f}s: {r.error}")
        else:
            shown = RunDir(r.path).status().get("metrics") or {}
            nums = " ".join(
                f"{k}={v:.4f}"
                for k, v in shown.items()
                if k in ("accuracy", "f1_macro", "loss", "perplexity") and isinstance(v, (int, float))
            )
            echo(f"{tag}: done in {took:.0f}s {nums}")
    from tuneforge.compare.report import build_report

    report = build_report([r.path for r in runs], out, title=f"Method comparison: {Path(config).name}")
    echo(f"compare: report in {report.html_path} (and report.md, compare.json)")
    if report.data.get("best"):
        echo(
            f"compare: best {report.data['metric']}: {report.data['best']}; "
            f"best per unit of cost: {report.data['best_value']}"
        )
    return CompareResult(out_dir=out, runs=runs, report=report)
