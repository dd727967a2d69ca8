"""Loss curves from a run's metrics.jsonl, for every task: eval/loss_curve.png, embedded in eval/report.md."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("tuneforge")


def text_overflow(fig) -> list[str]:
    """The texts of `fig` (titles, labels, tick labels, legends, annotations) that stick out of the figure at its
    size and dpi, each as `'text' (x0, y0, x1, y1)` in pixels; [] when everything is inside."""
    from matplotlib.text import Text

    fig.canvas.draw()
    fig.canvas.draw()  # a layout engine settles on the second draw (tick labels are known only after the first)
    renderer = fig.canvas.get_renderer()
    hidden = set()  # tick labels of ticks outside the axis' view are not drawn, however stale their position
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-9 * (hi - lo) <= tick.get_loc() <= hi + 1e-9 * (hi - lo):
                    hidden.update((id(tick.label1), id(tick.label2)))
    width, height = fig.bbox.width, fig.bbox.height
    out = []
    for t in fig.findobj(Text):
        if id(t) in hidden or not t.get_visible() or not t.get_text().strip():
            continue
        bb = t.get_window_extent(renderer)
        if bb.x0 < -0.5 or bb.y0 < -0.5 or bb.x1 > width + 0.5 or bb.y1 > height + 0.5:
            out.append(f"{t.get_text()!r} ({bb.x0:.0f}, {bb.y0:.0f}, {bb.x1:.0f}, {bb.y1:.0f})")
    return out


def save_figure(fig, path: str | Path, dpi: int = 100) -> None:
    """Save `fig` as every figure tuneforge writes is saved, and close it. A layout that would cut a text at the
    figure's edge (a long title, long class names) is saved with the figure grown to hold it instead: a clipped
    axis label is never written (tests/test_figures.py checks each figure fits without that)."""
    import matplotlib.pyplot as plt

    try:
        fig.set_dpi(dpi)
        fig.savefig(path, dpi=dpi, **({"bbox_inches": "tight", "pad_inches": 0.05} if text_overflow(fig) else {}))
    finally:
        plt.close(fig)


def read_loss_history(metrics_jsonl: str | Path) -> dict[str, list[tuple[int, float]]]:
    """(step, loss) pairs of the training and validation losses logged in a metrics.jsonl.

    Args:
        metrics_jsonl: the run's metrics.jsonl (one JSON object per logging step).

    Returns {"train": [...], "eval": [...], "reward": [...], "eval_reward": [...]}, each sorted by step (the
    rewards of runs that log them: GRPO); empty lists when the file is missing. Lines that are not JSON objects are
    skipped (a run killed mid-write leaves a partial last line)."""
    out: dict[str, list[tuple[int, float]]] = {"train": [], "eval": [], "reward": [], "eval_reward": []}
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
        for key, series in (
            ("loss", "train"),
            ("eval_loss", "eval"),
            ("reward", "reward"),
            ("eval_reward", "eval_reward"),
        ):
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

    rewards = bool(history.get("reward") or history.get("eval_reward"))
    if rewards:  # a run that learns from rewards: its reward curve beside the loss
        fig, (ax, rax) = plt.subplots(1, 2, figsize=(11.0, 4.0))
        if history.get("reward"):
            steps, values = zip(*history["reward"])
            rax.plot(steps, values, label="train reward (sampled)", color="tab:green")
        if history.get("eval_reward"):
            steps, values = zip(*history["eval_reward"])
            rax.plot(steps, values, label="validation reward (greedy)", color="tab:red", marker="o")
        rax.set_xlabel("optimizer step")
        rax.set_ylabel("mean reward")
        rax.set_title("Reward")
        rax.grid(alpha=0.3)
        rax.legend()
    else:
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
    save_figure(fig, path, dpi=110)
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
