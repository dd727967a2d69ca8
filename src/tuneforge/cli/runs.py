from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import typer

from tuneforge.cli.app import app

# tried in order when a run's config names no eval.metric found in its status metrics
_FALLBACK_METRICS = ("accuracy", "f1_macro", "auc_roc", "loss", "perplexity")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _main_metric(run_path: Path, metrics: dict) -> tuple[str | None, float | None]:
    if not isinstance(metrics, dict) or not metrics:
        return None, None
    wanted = None
    try:
        import yaml

        cfg = yaml.safe_load((run_path / "config.yaml").read_text())
        wanted = ((cfg or {}).get("eval") or {}).get("metric")
    except Exception:  # noqa: BLE001 (a listing never fails on one run's unreadable config)
        wanted = None
    for key in ((wanted,) if wanted else ()) + _FALLBACK_METRICS:
        if isinstance(metrics.get(key), (int, float)):
            return key, metrics[key]
    return None, None


def find_runs(root: Path, max_depth: int = 4) -> list[Path]:
    """Run directories at or under `root` (a comparison's runs too); never descends into a run."""
    from tuneforge.training.rundir import RunDir

    found = []

    def walk(p: Path, depth: int) -> None:
        if RunDir(p).is_run():
            found.append(p)
            return
        if depth >= max_depth:
            return
        try:
            children = sorted(c for c in p.iterdir() if c.is_dir() and not c.is_symlink())
        except OSError:
            return
        for c in children:
            walk(c, depth + 1)

    walk(root, 0)
    return found


def describe(path: Path, now: float | None = None) -> dict:
    from tuneforge.training.rundir import RunDir

    run = RunDir(path)
    status = run.status()
    state = run.state()
    metrics = status.get("metrics") or {}
    metric, value = _main_metric(path, metrics)
    stamp = status.get("finished_at") or status.get("updated_at") or status.get("started_at")
    try:
        when = datetime.fromisoformat(stamp).timestamp() if stamp else path.stat().st_mtime
    except (ValueError, OSError):
        when = None
    now = datetime.now().timestamp() if now is None else now
    holder = run.lock_info() or status
    return {"path": str(path), "state": state, "metric": metric, "value": value, "metrics": metrics,
            "updated_at": stamp, "age_seconds": round(now - when, 1) if when is not None else None,
            "pid": holder.get("pid") if state == "running" else None, "error": status.get("error"),
            "replaces": status.get("replaces")}


@app.command()
def runs(directory: str = typer.Argument("runs", help="A run directory, or a directory of runs (default runs/)."),
         as_json: bool = typer.Option(False, "--json", help="One JSON list for scripts instead of lines.")):
    """List run directories: state (running / interrupted / completed / failed / stopped), main metric, age."""
    from tuneforge.errors import RunDirError

    root = Path(directory)
    if not root.is_dir():
        raise RunDirError(f"{directory} is not a directory")
    rows = [describe(p) for p in find_runs(root)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo(f"no runs under {directory}", err=True)
        return
    for r in rows:
        shown = f"{r['metric']}={r['value']:.4f}" if r["metric"] else "-"
        note = ""
        if r["state"] == "failed" and r["error"]:
            note = f"  ({r['error'][:80]})"
        elif r["state"] == "running" and r["pid"]:
            note = f"  (pid {r['pid']})"
        if r["replaces"]:
            note += f"  [overwrite of {r['replaces']}]"
        typer.echo(f"{r['state'] or '?':<12} {shown:<22} {_age(r['age_seconds']):>5}  {os.path.normpath(r['path'])}"
                   f"{note}")
