"""The Bradley-Terry loss of reward models, from the scalar rewards of the chosen and rejected answers of each pair.

The caller runs the reward model over the 2 x B rows of a batch (the chosen answers first, then the rejected ones,
as one forward pass) and hands in the two halves of its one-column output. Nothing here runs a model.

    loss = mean(-logsigmoid(r_c - r_r - m)) + c * mean((r_c + r_r)^2)

with `m` the optional per-pair margin (the data's `margin` column; 0 without one) and `c` the optional
center_rewards_coefficient (Eisenstein et al. 2023: keeps the rewards centred on zero; None or 0 = off).
This is TRL 1.16's RewardTrainer.compute_loss (trl/trainer/reward_trainer.py, lines 786-795):

    rewards_chosen, rewards_rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
    loss = -logsigmoid(rewards_chosen - rewards_rejected - inputs["margin"]).mean()   # without margin: no "- m"
    if center_rewards_coefficient is not None:
        loss += center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)

(tests/test_reward_task.py calls that method on the same rewards). Half-precision rewards are computed in float32.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


class RewardLoss(NamedTuple):
    """`loss` (a scalar, what training minimises); `losses` the Bradley-Terry term of each pair [B] (without the
    centring term, which is a batch mean); `chosen` / `rejected` the rewards [B], detached, in float32."""

    loss: Tensor
    losses: Tensor
    chosen: Tensor
    rejected: Tensor

    def stats(self) -> dict[str, float]:
        """The batch's reward accuracy (share of pairs whose chosen answer scores higher), mean margin and mean
        rewards of each side, as TRL logs them (accuracy, margin, ...)."""
        c, r = self.chosen, self.rejected
        return {
            "reward_accuracy": (c > r).float().mean().item(),
            "reward_margin": (c - r).mean().item(),
            "rewards_chosen": c.mean().item(),
            "rewards_rejected": r.mean().item(),
        }


def _f(x: Tensor) -> Tensor:
    """Half precision up to float32; float32 / float64 kept."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def split_rewards(scores: Tensor) -> tuple[Tensor, Tensor]:
    """The chosen and rejected rewards [B] of a reward model's output for 2 x B rows ([2B] or [2B, 1]), chosen
    first. Raises ValueError for an odd number of rows or more than one output column."""
    if scores.ndim == 2:
        if scores.shape[1] != 1:
            raise ValueError(f"a reward model has one output per row, got {scores.shape[1]}")
        scores = scores[:, 0]
    if scores.ndim != 1 or scores.shape[0] % 2:
        raise ValueError(f"expected 2 x B rewards (chosen first, then rejected), got shape {tuple(scores.shape)}")
    half = scores.shape[0] // 2
    return scores[:half], scores[half:]


def bradley_terry_loss(
    chosen: Tensor, rejected: Tensor, margin: Tensor | None = None, center_rewards_coefficient: float | None = None
) -> RewardLoss:
    """The reward model's loss on B pairs.

    Args:
        chosen, rejected: the rewards [B] of the chosen and the rejected answers.
        margin: per-pair margins [B] the chosen reward must exceed the rejected one by (None: 0).
        center_rewards_coefficient: weight of mean((r_c + r_r)^2) (None or 0: off). Must be >= 0.
    Returns a RewardLoss. Raises ValueError for mismatched shapes or a negative coefficient."""
    if chosen.shape != rejected.shape or chosen.ndim != 1:
        raise ValueError(
            f"chosen and rejected rewards must both be [B], got {tuple(chosen.shape)} and {tuple(rejected.shape)}"
        )
    c, r = _f(chosen), _f(rejected)
    diff = c - r
    if margin is not None:
        if margin.shape != chosen.shape:
            raise ValueError(f"margin must be [B] like the rewards, got {tuple(margin.shape)}")
        diff = diff - _f(margin).to(diff.dtype)
    losses = -F.logsigmoid(diff)
    loss = losses.mean()
    if center_rewards_coefficient:
        if center_rewards_coefficient < 0:
            raise ValueError(f"center_rewards_coefficient must be >= 0, got {center_rewards_coefficient}")
        loss = loss + center_rewards_coefficient * torch.mean((c + r) ** 2)
    return RewardLoss(loss, losses, c.detach(), r.detach())
