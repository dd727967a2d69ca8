"""Preference-tuning losses from per-sequence log-probabilities, per example, with the rewards TRL logs.

The caller runs the policy (and the reference) over the chosen and rejected completions and hands in, per sequence,
the SUMMED log-probability of the completion tokens and, where a loss normalises by length, the number of those
tokens. Nothing here runs a model. Each loss returns a `PreferenceLoss`: `losses` per example (the training loss is
`losses.mean()`, plus `sft_loss(...)` for RPO / ORPO's NLL) and the detached `chosen_rewards` / `rejected_rewards`
from which `reward_stats()` gives TRL's `rewards/chosen`, `rewards/rejected`, `rewards/margins`, `rewards/accuracies`.

Every loss equals TRL 1.16's (tests/test_preference_losses.py calls TRL's own code on the same batch):

    dpo     -(1-e) logsigmoid(b d) - e logsigmoid(-b d), d = (pi_c - ref_c) - (pi_r - ref_r), e = label_smoothing
            (cDPO). TRL DPOTrainer._compute_loss, loss_type "sigmoid" (e = 0); TRL 1.16 keeps the cDPO form only in
            its "aot" loss (equal for one pair) and CPOTrainer.cpo_loss "sigmoid".
    ipo     (d_c / n_c - d_r / n_r - 1/(2b))^2 with log-ratios averaged over each completion's tokens (n, at least 1).
            DPOTrainer._compute_loss, loss_type "ipo".
    robust  rDPO: ((1-e) (-logsigmoid(b d)) + e logsigmoid(-b d)) / (1 - 2e), 0 <= e < 0.5.
            DPOTrainer._compute_loss, loss_type "robust".
    hinge   SLiC: relu(1 - b d). DPOTrainer._compute_loss, loss_type "hinge".
    orpo    -lambda logsigmoid(log odds(p_c) - log odds(p_r)), p = exp(mean token log-prob), lambda = orpo_alpha (TRL's
            ORPOConfig.beta). No reference. TRL's ORPO total is NLL(chosen) + losses.mean(): see `orpo_loss`.
            TRL experimental/orpo ORPOTrainer.odds_ratio_loss and get_batch_loss_metrics.
    simpo   -(1-e) logsigmoid(b (m_c - m_r) - gamma) - e logsigmoid(-(...)), m = mean token log-prob. No reference.
            TRL experimental/cpo CPOTrainer.cpo_loss, loss_type "simpo" (gamma = CPOConfig.simpo_gamma).
    kto     unpaired: desirable w_d (1 - sigmoid(b (r - z))), undesirable w_u (1 - sigmoid(b (z - r))), r = pi - ref,
            z = max(0, mean(pi_KL - ref_KL)) over mismatched (prompt, completion) pairs, detached.
            TRL KTOTrainer._compute_loss, loss_type "kto".

Rewards are b * (pi - ref) on summed log-probs for the reference losses (as TRL logs them, IPO included), and
b * mean token log-prob (orpo: lambda * ...) for SimPO and ORPO. Half-precision inputs are computed in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


@dataclass(frozen=True)
class PairedLogps:
    """Per-pair inputs [B]: summed completion log-probs under the policy (and the reference, for the losses that read
    one), and completion token counts (ipo, orpo, simpo)."""

    chosen: Tensor
    rejected: Tensor
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None
    chosen_tokens: Tensor | None = None
    rejected_tokens: Tensor | None = None


@dataclass(frozen=True)
class UnpairedLogps:
    """KTO's inputs [B]: summed completion log-probs under policy and reference, whether each completion is
    desirable (bool), and the summed log-probs of the KL completions (each prompt with another example's completion,
    as TRL's collator builds them) under policy and reference. TRL averages the KL term over all processes; pass
    gathered KL log-probs for that, or the local batch for one process."""

    logps: Tensor
    ref_logps: Tensor
    desirable: Tensor
    kl_logps: Tensor
    ref_kl_logps: Tensor


class PreferenceLoss(NamedTuple):
    """`losses` [B] (the loss to minimise is their mean); `chosen_rewards` / `rejected_rewards` detached, [B] for the
    paired losses, the desirable / undesirable examples' rewards for KTO; `kl` KTO's KL term (None otherwise)."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    kl: Tensor | None = None

    def reward_stats(self) -> dict[str, float]:
        """The reward metrics TRL logs for this batch (one process): rewards/chosen, rewards/rejected,
        rewards/margins and, for paired losses, rewards/accuracies; KTO adds kl and leaves out a side it lacks."""
        c, r = self.chosen_rewards, self.rejected_rewards
        if self.kl is None:
            return {
                "rewards/chosen": c.mean().item(),
                "rewards/rejected": r.mean().item(),
                "rewards/margins": (c - r).mean().item(),
                "rewards/accuracies": (c > r).float().mean().item(),
            }
        stats = {"kl": self.kl.item()}
        if c.numel():
            stats["rewards/chosen"] = c.nansum().item() / c.numel()
        if r.numel():
            stats["rewards/rejected"] = r.nansum().item() / r.numel()
        if c.numel() and r.numel():
            stats["rewards/margins"] = stats["rewards/chosen"] - stats["rewards/rejected"]
        return stats


def _f(x: Tensor) -> Tensor:
    """Half precision up to float32; float32 / float64 kept."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _need(value: Tensor | None, what: str, loss: str) -> Tensor:
    if value is None:
        raise ValueError(f"loss {loss} needs {what}")
    return _f(value)


def _logratios(logps: PairedLogps, loss: str) -> tuple[Tensor, Tensor]:
    """Policy minus reference summed log-probs of chosen and rejected."""
    ref_c = _need(logps.ref_chosen, "the reference log-probs (ref_chosen)", loss)
    ref_r = _need(logps.ref_rejected, "the reference log-probs (ref_rejected)", loss)
    return _f(logps.chosen) - ref_c, _f(logps.rejected) - ref_r


def _mean_logps(logps: PairedLogps, loss: str) -> tuple[Tensor, Tensor]:
    """Chosen and rejected policy log-probs averaged over each completion's tokens."""
    n_c = _need(logps.chosen_tokens, "token counts (chosen_tokens)", loss)
    n_r = _need(logps.rejected_tokens, "token counts (rejected_tokens)", loss)
    return _f(logps.chosen) / n_c.clamp(min=1), _f(logps.rejected) / n_r.clamp(min=1)


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def _smoothed_sigmoid(logits: Tensor, label_smoothing: float) -> Tensor:
    """-(1 - e) logsigmoid(x) - e logsigmoid(-x): the logistic loss with the label flipped with probability e."""
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5], got {label_smoothing}")
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def dpo_loss(logps: PairedLogps, beta: float = 0.1, label_smoothing: float = 0.0) -> PreferenceLoss:
    """DPO's sigmoid loss on the reward margin; label_smoothing > 0 is conservative DPO (cDPO)."""
    _check_beta(beta)
    lr_c, lr_r = _logratios(logps, "dpo")
    losses = _smoothed_sigmoid(beta * (lr_c - lr_r), label_smoothing)
    return PreferenceLoss(losses, beta * lr_c.detach(), beta * lr_r.detach())


def ipo_loss(logps: PairedLogps, beta: float = 0.1) -> PreferenceLoss:
    """IPO as TRL computes it: the log-ratios averaged per completion token, squared distance to 1/(2 beta)."""
    _check_beta(beta)
    lr_c, lr_r = _logratios(logps, "ipo")
    n_c = _need(logps.chosen_tokens, "token counts (chosen_tokens)", "ipo").clamp(min=1)
    n_r = _need(logps.rejected_tokens, "token counts (rejected_tokens)", "ipo").clamp(min=1)
    losses = (lr_c / n_c - lr_r / n_r - 1 / (2 * beta)) ** 2
    return PreferenceLoss(losses, beta * lr_c.detach(), beta * lr_r.detach())


def robust_loss(logps: PairedLogps, beta: float = 0.1, label_smoothing: float = 0.0) -> PreferenceLoss:
    """Robust DPO (rDPO): unbiased under preference labels flipped with probability label_smoothing (< 0.5)."""
    _check_beta(beta)
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5) for the robust loss, got {label_smoothing}")
    lr_c, lr_r = _logratios(logps, "robust")
    logits = beta * (lr_c - lr_r)
    e = label_smoothing
    losses = (-(1 - e) * F.logsigmoid(logits) + e * F.logsigmoid(-logits)) / (1 - 2 * e)
    return PreferenceLoss(losses, beta * lr_c.detach(), beta * lr_r.detach())


def hinge_loss(logps: PairedLogps, beta: float = 0.1) -> PreferenceLoss:
    """SLiC's hinge on the reward margin: relu(1 - beta * margin)."""
    _check_beta(beta)
    lr_c, lr_r = _logratios(logps, "hinge")
    losses = torch.relu(1 - beta * (lr_c - lr_r))
    return PreferenceLoss(losses, beta * lr_c.detach(), beta * lr_r.detach())


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -log 2."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(logps: PairedLogps, orpo_alpha: float = 0.1) -> PreferenceLoss:
    """ORPO's odds-ratio term, `losses = -orpo_alpha * logsigmoid(log odds ratio)` on the mean token log-probs.

    ORPO's objective also has the chosen sequences' NLL, which this does not return: the caller adds
    `sft_loss(chosen_logps, chosen_tokens, 1.0)`. TRL's ORPO total is `nll - (orpo_alpha * logsigmoid(...)).mean()`,
    i.e. `sft_loss(...) + losses.mean()`, where TRL's NLL is the token-mean cross-entropy of the chosen sequences over
    prompt AND completion (every non-padding token after the first), so to match TRL pass those summed log-probs and
    token counts to `sft_loss` (the odds ratio itself uses the completion only, as here)."""
    if not orpo_alpha > 0:
        raise ValueError(f"orpo_alpha must be > 0, got {orpo_alpha}")
    m_c, m_r = _mean_logps(logps, "orpo")
    log_odds = (m_c - m_r) - (_log1mexp(m_c) - _log1mexp(m_r))
    losses = -orpo_alpha * F.logsigmoid(log_odds)
    return PreferenceLoss(losses, orpo_alpha * m_c.detach(), orpo_alpha * m_r.detach())


def simpo_loss(
    logps: PairedLogps, beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0
) -> PreferenceLoss:
    """SimPO: the sigmoid loss on beta * (difference of mean token log-probs) - gamma; no reference model. beta's
    default is the SimPO paper's (TRL's CPOConfig default of 0.1 is CPO's); gamma is TRL's simpo_gamma."""
    _check_beta(beta)
    m_c, m_r = _mean_logps(logps, "simpo")
    losses = _smoothed_sigmoid(beta * (m_c - m_r) - gamma, label_smoothing)
    return PreferenceLoss(losses, beta * m_c.detach(), beta * m_r.detach())


def kto_loss(
    logps: UnpairedLogps, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
) -> PreferenceLoss:
    """KTO: each completion's reward against the batch's KL estimate, weighted by its side; losses in input order,
    chosen_rewards the desirable examples' rewards and rejected_rewards the undesirable ones'."""
    _check_beta(beta)
    desirable = logps.desirable.to(torch.bool)
    logratios = _f(logps.logps) - _f(logps.ref_logps)
    kl = (_f(logps.kl_logps) - _f(logps.ref_kl_logps)).mean().detach().clamp(min=0)
    losses = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (logratios - kl))),
        undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratios))),
    )
    rewards = beta * logratios.detach()
    return PreferenceLoss(losses, rewards[desirable], rewards[~desirable], kl)


def sft_loss(chosen_logps: Tensor, chosen_tokens: Tensor, weight: float = 1.0) -> Tensor:
    """`weight` times the chosen sequences' NLL per token over the whole batch: -weight * sum(logps) / sum(tokens).

    Added to `losses.mean()` it is RPO (TRL 1.16: DPOConfig loss_type ["sigmoid", "sft"], loss_weights [1, rpo_alpha],
    the `rpo_alpha` of earlier TRL; the "sft" term is the mean over all chosen completion tokens of the batch, not a
    mean of per-example means) and, with weight 1 over prompt and completion, ORPO's NLL term (see `orpo_loss`)."""
    return -weight * _f(chosen_logps).sum() / chosen_tokens.sum().clamp(min=1)


#: the parameters each loss reads (its keyword arguments besides the log-probs)
PARAMETERS: dict[str, tuple[str, ...]] = {
    "dpo": ("beta", "label_smoothing"),
    "ipo": ("beta",),
    "robust": ("beta", "label_smoothing"),
    "hinge": ("beta",),
    "orpo": ("orpo_alpha",),
    "simpo": ("beta", "gamma", "label_smoothing"),
    "kto": ("beta", "desirable_weight", "undesirable_weight"),
}

_LOSSES: dict[str, Callable[..., PreferenceLoss]] = {
    "dpo": dpo_loss,
    "ipo": ipo_loss,
    "robust": robust_loss,
    "hinge": hinge_loss,
    "orpo": orpo_loss,
    "simpo": simpo_loss,
    "kto": kto_loss,
}


def preference_loss(name: str, logps: PairedLogps | UnpairedLogps, **params: float) -> PreferenceLoss:
    """The loss `name` (dpo, ipo, robust, hinge, orpo, simpo, kto) on `logps` with its parameters; a parameter the loss
    does not read is a ValueError naming the losses that read it (e.g. "gamma is read by loss simpo, not dpo")."""
    if name not in _LOSSES:
        raise ValueError(f"unknown preference loss {name!r}; choose one of {', '.join(_LOSSES)}")
    for key in params:
        if key in PARAMETERS[name]:
            continue
        readers = [loss for loss, keys in PARAMETERS.items() if key in keys]
        if readers:
            raise ValueError(
                f"{key} is read by loss{'es' if len(readers) > 1 else ''} {', '.join(readers)}, not {name}"
            )
        raise ValueError(f"{key} is not a parameter of any preference loss; {name} reads {', '.join(PARAMETERS[name])}")
    wanted = UnpairedLogps if name == "kto" else PairedLogps
    if not isinstance(logps, wanted):
        raise ValueError(f"loss {name} takes {wanted.__name__}, got {type(logps).__name__}")
    return _LOSSES[name](logps, **params)
