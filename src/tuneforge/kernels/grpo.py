"""GRPO's group-relative advantages and its clipped policy loss from per-token log-probabilities, as TRL 1.16 computes
them (tests/test_grpo_losses.py calls TRL's own GRPOTrainer._compute_loss on the same tensors).

Nothing here runs a model or a reward function. The caller samples G completions per prompt (a batch of B = P * G
rows, the G completions of a prompt next to each other), scores them, and hands in:

* `group_advantages(rewards [B], G, scale_rewards)`: each reward minus its group's mean, optionally divided by a
  standard deviation (+ 1e-4). TRL GRPOTrainer._generate_and_score_completions, multi_objective_aggregation
  "sum_then_normalize" (the default; trl/trainer/grpo_trainer.py:2761-2810, logged at 2827-2830, in TRL 1.16.0).
* `grpo_loss(per_token_logps [B, T], old [B, T] | None, ref [B, T] | None, advantages [B], completion_mask [B, T])`:
  the PPO-style clipped surrogate per token, + beta * KL (k3 estimator) when beta != 0, reduced by `loss_type`.
  TRL GRPOTrainer._compute_loss (grpo_trainer.py:3020-3290), with TRL's defaults: loss_type "dapo", beta 0.0,
  epsilon 0.2 (epsilon_high = epsilon), delta None, importance_sampling_level "token", use_bias_correction_kl True.

Not mirrored (TRL options outside this kernel): loss types cispo / sapo / luspo / vespo, top_entropy_quantile,
off_policy_mask_threshold, vLLM importance-sampling correction, the entropy bonus, MoE aux loss, and
multi_objective_aggregation "normalize_then_sum". Half-precision inputs are computed in float32.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

Tensor = torch.Tensor

#: TRL 1.16's GRPOConfig.scale_rewards values (True is "group", False is "none", as GRPOConfig.__post_init__ maps them)
SCALE_REWARDS = ("group", "batch", "none")
#: the loss types of TRL 1.16 that this kernel computes (the ones with the clipped surrogate and a token reduction)
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
#: TRL's std epsilon: advantages / (std + 1e-4)
STD_EPS = 1e-4


def _f(x: Tensor) -> Tensor:
    """Half precision and integers up to float32; float32 / float64 kept."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def scale_rewards_mode(scale_rewards: str | bool) -> str:
    """TRL's `scale_rewards` as one of "group", "batch", "none": True -> "group", False -> "none" (GRPOConfig
    .__post_init__); anything else is a ValueError naming the choices."""
    mode = {True: "group", False: "none"}[scale_rewards] if isinstance(scale_rewards, bool) else scale_rewards
    if mode not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)} (or True / False), got {mode!r}")
    return mode


def nanstd(x: Tensor, dim: int | None = None) -> Tensor:
    """Standard deviation ignoring NaNs, with Bessel's correction (n - 1); NaN where fewer than 2 values are left
    (TRL's trl.trainer.utils.nanstd)."""
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    variance = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
    count = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    correction = torch.where(count > 1, count / (count - 1), torch.full_like(variance, float("nan")))
    std = torch.sqrt(variance * correction)
    return std.squeeze(dim) if dim is not None else std.reshape(())


def group_advantages(
    rewards: Tensor, num_generations: int, scale_rewards: str | bool = "group"
) -> tuple[Tensor, dict[str, float]]:
    """GRPO's advantages of `rewards` [B] (B = prompts * num_generations, each prompt's completions consecutive).

    advantage_i = r_i - mean(r over i's group), then, unless scale_rewards is "none" / False, divided by
    (std + 1e-4) where std is the unbiased (n - 1) standard deviation of i's group ("group" / True, the default) or
    of the whole batch ("batch"). NaN rewards (completions no reward function could score) are left out of the
    means and standard deviations and get advantage 0. A group of 1 (num_generations 1) has std 0.

    Returns (advantages [B] in the rewards' float dtype, stats) with stats, as TRL logs them:
    `reward` the batch's mean reward, `reward_std` its unbiased std (NaN for a batch of one),
    `frac_reward_zero_std` TRL's metric: the fraction of rows whose std (the one the mode reads: the group's for
    "group" and "none", the batch's for "batch") is 0 by torch.isclose, which for "group" / "none" is the fraction of
    groups whose rewards are all equal, and for "batch" is 1.0 or 0.0; and `frac_groups_zero_std` the fraction of
    groups whose rewards are all equal (std 0 by torch.isclose) whatever the mode: those groups teach nothing."""
    mode = scale_rewards_mode(scale_rewards)
    rewards = _f(rewards.detach()).reshape(-1)
    if num_generations < 1 or rewards.numel() % num_generations:
        raise ValueError(f"{rewards.numel()} rewards cannot be split into groups of num_generations={num_generations}")
    grouped = rewards.view(-1, num_generations)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations)
    group_std = nanstd(grouped, dim=1) if num_generations > 1 else torch.zeros(grouped.shape[0], dtype=rewards.dtype)
    group_std = group_std.repeat_interleave(num_generations)
    if mode == "batch":
        std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    else:
        std = group_std
    advantages = rewards - mean
    if mode != "none":
        advantages = advantages / (std + STD_EPS)
    advantages = torch.nan_to_num(advantages, nan=0.0)
    zero = torch.isclose(std, torch.zeros_like(std))
    group_zero = torch.isclose(group_std, torch.zeros_like(group_std)).view(-1, num_generations)[:, 0]
    stats = {
        "reward": torch.nanmean(rewards).item(),
        "reward_std": nanstd(rewards).item(),
        "frac_reward_zero_std": zero.float().mean().item(),
        "frac_groups_zero_std": group_zero.float().mean().item(),
    }
    return advantages, stats


class GRPOLoss(NamedTuple):
    """`loss` the scalar to minimise (one micro-batch: see `grpo_loss` for gradient accumulation); `metrics` the
    values TRL logs for it (one process): `kl` (only when beta != 0), `clip_ratio/low_mean`, `clip_ratio/high_mean`,
    `clip_ratio/region_mean`, `clip_ratio/low_min`, `clip_ratio/high_max`."""

    loss: Tensor
    metrics: dict[str, float]


def _check_shapes(logps: Tensor, mask: Tensor, advantages: Tensor, **others: Tensor | None) -> None:
    if logps.dim() != 2 or mask.shape != logps.shape:
        raise ValueError(
            f"per_token_logps and completion_mask must both be [B, T], got {tuple(logps.shape)} and {tuple(mask.shape)}"
        )
    for name, value in others.items():
        if value is not None and value.shape != logps.shape:
            raise ValueError(
                f"{name} must be [B, T] like per_token_logps {tuple(logps.shape)}, got {tuple(value.shape)}"
            )
    if advantages.shape not in ((logps.shape[0],), (logps.shape[0], 1), tuple(logps.shape)):
        raise ValueError(f"advantages must be [B] (or [B, T]) with B = {logps.shape[0]}, got {tuple(advantages.shape)}")


def grpo_loss(
    per_token_logps: Tensor,
    old_per_token_logps: Tensor | None,
    ref_per_token_logps: Tensor | None,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    loss_type: str = "dapo",
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    delta: float | None = None,
    max_completion_length: int | None = None,
    num_items_in_batch: float | Tensor | None = None,
    importance_sampling_level: str = "token",
    use_bias_correction_kl: bool = True,
) -> GRPOLoss:
    """GRPO's loss on one batch, exactly TRL 1.16's GRPOTrainer._compute_loss for the loss types in LOSS_TYPES.

    Inputs: `per_token_logps` [B, T] the policy's log-probs of the sampled completion tokens (with grad);
    `old_per_token_logps` [B, T] those of the policy that sampled them, or None for the current policy detached (TRL
    skips computing them when num_iterations == 1: the ratio is then exactly 1 and only its gradient is used);
    `ref_per_token_logps` [B, T] the reference model's (needed when beta != 0); `advantages` [B] (or [B, T]);
    `completion_mask` [B, T] 1 on the completion tokens that count (TRL: completion_mask * tool_mask).

    Per token, with log_ratio = logp - old (importance_sampling_level "token"; "sequence" (GSPO) uses one ratio per
    sequence, the masked mean of log_ratio over its tokens):

        coef_1 = exp(log_ratio)
        kl     = exp(ref - logp) - (ref - logp) - 1              (k3 estimator; only when beta != 0)
        kl     = kl * coef_1                                     (when use_bias_correction_kl, TRL's default)
        coef_2 = clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high) (epsilon_high None: = epsilon_low)
        coef_1 = min(coef_1, delta)                               (two-sided clipping, when delta is given)
        loss_t = -min(coef_1 * A, coef_2 * A) + beta * kl

    reduced over the masked tokens by `loss_type`:

        grpo     mean over sequences of (sum of the sequence's loss_t / its token count, at least 1)
        bnpo     sum of all loss_t / number of completion tokens in this batch (at least 1)
        dr_grpo  sum of all loss_t / (B * max_completion_length)             (max_completion_length required)
        dapo     sum of all loss_t / num_items_in_batch (at least 1); default: this batch's completion tokens

    Gradient accumulation (not applied here): TRL divides the grpo / bnpo / dr_grpo loss by the number of accumulation
    steps in training; for dapo it passes num_items_in_batch = completion tokens of the whole generation batch over
    all processes / num_processes * accumulation steps / steps_per_generation instead, which the caller gives here.

    Metrics (TRL's names): `kl` the masked mean over all completion tokens of the KL term as it enters the loss
    (only when beta != 0); with `is_low = coef_1 < 1 - epsilon_low and A < 0`, `is_high = coef_1 > 1 + epsilon_high
    and A > 0` (coef_1 after the delta clamp), `clip_ratio/low_mean`, `clip_ratio/high_mean`,
    `clip_ratio/region_mean` (low or high) are their means over all completion tokens, `clip_ratio/low_min` the
    smallest per-sequence mean of is_low and `clip_ratio/high_max` the largest of is_high (sequences without
    completion tokens left out). With importance_sampling_level "sequence" the clip means are over sequences."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown GRPO loss_type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
    if importance_sampling_level not in ("token", "sequence"):
        raise ValueError(f"importance_sampling_level must be 'token' or 'sequence', got {importance_sampling_level!r}")
    if loss_type == "dr_grpo" and not max_completion_length:
        raise ValueError("loss_type dr_grpo needs max_completion_length (its constant normaliser)")
    if beta != 0.0 and ref_per_token_logps is None:
        raise ValueError(f"beta={beta} needs the reference log-probs (ref_per_token_logps)")
    _check_shapes(
        per_token_logps,
        completion_mask,
        advantages,
        old_per_token_logps=old_per_token_logps,
        ref_per_token_logps=ref_per_token_logps,
    )
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    logps = _f(per_token_logps)
    mask = _f(completion_mask).to(logps.dtype)
    adv = _f(advantages).to(logps.dtype)
    adv = adv.unsqueeze(1) if adv.dim() == 1 else adv
    old = logps.detach() if old_per_token_logps is None else _f(old_per_token_logps).to(logps.dtype)

    log_ratio = logps - old
    if importance_sampling_level == "token":
        log_weights = log_ratio
    else:
        log_weights = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(log_weights)

    per_token_kl = None
    if beta != 0.0:
        ref = _f(ref_per_token_logps).to(logps.dtype)
        per_token_kl = torch.exp(ref - logps) - (ref - logps) - 1
        if use_bias_correction_kl:
            per_token_kl = per_token_kl * coef_1

    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    if delta is not None:
        coef_1 = torch.clamp(coef_1, max=delta)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    if per_token_kl is not None:
        per_token_loss = per_token_loss + beta * per_token_kl

    masked = per_token_loss * mask
    if loss_type == "grpo":
        loss = (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = masked.sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = masked.sum() / (per_token_loss.size(0) * max_completion_length)
    else:
        items = mask.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=logps.dtype)
        loss = masked.sum() / items.clamp(min=1.0)

    metrics = _clip_metrics(coef_1.detach(), adv, mask, epsilon_low, epsilon_high)
    if per_token_kl is not None:
        metrics = {"kl": _global_masked_mean(per_token_kl.detach(), mask), **metrics}
    return GRPOLoss(loss, metrics)


def _global_masked_mean(x: Tensor, mask: Tensor) -> float:
    """Mean of x over the masked tokens ([B, T]), or over sequences for one value per sequence ([B, 1])."""
    if x.shape[1] == 1:
        return (x.sum() / max(float(x.shape[0]), 1.0)).item()
    return ((x * mask).sum() / mask.sum().clamp(min=1.0)).item()


def _masked_seq_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Per sequence: the mean of x over its masked tokens (NaN for a sequence without any), or x itself ([B, 1])."""
    if x.shape[1] == 1:
        return x.squeeze(1)
    return (x * mask).sum(-1) / mask.sum(-1)


def _nan_extreme(x: Tensor, largest: bool) -> float:
    kept = x[~torch.isnan(x)]
    if kept.numel() == 0:
        return float("nan")
    return (kept.max() if largest else kept.min()).item()


def _clip_metrics(coef_1: Tensor, adv: Tensor, mask: Tensor, epsilon_low: float, epsilon_high: float) -> dict:
    is_low = ((coef_1 < 1 - epsilon_low) & (adv < 0)).to(mask.dtype)
    is_high = ((coef_1 > 1 + epsilon_high) & (adv > 0)).to(mask.dtype)
    region = torch.maximum(is_low, is_high)
    return {
        "clip_ratio/low_mean": _global_masked_mean(is_low, mask),
        "clip_ratio/high_mean": _global_masked_mean(is_high, mask),
        "clip_ratio/region_mean": _global_masked_mean(region, mask),
        "clip_ratio/low_min": _nan_extreme(_masked_seq_mean(is_low, mask), largest=False),
        "clip_ratio/high_max": _nan_extreme(_masked_seq_mean(is_high, mask), largest=True),
    }
