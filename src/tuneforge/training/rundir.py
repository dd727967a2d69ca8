"""The run directory: the contract every feature keeps.

    config.yaml        resolved config            status.json     running / completed / failed (+ error)
    metrics.jsonl      one row per log step       efficiency.json time, throughput, memory, parameters
    eval/              metrics.json, report.md, plots
    model/             loadable artefacts + tuneforge.json (task, method, base model, labels)
    checkpoints/       Trainer checkpoints for --resume
"""
from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

from tuneforge.errors import RunDirError


def write_json(path: str | Path, data) -> None:
    """Atomic write: a reader never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # paths
    config = property(lambda self: self.path / "config.yaml")
    status_file = property(lambda self: self.path / "status.json")
    metrics_log = property(lambda self: self.path / "metrics.jsonl")
    efficiency = property(lambda self: self.path / "efficiency.json")
    eval_dir = property(lambda self: self.path / "eval")
    model_dir = property(lambda self: self.path / "model")
    checkpoints = property(lambda self: self.path / "checkpoints")

    def status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def set_status(self, state: str, **extra) -> None:
        data = {**self.status(), "state": state, **extra, "updated_at": datetime.now().isoformat(timespec="seconds")}
        if state != "failed":
            data.pop("error", None)
        write_json(self.status_file, data)

    def last_checkpoint(self) -> str | None:
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(str(self.checkpoints)) if self.checkpoints.is_dir() else None

    @classmethod
    def for_config(cls, cfg, resume: bool = False) -> "RunDir":
        """Pick (and create) the run directory for a config. Never overwrites a completed run silently."""
        name = cfg.output.name or "run"
        if cfg.output.dir:
            run = cls(cfg.output.dir)
        elif resume:
            candidates = sorted(Path("runs").glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
            candidates = [p for p in candidates if cls(p).status().get("state") != "completed"]
            if not candidates:
                raise RunDirError(f"--resume: no unfinished run named '{name}' under runs/ (set output.dir to choose one)")
            run = cls(candidates[-1])
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            run = cls(Path("runs") / f"{name}-{stamp}")
            i = 1
            while run.path.exists():
                run = cls(Path("runs") / f"{name}-{stamp}-{i}")
                i += 1
        state = run.status().get("state")
        if resume:
            if state == "completed":
                raise RunDirError(f"{run.path} is already completed; nothing to resume")
            if run.last_checkpoint() is None:
                raise RunDirError(f"--resume: {run.path} has no checkpoint to continue from")
        elif run.path.exists() and any(run.path.iterdir()):
            if not cfg.output.overwrite:
                raise RunDirError(f"run directory {run.path} already exists ({state or 'not a run'}); "
                                  f"use --resume to continue it, or output.overwrite=true to replace it")
            for child in ("model", "eval", "checkpoints", "metrics.jsonl", "efficiency.json", "status.json"):
                p = run.path / child
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    def start(self, config_yaml: str) -> None:
        self.config.write_text(config_yaml)
        self.set_status("running", pid=os.getpid(), started_at=datetime.now().isoformat(timespec="seconds"))

    def fail(self, message: str) -> None:
        self.set_status("failed", error=message)

    def complete(self, **extra) -> None:
        self.set_status("completed", finished_at=datetime.now().isoformat(timespec="seconds"), **extra)

