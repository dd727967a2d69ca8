"""Finding run directories and describing them in one row each (`tuneforge runs`, the web UI's Runs page)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tuneforge.training.rundir import RunDir

# tried in order when a run's config names no eval.metric found in its status metrics
_FALLBACK_METRICS = ("accuracy", "f1_macro", "auc_roc", "loss", "perplexity")


def age_text(seconds: float | None) -> str:
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
    except Exception:
        wanted = None
    for key in ((wanted,) if wanted else ()) + _FALLBACK_METRICS:
        if isinstance(metrics.get(key), (int, float)):
            return key, metrics[key]
    return None, None


def find_runs(root: Path, max_depth: int = 4) -> list[Path]:
    """Run directories at or under `root` (a comparison's runs too); never descends into a run."""
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
    return {
        "path": str(path),
        "state": state,
        "metric": metric,
        "value": value,
        "metrics": metrics,
        "updated_at": stamp,
        "age_seconds": round(now - when, 1) if when is not None else None,
        "pid": holder.get("pid") if state == "running" else None,
        "error": status.get("error"),
        "replaces": status.get("replaces"),
    }
