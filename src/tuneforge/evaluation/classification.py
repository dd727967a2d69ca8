"""Classification metrics, per-class report, confusion-matrix heatmap and markdown report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

    probs = softmax(logits.astype(np.float64))
    pred = probs.argmax(-1)
    out = {"accuracy": float(accuracy_score(labels, pred))}
    n_classes = probs.shape[-1]
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            labels, pred, average=avg, zero_division=0, labels=list(range(n_classes))
        )
        out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"] = float(p), float(r), float(f)
    try:
        if n_classes == 2:
            out["auc_roc"] = float(roc_auc_score(labels, probs[:, 1]))
        else:
            present = np.unique(labels)
            if len(present) == n_classes:
                out["auc_roc"] = float(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    except ValueError:  # a single class present in this split: AUC is undefined
        pass
    return {k: round(v, 6) for k, v in out.items() if not math.isnan(v)}


def plot_confusion_matrix(cm: np.ndarray, names: list[str], path: str | Path, title: str = "") -> None:
    """The confusion matrix (rows: true class, normalised; counts in the cells) as a PNG."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tuneforge.evaluation.plots import save_figure

    n = len(names)
    size = max(4.5, 0.6 * n + 2.5)
    # constrained layout keeps the tick labels, axis labels and the colour bar inside the figure
    fig, ax = plt.subplots(figsize=(size, size * 0.85), layout="constrained")
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    shown = [str(x) if len(str(x)) <= 24 else str(x)[:23] + "\u2026" for x in names]
    ax.set_xticks(range(n), shown, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), shown)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    # a title wider than the figure would be cut at both sides: wrapped to the figure's width instead
    title = title or "Confusion matrix (row-normalised; counts in cells)"
    ax.set_title("\n".join(textwrap.wrap(title, width=max(20, int(size * 9)))), fontsize=10)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{cm[i, j]}",
                    ha="center",
                    va="center",
                    color="white" if norm[i, j] > 0.5 else "black",
                    fontsize=9,
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    save_figure(fig, path, dpi=120)


def write_classification_report(
    logits: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    out_dir: str | Path,
    title: str = "",
    extra: dict | None = None,
) -> dict:
    """Compute metrics on (logits, labels), write metrics.json, report.md and confusion_matrix.png into out_dir.

    Returns the metrics dict (overall metrics plus `per_class`)."""
    from sklearn.metrics import classification_report, confusion_matrix

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = classification_metrics(logits, labels)
    pred = logits.argmax(-1)
    ids = list(range(len(names)))
    per_class = classification_report(labels, pred, labels=ids, target_names=names, output_dict=True, zero_division=0)
    per_class = {n: {k: round(float(v), 6) for k, v in per_class[n].items()} for n in names}
    cm = confusion_matrix(labels, pred, labels=ids)
    plot_confusion_matrix(cm, names, out_dir / "confusion_matrix.png")
    result = {**metrics, "n": int(len(labels)), "per_class": per_class, "confusion_matrix": cm.tolist()}
    payload = {"test": result, **(extra or {})}
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2))

    lines = ["# Evaluation report", "", title, "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    lines += ["", "## Per class", "", "| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
    lines += [
        f"| {n} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1-score']:.4f} | {int(c['support'])} |"
        for n, c in per_class.items()
    ]
    lines += ["", "## Confusion matrix", "", "![confusion matrix](confusion_matrix.png)", ""]
    if extra and extra.get("validation"):
        lines += ["## Best validation metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in extra["validation"].items() if isinstance(v, (int, float))]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return result
