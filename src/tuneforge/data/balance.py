"""Class imbalance: class weights for the loss, random over/under-sampling, and top-up counts for rare classes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tuneforge.errors import ConfigError


def class_weights(labels: Sequence[str], names: Sequence[str], spec) -> list[float] | None:
    """Per-class loss weights in the order of `names`, scaled so that the average weight over the training rows
    is 1 (the loss keeps its usual size, so learning rates need no retuning).

    Args:
        labels: training labels (strings).
        names: all class names, in label-id order.
        spec: `none` / None (no weights), `balanced` (n / (K * count)), or a mapping label -> weight (classes
            not listed weigh 1).

    Raises:
        ConfigError: a mapping names an unknown class, or a weight is not positive.
    """
    if spec in (None, "none"):
        return None
    labels = [str(x) for x in labels]
    counts = {n: labels.count(n) for n in names}
    if spec == "balanced":
        present = [n for n in names if counts[n] > 0]
        raw = {n: (len(labels) / (len(present) * counts[n]) if counts[n] else 1.0) for n in names}
    elif isinstance(spec, dict):
        unknown = [k for k in spec if str(k) not in counts]
        if unknown:
            raise ConfigError(f"data.balance.class_weights: unknown class '{unknown[0]}' (classes: {', '.join(names)})")
        raw = {n: 1.0 for n in names}
        for k, w in spec.items():
            if not isinstance(w, (int, float)) or w <= 0:
                raise ConfigError(f"data.balance.class_weights.{k} must be a positive number, got {w!r}")
            raw[str(k)] = float(w)
    else:
        raise ConfigError(f"data.balance.class_weights: must be none, balanced or a mapping, got {spec!r}")
    mean = sum(raw[x] for x in labels) / max(len(labels), 1)
    return [raw[n] / mean for n in names]


def resample(labels: Sequence[str], mode: str, ratio: float = 1.0, seed: int = 0) -> list[int]:
    """Row indices of the resampled training split (sorted for undersampling; originals first, then repeats,
    for oversampling).

    Args:
        labels: training labels.
        mode: `none`, `oversample` (repeat random rows of smaller classes up to ratio x the largest class) or
            `undersample` (keep at most smallest / ratio random rows per class).
        ratio: see mode; in (0, 1].
        seed: sampling seed.

    Raises:
        ConfigError: unknown mode or ratio outside (0, 1].
    """
    if mode not in ("none", "oversample", "undersample"):
        raise ConfigError(
            f"data.balance.sampling: unknown mode '{mode}' (use none, oversample, undersample or augment)"
        )
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"data.balance.ratio must be in (0, 1], got {ratio}")
    labels = [str(x) for x in labels]
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    rng = np.random.default_rng(seed)
    if mode == "none" or len(by_class) < 2:
        return list(range(len(labels)))
    if mode == "oversample":
        target = math.ceil(ratio * max(len(v) for v in by_class.values()))
        extra = []
        for lab in sorted(by_class):
            rows = by_class[lab]
            if len(rows) < target:
                extra += rng.choice(rows, size=target - len(rows), replace=True).tolist()
        return list(range(len(labels))) + extra
    cap = math.floor(min(len(v) for v in by_class.values()) / ratio)
    keep = []
    for lab in sorted(by_class):
        rows = by_class[lab]
        keep += rows if len(rows) <= cap else rng.choice(rows, size=cap, replace=False).tolist()
    return sorted(keep)


def top_up_multipliers(labels: Sequence[str], ratio: float = 1.0) -> dict[str, float]:
    """Augmented copies per example that bring every class up to ratio x the largest class.

    Raises:
        ConfigError: ratio outside (0, 1].
    """
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"data.balance.ratio must be in (0, 1], got {ratio}")
    labels = [str(x) for x in labels]
    counts = {lab: labels.count(lab) for lab in set(labels)}
    target = ratio * max(counts.values())
    return {lab: max(0.0, target / c - 1.0) for lab, c in counts.items()}


def weighted_cross_entropy(weights: Sequence[float]):
    """A Trainer `compute_loss_func`: class-weighted cross-entropy, summed and divided by the number of labelled
    items in the whole (gradient-accumulated) batch when the Trainer gives it, else averaged by weight."""
    import torch
    import torch.nn.functional as F

    w = torch.tensor(list(weights), dtype=torch.float32)

    def loss_fn(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        logits = logits.view(-1, logits.shape[-1])
        labels = labels.view(-1).to(logits.device)
        weight = w.to(device=logits.device, dtype=logits.dtype)
        if num_items_in_batch is None:
            return F.cross_entropy(logits, labels, weight=weight)
        # weights average 1 over the training rows, so sum / count estimates the same quantity as the mean
        total = F.cross_entropy(logits, labels, weight=weight, reduction="sum", ignore_index=-100)
        n = num_items_in_batch.to(logits.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch
        return total / n

    return loss_fn
