"""Comparison charts: bars per method, quality versus cost, overlaid loss curves. PNG files, so the HTML
report can embed them as data URIs and the markdown report can link them."""

from __future__ import annotations

from pathlib import Path

from tuneforge.evaluation.plots import save_figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def memory_key(groups: list[dict]) -> tuple[str, str]:
    """The memory figure to compare: GPU allocation when the runs used a GPU, else the process's peak RSS."""
    if any(g["efficiency"].get("peak_gpu_allocated_mb") for g in groups):
        return "peak_gpu_allocated_mb", "peak GPU memory allocated (MiB)"
    return "peak_rss_mb", "peak RSS (MiB)"


def _value(g: dict, section: str, key: str) -> tuple[float | None, float]:
    s = g[section].get(key)
    return (s["mean"], s["std"]) if s else (None, 0.0)


def plot_bars(groups: list[dict], metric: str, path: Path) -> None:
    """Four bar charts (metric, train time, memory, trainable %) with seed spread as error bars; a failed
    method keeps its slot, marked 'failed', so the charts line up with the table."""
    plt = _plt()
    mem, mem_label = memory_key(groups)
    panels = [
        ("metrics", metric, f"{metric} (final)"),
        ("efficiency", "train_seconds", "train time (s)"),
        ("efficiency", mem, mem_label),
        ("efficiency", "trainable_percent", "trainable parameters (%)"),
    ]
    labels = [g["label"] for g in groups]
    colors = _colors(len(groups))
    fig, axes = plt.subplots(2, 2, figsize=(max(8.0, 1.1 * len(groups) + 5), 7.0))
    for ax, (section, key, title) in zip(axes.flat, panels):
        vals = [_value(g, section, key) for g in groups]
        heights = [v if v is not None else 0.0 for v, _ in vals]
        errs = [e for _, e in vals]
        ax.bar(range(len(groups)), heights, yerr=errs if any(errs) else None, color=colors, capsize=3)
        top = max(heights) if heights and max(heights) > 0 else 1.0
        for i, (v, _) in enumerate(vals):
            ax.text(i, top * 0.02, "failed" if v is None else "", ha="center", va="bottom", rotation=90, fontsize=8)
        ax.set_xticks(range(len(groups)), labels, rotation=30, ha="right")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        positive = [h for h in heights if h > 0]
        if key == "trainable_percent" and positive and max(positive) / min(positive) > 100:
            ax.set_yscale("log")  # full (100%) next to prompt tuning (0.01%) is unreadable on a linear axis
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def plot_quality_vs_cost(groups: list[dict], metric: str, path: Path) -> None:
    """Metric against training time; marker area grows with peak memory."""
    plt = _plt()
    mem, mem_label = memory_key(groups)
    fig, ax = plt.subplots(figsize=(7.0, 4.8))
    pts = [
        (
            g,
            _value(g, "efficiency", "train_seconds")[0],
            _value(g, "metrics", metric)[0],
            _value(g, "efficiency", mem)[0],
        )
        for g in groups
    ]
    pts = [p for p in pts if p[1] is not None and p[2] is not None]
    mems = [p[3] for p in pts if p[3]]
    biggest = max(mems) if mems else 1.0
    for (g, x, y, m), color in zip(pts, _colors(len(pts))):
        size = 60 + 600 * ((m or 0.0) / biggest)
        ax.scatter([x], [y], s=size, color=color, alpha=0.7, edgecolors="black", linewidths=0.5)
        ax.annotate(g["label"], (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.set_xlabel("train time (s)")
    ax.set_ylabel(f"{metric} (final)")
    ax.set_title(f"Quality vs cost (marker size: {mem_label})")
    ax.grid(alpha=0.3)
    if not pts:
        ax.text(0.5, 0.5, "no completed run", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def plot_loss_curves(groups: list[dict], records_by_name: dict, path: Path) -> None:
    """Training (solid) and validation (dashed, dots) loss of every run, one colour per method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.0, 4.8))
    drawn = False
    for g, color in zip(groups, _colors(len(groups))):
        for i, name in enumerate(g["runs"]):
            curves = records_by_name[name].curves
            alpha = 1.0 if i == 0 else 0.45
            if curves.get("train"):
                s, v = zip(*curves["train"])
                ax.plot(s, v, color=color, alpha=alpha, label=f"{g['label']} train" if i == 0 else None)
                drawn = True
            if curves.get("eval"):
                s, v = zip(*curves["eval"])
                ax.plot(
                    s,
                    v,
                    color=color,
                    alpha=alpha,
                    linestyle="--",
                    marker="o",
                    markersize=3,
                    label=f"{g['label']} validation" if i == 0 else None,
                )
                drawn = True
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Training (solid) and validation (dashed) loss")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8, ncol=2)
    else:
        ax.text(0.5, 0.5, "no loss logged", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
