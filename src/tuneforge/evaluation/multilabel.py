"""Multi-label classification metrics (a row may carry any number of labels) and their report: one 2x2
confusion matrix per label."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tuneforge.evaluation.plots import save_figure

#: larger is better for each, as classification's metrics say
METRICS = {
    "subset_accuracy": True,
    "accuracy": True,
    "f1_micro": True,
    "f1_macro": True,
    "precision_micro": True,
    "recall_micro": True,
    "hamming_loss": False,
    "auc_roc": True,
    "loss": False,
}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def multilabel_metrics(logits: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Metrics of multi-label predictions (probability >= threshold) against 0/1 targets [rows, labels].
    `accuracy` is the sample-averaged Jaccard index (labels right over labels predicted or true); `subset_accuracy`
    counts rows whose whole label set is right."""
    from sklearn.metrics import f1_score, hamming_loss, jaccard_score, precision_score, recall_score, roc_auc_score

    probs = sigmoid(logits.astype(np.float64))
    pred = (probs >= threshold).astype(int)
    y = targets.astype(int)
    out = {
        "subset_accuracy": float((pred == y).all(axis=1).mean()),
        "accuracy": float(jaccard_score(y, pred, average="samples", zero_division=1.0)),
        "f1_micro": float(f1_score(y, pred, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(y, pred, average="macro", zero_division=0)),
        "precision_micro": float(precision_score(y, pred, average="micro", zero_division=0)),
        "recall_micro": float(recall_score(y, pred, average="micro", zero_division=0)),
        "hamming_loss": float(hamming_loss(y, pred)),
    }
    both = [(y[:, j], probs[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    if both:  # labels that are always or never present have no AUC
        out["auc_roc"] = float(np.mean([roc_auc_score(t, p) for t, p in both]))
    eps = 1e-12
    bce = -(y * np.log(probs + eps) + (1 - y) * np.log(1 - probs + eps)).mean()
    out["loss"] = float(bce)
    return {k: round(v, 6) for k, v in out.items() if not math.isnan(v)}


def plot_label_matrices(matrices: np.ndarray, names: list[str], path: str | Path) -> None:
    """One row-normalised 2x2 confusion matrix per label, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.5 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        cm = matrices[k]
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks([0, 1], ["no", "yes"])
        ax.set_yticks([0, 1], ["no", "yes"])
        ax.set_title(names[k], fontsize=9)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    fig.suptitle("Per label: true (rows) vs predicted (columns)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def write_multilabel_report(
    logits: np.ndarray,
    targets: np.ndarray,
    names: list[str],
    out_dir: str | Path,
    title: str = "",
    extra: dict | None = None,
) -> dict:
    """Metrics, per-label precision/recall/f1/support and per-label confusion matrices of multi-label
    predictions; writes metrics.json, report.md and confusion_matrix.png into out_dir. Returns the metrics."""
    from sklearn.metrics import multilabel_confusion_matrix, precision_recall_fscore_support

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = multilabel_metrics(logits, targets)
    pred = (sigmoid(logits.astype(np.float64)) >= 0.5).astype(int)
    y = targets.astype(int)
    p, r, f, s = precision_recall_fscore_support(y, pred, average=None, zero_division=0, labels=list(range(len(names))))
    per_label = {
        n: {
            "precision": round(float(p[i]), 6),
            "recall": round(float(r[i]), 6),
            "f1-score": round(float(f[i]), 6),
            "support": int(s[i]),
        }
        for i, n in enumerate(names)
    }
    matrices = multilabel_confusion_matrix(y, pred, labels=list(range(len(names))))
    plot_label_matrices(matrices, names, out_dir / "confusion_matrix.png")
    result = {**metrics, "n": int(len(y)), "per_class": per_label, "confusion_matrix": matrices.tolist()}
    (out_dir / "metrics.json").write_text(json.dumps({"test": result, **(extra or {})}, indent=2))
    lines = ["# Evaluation report (multi-label)", "", title, "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    lines += ["", "## Per label", "", "| label | precision | recall | f1 | support |", "|---|---|---|---|---|"]
    lines += [
        f"| {n} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1-score']:.4f} | {c['support']} |"
        for n, c in per_label.items()
    ]
    lines += ["", "## Confusion matrices", "", "![confusion matrices](confusion_matrix.png)", ""]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return result
