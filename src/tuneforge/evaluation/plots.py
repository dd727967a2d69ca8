"""Loss curves from a run's metrics.jsonl, for every task: eval/loss_curve.png, embedded in eval/report.md."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("tuneforge")


def read_loss_history(metrics_jsonl: str | Path) -> dict[str, list[tuple[int, float]]]:
    """(step, loss) pairs of the training and validation losses logged in a metrics.jsonl.

    Args:
        metrics_jsonl: the run's metrics.jsonl (one JSON object per logging step).

    Returns {"train": [...], "eval": [...]}, each sorted by step; empty lists when the file is missing.
    Lines that are not JSON objects are skipped (a run killed mid-write leaves a partial last line)."""
    out: dict[str, list[tuple[int, float]]] = {"train": [], "eval": []}
    path = Path(metrics_jsonl)
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), (int, float)):
            continue
        for key, series in (("loss", "train"), ("eval_loss", "eval")):
            v = row.get(key)
            if isinstance(v, (int, float)) and v == v:  # NaN losses would break the axis scaling
                out[series].append((int(row["step"]), float(v)))
    for series in out.values():
        series.sort()
    return out


def plot_loss_curve(history: dict[str, list[tuple[int, float]]], path: str | Path, title: str = "") -> bool:
    """Draw training and validation loss against optimizer steps into a PNG.

    Args:
        history: as returned by read_loss_history.
        path: the PNG to write.
        title: figure title.

    Returns False (and writes nothing) when there is no loss to plot."""
    if not history.get("train") and not history.get("eval"):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if history.get("train"):
        steps, losses = zip(*history["train"])
        ax.plot(steps, losses, label="train loss", color="tab:blue", marker="." if len(steps) < 30 else None)
    if history.get("eval"):
        steps, losses = zip(*history["eval"])
        ax.plot(steps, losses, label="validation loss", color="tab:orange", marker="o")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title or "Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_run_loss_curve(run_dir: str | Path) -> Path | None:
    """Write RUN/eval/loss_curve.png from RUN/metrics.jsonl and link it from RUN/eval/report.md.

    Args:
        run_dir: a run directory.

    Returns the PNG path, or None when the run logged no loss. A plotting failure only warns: the run's
    results stay valid without the picture."""
    run_dir = Path(run_dir)
    eval_dir = run_dir / "eval"
    try:
        eval_dir.mkdir(parents=True, exist_ok=True)
        png = eval_dir / "loss_curve.png"
        if not plot_loss_curve(read_loss_history(run_dir / "metrics.jsonl"), png, title=f"Loss: {run_dir.name}"):
            return None
    except Exception as exc:
        log.warning("loss curve not plotted: %s: %s", type(exc).__name__, exc)
        return None
    report = eval_dir / "report.md"
    text = report.read_text(encoding="utf-8") if report.is_file() else "# Evaluation report\n"
    if "(loss_curve.png)" not in text:
        text = text.rstrip("\n") + "\n\n## Loss curve\n\n![training and validation loss](loss_curve.png)\n"
        report.write_text(text, encoding="utf-8")
    return png
