"""What an image classification run shows of its images: the data report (images per class and split, a grid of
augmented training images as the model sees them) and, in evaluation, a grid of the most confident mistakes.
Every grid is saved through `evaluation.plots.save_figure`, with its titles wrapped to the width of an image."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tuneforge.tasks.base import Prepared
    from tuneforge.tasks.image_classification import ImageState

#: most misclassified test images shown in the report's grid
GRID_IMAGES = 16
#: characters per line of a grid image's title (a 2.4-inch column at 7 points holds about 40)
TITLE_WIDTH = 30


def write_data_report(prepared: Prepared[ImageState], out_dir: str, limit_per_class: int | None) -> None:
    """data/report.md (and report.json): images per class and split, and a grid of augmented training images."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = prepared.report.get("class_counts", {})
    splits = [s for s in ("train", "validation", "test") if s in counts]
    p = prepared.state.preprocessing
    lines = [
        "# Data used by this run",
        "",
        "Images per split: " + ", ".join(f"{s} {prepared.sizes.get(s, 0)}" for s in splits),
        "",
        f"Model input: {p.height}x{p.width} pixels, mean {list(p.mean)}, std {list(p.std)}",
        "",
    ]
    if limit_per_class:
        lines += [f"Training images capped at {limit_per_class} per class (data.limit_per_class).", ""]
    lines += ["| class | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for name in prepared.state.labels:
        lines.append(f"| {name} | " + " | ".join(str(counts[s].get(name, 0)) for s in splits) + " |")
    train = prepared.train
    n = min(16, len(train))
    # the first rows as the model sees them (augmented; un-normalised for display)
    if n and save_grid(
        [train[i]["pixel_values"] for i in range(n)],
        [prepared.state.labels[y] for y in train.labels[:n]],
        out / "train_samples.png",
    ):
        lines += [
            "",
            "## Training images as the model sees them (augmented)",
            "",
            "![augmented training images](train_samples.png)",
        ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps({"sizes": prepared.sizes, **prepared.report}, indent=2))


def misclassified_section(
    refs: list[str], logits: np.ndarray, labels: np.ndarray, names: list[str], out_dir: Path
) -> None:
    """Save a grid of up to GRID_IMAGES misclassified images (the most confident mistakes first) and add it to
    out_dir/report.md."""
    from tuneforge.data.images import open_image
    from tuneforge.evaluation.classification import softmax

    probs = softmax(logits)
    pred = probs.argmax(-1)
    wrong = np.flatnonzero(pred != labels)
    report = out_dir / "report.md"
    if len(wrong) == 0:
        with report.open("a") as f:
            f.write("\n## Misclassified images\n\nNone: every image was classified correctly.\n")
        return
    order = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:GRID_IMAGES]
    images = [open_image(refs[i]) for i in order]
    titles = [f"{names[labels[i]]} -> {names[pred[i]]} ({probs[i, pred[i]]:.2f})" for i in order]
    if save_grid(images, titles, out_dir / "misclassified.png"):
        with report.open("a") as f:
            f.write(
                f"\n## Misclassified images\n\n{len(wrong)} of {len(labels)} images are misclassified; the "
                f"{len(order)} most confident mistakes (true -> predicted (probability)):\n\n"
                f"![misclassified images](misclassified.png)\n"
            )


def save_grid(images: list[Any], titles: list[str], path: Path) -> bool:
    """A titled grid of PIL images or normalised [3, H, W] tensors (shown min-max scaled) as a PNG; False when
    matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from tuneforge.evaluation.plots import save_figure

    n = len(images)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    # constrained layout leaves room for titles of several lines, where tight_layout let them run off the top
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        # no ticks at all: those of an axis switched off are not drawn, yet still stand in the layout check
        ax.set(xticks=[], yticks=[])
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        if hasattr(img, "permute"):
            arr = img.permute(1, 2, 0).float().numpy()
            arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-8)
        else:
            arr = np.asarray(img)
        ax.imshow(arr, interpolation="nearest")
        # long class names wrap onto more lines rather than run past the image (and out of the figure)
        ax.set_title("\n".join(textwrap.wrap(title, TITLE_WIDTH)), fontsize=7)
    save_figure(fig, path, dpi=90)
    return True
