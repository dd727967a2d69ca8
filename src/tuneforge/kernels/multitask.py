"""The multi-task loss: one shared backbone, one head per sub-task, one scalar to minimise.

Layout of a batch (what `tuneforge.models.multitask.MultiTaskModel` produces and the multitask task encodes):
the heads' logits side by side in one tensor `[batch, sum(widths)]`, and the labels side by side in one tensor
`[batch, sum(label widths)]`. A single-label sub-task has `width` logits and one label column (the class id, or
IGNORE when the row has no label for it); a multi-label sub-task has `width` logits and `width` label columns
(0/1 per class, or IGNORE in every column when the row has no label for it). One tensor each way keeps the
Trainer's batching, gathering and evaluation unchanged.

Loss per sub-task: the mean over the rows that have its label (cross-entropy, or binary cross-entropy averaged
over the classes for multi-label); a sub-task with no labelled row in the batch contributes nothing (not a zero
that would still move the uncertainty weights). The total is a weighted sum:

    fixed        sum_i w_i * L_i
    uncertainty  sum_i w_i * (exp(-s_i) * L_i + s_i / 2)      s_i = log sigma_i^2, learned

the second being Kendall, Gal & Cipolla (2018)'s homoscedastic-uncertainty weighting in its classification form
(1/sigma^2 * L + log sigma): a sub-task whose loss stays high gets a larger sigma, hence a smaller weight, and the
log term keeps sigma from growing without bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100.0


@dataclass(frozen=True)
class HeadLayout:
    """One sub-task's place in the side-by-side tensors."""

    name: str
    width: int  # number of classes (logit columns)
    multi_label: bool  # True: `width` label columns of 0/1; False: one label column of class ids

    @property
    def label_width(self) -> int:
        return self.width if self.multi_label else 1


def offsets(layouts: list[HeadLayout]) -> list[tuple[slice, slice]]:
    """(logit columns, label columns) of each sub-task, in order."""
    out, lo, la = [], 0, 0
    for h in layouts:
        out.append((slice(lo, lo + h.width), slice(la, la + h.label_width)))
        lo, la = lo + h.width, la + h.label_width
    return out


def labelled_rows(labels: torch.Tensor) -> torch.Tensor:
    """Rows of one sub-task's label columns that carry a label (bool [batch])."""
    return labels[:, 0] != IGNORE


def subtask_losses(logits: torch.Tensor, labels: torch.Tensor, layouts: list[HeadLayout]) -> list[torch.Tensor | None]:
    """Each sub-task's mean loss over its labelled rows of the batch, or None when it has none."""
    out: list[torch.Tensor | None] = []
    for h, (lcols, ycols) in zip(layouts, offsets(layouts)):
        y = labels[:, ycols]
        rows = labelled_rows(y)
        if not bool(rows.any()):
            out.append(None)
            continue
        z = logits[rows][:, lcols].float()
        if h.multi_label:
            out.append(F.binary_cross_entropy_with_logits(z, y[rows].float()))
        else:
            out.append(F.cross_entropy(z, y[rows, 0].long()))
    return out


def multitask_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    layouts: list[HeadLayout],
    weights: torch.Tensor | list[float],
    log_vars: torch.Tensor | None = None,
) -> torch.Tensor:
    """The weighted sum of the sub-task losses (see the module docstring).

    Args:
        logits: [batch, sum of widths], the heads side by side.
        labels: [batch, sum of label widths], IGNORE where a row has no label for a sub-task.
        layouts: the sub-tasks in column order.
        weights: one fixed weight per sub-task.
        log_vars: learned s_i = log sigma_i^2 per sub-task (uncertainty weighting), or None (fixed weights).
    Returns a scalar; zero (with a graph through `logits`) when no row of the batch has any label."""
    w = torch.as_tensor(weights, dtype=torch.float32, device=logits.device)
    total = logits.sum() * 0.0
    for i, loss in enumerate(subtask_losses(logits, labels, layouts)):
        if loss is None:
            continue
        if log_vars is None:
            total = total + w[i] * loss
        else:
            s = log_vars[i].float()
            total = total + w[i] * (torch.exp(-s) * loss + 0.5 * s)
    return total
