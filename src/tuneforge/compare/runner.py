"""`tuneforge compare`: the same task, data and budget trained with several methods (and seeds), one run
directory each under one comparison directory, then the report.

Which runs, with which settings and learning rates: compare/plan.py.

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

from tuneforge.compare.plan import PlannedRun, parse_list, parse_seeds, parse_vary, plan
from tuneforge.config.loader import resolved_config
from tuneforge.errors import ConfigError, RunDirError, TuneforgeError, first_line
from tuneforge.training.console import CALLER_LOG
from tuneforge.training.rundir import RunDir


@dataclass
class CompareResult:
    out_dir: Path
    runs: list[PlannedRun] = field(default_factory=list)
    report: object = None


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
    vary: tuple[str, list[str]] | str | None = None,
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
        vary: `KEY=V1,V2,...` (or (KEY, values)): also train each value of one config key (see `plan`), for
            example `task.loss=dpo,orpo,simpo,kto` for preference losses side by side.

    Returns a CompareResult with the runs and the Report. A failing method is recorded in the report with its
    error and does not stop the others.
    Raises ConfigError / RunDirError for problems found before training (unknown method, bad override,
    invalid config, existing runs without --resume / --overwrite)."""
    methods = parse_list(methods, "--methods") if isinstance(methods, str) else list(methods)
    seeds = parse_seeds(seeds) if isinstance(seeds, str) else seeds
    vary = parse_vary(vary) if isinstance(vary, str) else vary
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
        vary,
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
                "vary": None if vary is None else {vary[0]: vary[1]},
            },
            indent=2,
        )
    )
    total = len(runs)
    for i, r in enumerate(runs, 1):
        tag = f"compare [{i}/{total}] {r.method}{f' {r.variant}' if r.variant else ''} seed {r.seed}"
        if r.skipped:
            echo(f"{tag}: already completed, skipped (--resume)")
            continue
        if r.error:
            _write_failed(r)
            echo(f"{tag}: FAILED before training: {r.error}")
            continue
        cfg_path = cfg_dir / f"{r.path.name}.yaml"
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
                if k in ("accuracy", "f1_macro", "loss", "perplexity", "reward_accuracy")
                and isinstance(v, (int, float))
            )
            echo(f"{tag}: done in {took:.0f}s {nums}")
    from tuneforge.compare.report import build_report

    what = (
        "Method comparison"
        if vary is None
        else f"Comparison of {vary[0]}" + (" and methods" if len(methods) > 1 else "")
    )
    report = build_report([r.path for r in runs], out, title=f"{what}: {Path(config).name}")
    echo(f"compare: report in {report.html_path} (and report.md, compare.json)")
    if report.data.get("best"):
        echo(
            f"compare: best {report.data['metric']}: {report.data['best']}; "
            f"best per unit of cost: {report.data['best_value']}"
        )
    return CompareResult(out_dir=out, runs=runs, report=report)
