"""Cross entropy against soft targets: the loss of CutMix/MixUp batches and label smoothing, whose targets are
class distributions rather than class ids."""

from __future__ import annotations

import torch


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy against class ids (LongTensor [B]) or soft targets (FloatTensor [B, C])."""
    if targets.dim() == 1 and not targets.is_floating_point():
        return torch.nn.functional.cross_entropy(logits, targets)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(targets.to(logp.dtype) * logp).sum(dim=-1).mean()
