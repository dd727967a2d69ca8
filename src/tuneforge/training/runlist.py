"""Finding run directories and reading them for listings (`tuneforge runs`, the web UI's pages): one row each, the
rows of metrics.jsonl, the end of a log, and what a run's saved model is given and offers."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from tuneforge.errors import TuneforgeError
from tuneforge.training.console import CALLER_LOG, CONSOLE_LOG
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


def interface(run: Path) -> str | None:
    """`classify` or `chat` for a run with a saved model (what its task offers), else None."""
    from tuneforge.models.loader import read_run_metadata
    from tuneforge.registry import TASKS

    try:
        return TASKS.get(read_run_metadata(Path(run) / "model").get("task", "")).inference.interface
    except (TuneforgeError, OSError, ValueError, AttributeError):
        return None


def input_kind(run: Path) -> str:
    """`text` or `image`: what a run with a saved model is given to predict (its task's `input_kind`)."""
    from tuneforge.models.loader import read_run_metadata
    from tuneforge.registry import TASKS

    try:
        return TASKS.get(read_run_metadata(Path(run) / "model").get("task", "")).inference.input_kind
    except (TuneforgeError, OSError, ValueError, AttributeError):
        return "text"


def read_metrics(run: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl (a row cut by a kill mid-write is skipped)."""
    rows = []
    try:
        with open(Path(run) / "metrics.jsonl", encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except OSError:
        pass
    return rows


def run_log(run: Path) -> Path:
    """A run's console output: the log its caller wrote (`train.log`, runs the web UI or compare started) or the one
    the run kept itself (`console.log`, runs started from a shell); the newer when a run has both (a shell run
    resumed from the web UI)."""
    logs = [p for p in (Path(run) / CALLER_LOG, Path(run) / CONSOLE_LOG) if p.is_file()]
    return max(logs, key=lambda p: p.stat().st_mtime) if logs else Path(run) / CALLER_LOG


def log_tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last `lines` lines of a log (progress-bar carriage returns resolved to their last state)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    out = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
    if out and not out[-1]:
        out.pop()
    return "\n".join(line for line in out[-lines:])
