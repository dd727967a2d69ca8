"""GRPO losses (kernels/grpo.py) against TRL 1.16's own code on the same random float64 batch, to 1e-6.

`grpo_loss` is compared with GRPOTrainer._compute_loss (trl/trainer/grpo_trainer.py:3020-3290 in TRL 1.16.0),
called unbound on a light stand-in `self` carrying the attributes it reads, whose
`_get_per_token_logps_and_entropies` returns our per-token log-probs: TRL computes the ratio, clipping, KL,
reduction and logged metrics itself, and the gradient with respect to the log-probs is compared too.
`group_advantages` is compared with TRL's advantage computation (_generate_and_score_completions,
grpo_trainer.py:2761-2810 and 2827-2830, re-stated line by line below with TRL's own `nanstd`, since it sits inside
the generation method) and with hand-made numbers."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl import GRPOTrainer
from trl.trainer.utils import nanstd as trl_nanstd

from tuneforge.kernels.grpo import LOSS_TYPES, group_advantages, grpo_loss, scale_rewards_mode

pytestmark = pytest.mark.unit

B, T, G = 8, 7, 4  # completions, completion length, generations per prompt
MAX_LEN = 10  # max_completion_length for dr_grpo (larger than T, as when no completion reached the limit)
F64 = torch.float64


def close(actual, expected):
    torch.testing.assert_close(
        torch.as_tensor(actual, dtype=F64), torch.as_tensor(expected, dtype=F64), rtol=0, atol=1e-6, equal_nan=True
    )


class Accelerator:
    """What GRPOTrainer._compute_loss asks of accelerate on one process."""

    device = torch.device("cpu")
    num_processes = 1

    @staticmethod
    def gather(x):
        return x

    @staticmethod
    def reduce(x, reduction="sum"):
        return x


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(B, T, dtype=torch.long)
    for i, n in enumerate([7, 3, 5, 1, 6, 7, 2, 4]):
        mask[i, :n] = 1
    logps = -3 * torch.rand(B, T, generator=g, dtype=F64)
    # old log-probs 0.3 nats away on average: ratios both below 0.8 and above 1.2
    old = logps + 0.3 * torch.randn(B, T, generator=g, dtype=F64)
    ref = logps + 0.5 * torch.randn(B, T, generator=g, dtype=F64)
    advantages = torch.tensor([1.2, -0.4, -0.9, 0.1, 0.7, -1.3, 0.0, 0.6], dtype=F64)
    return SimpleNamespace(mask=mask, logps=logps, old=old, ref=ref, advantages=advantages)


def trl_loss(b, old, loss_type, beta, epsilon=0.2, epsilon_high=None, delta=None, level="token", bias_kl=True):
    """TRL's loss, the gradient with respect to the log-probs, and the metrics it logged."""
    logps = b.logps.clone().requires_grad_(True)
    standin = SimpleNamespace(
        model=SimpleNamespace(training=False),
        accelerator=Accelerator(),
        aux_loss_enabled=False,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level=level,
        beta=beta,
        loss_type=loss_type,
        epsilon_low=epsilon,
        epsilon_high=epsilon if epsilon_high is None else epsilon_high,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        max_completion_length=MAX_LEN,
        current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False,
        args=SimpleNamespace(use_bias_correction_kl=bias_kl, delta=delta, steps_per_generation=1),
        _metrics=defaultdict(lambda: defaultdict(list)),
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
    )
    inputs = {
        "prompt_ids": torch.ones(B, 3, dtype=torch.long),
        "prompt_mask": torch.ones(B, 3, dtype=torch.long),
        "completion_ids": torch.ones(B, T, dtype=torch.long),
        "completion_mask": b.mask,
        "advantages": b.advantages,
        "num_items_in_batch": b.mask.sum(),
    }
    if old is not None:
        inputs["old_per_token_logps"] = old
    if beta != 0.0:
        inputs["ref_per_token_logps"] = b.ref
    loss = GRPOTrainer._compute_loss(standin, None, inputs)
    (grad,) = torch.autograd.grad(loss, logps)
    metrics = {k: v[-1] for k, v in standin._metrics["eval"].items() if k != "entropy"}
    return loss.detach(), grad, metrics


def ours(b, old, loss_type, beta, epsilon=0.2, epsilon_high=None, delta=None, level="token", bias_kl=True):
    logps = b.logps.clone().requires_grad_(True)
    result = grpo_loss(
        logps,
        old,
        b.ref if beta != 0.0 else None,
        b.advantages,
        b.mask,
        loss_type=loss_type,
        beta=beta,
        epsilon_low=epsilon,
        epsilon_high=epsilon_high,
        delta=delta,
        max_completion_length=MAX_LEN,
        importance_sampling_level=level,
        use_bias_correction_kl=bias_kl,
    )
    (grad,) = torch.autograd.grad(result.loss, logps)
    return result.loss.detach(), grad, result.metrics


def check(b, with_old, loss_type, beta, **kw):
    old = b.old if with_old else None
    loss, grad, metrics = ours(b, old, loss_type, beta, **kw)
    t_loss, t_grad, t_metrics = trl_loss(b, old, loss_type, beta, **kw)
    close(loss, t_loss)
    close(grad, t_grad)
    assert set(metrics) == set(t_metrics)
    for key, value in metrics.items():
        close(value, t_metrics[key])
    return metrics


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("with_old", [False, True], ids=["old=None", "old=given"])
def test_loss_matches_trl(batch, loss_type, beta, with_old):
    metrics = check(batch, with_old, loss_type, beta)
    assert ("kl" in metrics) == (beta != 0.0)
    if with_old:  # the batch clips on both sides
        assert metrics["clip_ratio/low_mean"] > 0 and metrics["clip_ratio/high_mean"] > 0
    else:  # ratio 1: nothing clipped
        assert metrics["clip_ratio/region_mean"] == 0


@pytest.mark.parametrize(
    "kw",
    [
        {"epsilon": 0.1, "epsilon_high": 0.28},  # DAPO's clip-higher
        {"delta": 1.25},  # INTELLECT-2's two-sided clipping
        {"level": "sequence"},  # GSPO
        {"bias_kl": False},
    ],
    ids=["clip-higher", "delta", "sequence-level", "no-kl-bias-correction"],
)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_options_match_trl(batch, loss_type, kw):
    check(batch, True, loss_type, 0.04, **kw)


def test_loss_normalisations_by_hand(batch):
    """On-policy with beta 0 every token's loss is -A, so the reductions are plain counts."""
    n = batch.mask.sum(-1).to(F64)
    per_seq = -batch.advantages * n  # sum over each sequence's tokens
    kw = {"max_completion_length": MAX_LEN}

    def run(loss_type, **extra):
        return grpo_loss(batch.logps, None, None, batch.advantages, batch.mask, loss_type=loss_type, **kw, **extra)

    close(run("grpo").loss, -batch.advantages.mean())
    close(run("bnpo").loss, per_seq.sum() / n.sum())
    close(run("dapo").loss, per_seq.sum() / n.sum())
    close(run("dapo", num_items_in_batch=100).loss, per_seq.sum() / 100)
    close(run("dr_grpo").loss, per_seq.sum() / (B * MAX_LEN))


def test_loss_arguments_are_checked(batch):
    args = (batch.logps, None, None, batch.advantages, batch.mask)
    with pytest.raises(ValueError, match="unknown GRPO loss_type 'ppo'"):
        grpo_loss(*args, loss_type="ppo")
    with pytest.raises(ValueError, match="dr_grpo needs max_completion_length"):
        grpo_loss(*args, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="needs the reference log-probs"):
        grpo_loss(*args, beta=0.1)
    with pytest.raises(ValueError, match="advantages must be"):
        grpo_loss(batch.logps, None, None, batch.advantages[:3], batch.mask)
    with pytest.raises(ValueError, match="old_per_token_logps must be"):
        grpo_loss(batch.logps, batch.old[:, :3], None, batch.advantages, batch.mask)


def test_half_precision_is_computed_in_float32(batch):
    result = grpo_loss(
        batch.logps.half(), batch.old.half(), batch.ref.half(), batch.advantages.half(), batch.mask, beta=0.04
    )
    assert result.loss.dtype == torch.float32
    assert math.isfinite(result.loss.item())


# ---- advantages ---------------------------------------------------------------------------------------------------
def trl_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards) -> tuple[torch.Tensor, dict]:
    """grpo_trainer.py:2761-2790, 2810 and 2827-2830 (multi_objective_aggregation "sum_then_normalize", one reward
    column of weight 1, so `rewards` is already the weighted sum; 2754-2759: a NaN reward is an unscorable
    completion)."""
    scale_rewards = {True: "group", False: "none"}.get(scale_rewards, scale_rewards)  # grpo_config.py:1076
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        if num_generations > 1:
            std_rewards = trl_nanstd(rewards.view(-1, num_generations), dim=1)
            std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
        else:
            std_rewards = torch.zeros_like(rewards)
    elif scale_rewards == "batch":
        std_rewards = trl_nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    is_std_zero = torch.isclose(std_rewards, torch.zeros_like(std_rewards))
    advantages = torch.nan_to_num(advantages, nan=0.0)
    stats = {
        "reward": torch.nanmean(rewards).item(),
        "reward_std": trl_nanstd(rewards).item(),
        "frac_reward_zero_std": is_std_zero.float().mean().item(),
    }
    return advantages, stats


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none", True, False])
@pytest.mark.parametrize("num_generations", [1, 2, 4])
def test_advantages_match_trl(scale_rewards, num_generations):
    g = torch.Generator().manual_seed(3)
    rewards = torch.randint(0, 3, (12,), generator=g).to(F64) + 0.5 * torch.rand(12, generator=g, dtype=F64)
    rewards[4:8] = 1.0  # an all-equal group (for G 2 and 4)
    rewards[9] = float("nan")  # an unscorable completion
    adv, stats = group_advantages(rewards, num_generations, scale_rewards)
    t_adv, t_stats = trl_advantages(rewards, num_generations, scale_rewards)
    close(adv, t_adv)
    for key, value in t_stats.items():
        close(stats[key], value)


def test_advantages_by_hand():
    """Two groups of 4: [1, 0, 0, 1] (mean 0.5, unbiased std sqrt(1/3)) and [2, 2, 2, 2] (all equal)."""
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0], dtype=F64)
    adv, stats = group_advantages(rewards, 4, "none")
    close(adv, [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    adv, stats = group_advantages(rewards, 4)  # "group", TRL's default
    s = 0.5 / (math.sqrt(1 / 3) + 1e-4)  # 0.865875...
    close(adv, [s, -s, -s, s, 0, 0, 0, 0])
    assert abs(s - 0.8658754) < 1e-6
    assert stats["frac_reward_zero_std"] == 0.5 and stats["frac_groups_zero_std"] == 0.5
    close(stats["reward"], 1.25)
    close(stats["reward_std"], math.sqrt(sum((r - 1.25) ** 2 for r in rewards.tolist()) / 7))
    adv, stats = group_advantages(rewards, 4, "batch")
    batch_std = stats["reward_std"]  # 0.886405...
    close(adv, [0.5 / (batch_std + 1e-4)] + [-0.5 / (batch_std + 1e-4)] * 2 + [0.5 / (batch_std + 1e-4)] + [0] * 4)
    # TRL's metric reads the std the mode uses: the batch's is not 0; one group of two is still all equal
    assert stats["frac_reward_zero_std"] == 0.0 and stats["frac_groups_zero_std"] == 0.5
    _, stats = group_advantages(torch.tensor([3.0, 3.0, 3.0, 3.0]), 2, "batch")
    assert stats["frac_reward_zero_std"] == 1.0 and stats["frac_groups_zero_std"] == 1.0


def test_advantage_arguments_are_checked():
    assert scale_rewards_mode(True) == "group" and scale_rewards_mode(False) == "none"
    with pytest.raises(ValueError, match="scale_rewards must be one of group, batch, none"):
        group_advantages(torch.zeros(4), 2, "std")
    with pytest.raises(ValueError, match="cannot be split into groups of num_generations=3"):
        group_advantages(torch.zeros(4), 3)
