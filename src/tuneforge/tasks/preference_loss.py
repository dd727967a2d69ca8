"""The training loss of preference runs: chosen and rejected answers in one forward pass, their summed log-probs
gathered chunk by chunk from the last hidden states (kernels/token_logps: no batch x length x vocabulary logits),
the reference's log-probs (precomputed, the policy with the method's adapters switched off, or a frozen copy:
tasks/preference_reference.py), and the loss of kernels/preference.py. Evaluation gets the per-pair rewards as its
"predictions", from which `preference_metrics` (KTO: `kto_metrics`) computes reward accuracy, margin and log-probs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from tuneforge.config.schema import RunConfig
from tuneforge.kernels.preference import PairedLogps, UnpairedLogps, preference_loss, sft_loss
from tuneforge.kernels.token_logps import token_logps
from tuneforge.tasks.preference_config import REFERENCE_LOSSES, loss_parameters
from tuneforge.tasks.preference_reference import Reference, core, disable_dropout, unwrap

#: config keys of models whose logits are transformed after the output layer
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")
#: the names of the arrays evaluation collects per pair, in order (the loss's outputs, `preference_metrics` reads)
PREDICTIONS = ("chosen_rewards", "rejected_rewards", "chosen_logps", "rejected_logps")


def transforms_logits(core: nn.Module) -> bool:
    """Whether the model changes its logits after the output layer (then they are read from its own forward)."""
    cfg = getattr(core, "config", None)
    return any(getattr(cfg, k, None) not in (None, 1, 1.0) for k in LOGIT_TRANSFORMS)


def model_token_logps(
    model: nn.Module, inputs: dict, labels: torch.Tensor, entropy: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log p(labels[:, t + 1]) at every position t [B, T] (0 where that label is -100) under `model` called with
    `inputs` (input_ids, attention_mask, position_ids as the caller has them), and with `entropy` the entropy of the
    next-token distribution at the same positions (no gradient). The logits are formed chunk by chunk from the final
    hidden states through the output layer; a model that transforms its logits after that layer (soft-capping,
    scaling) is read from its full logits instead. Shared by the preference and GRPO losses."""
    n = labels.shape[1]
    base = core(model)
    head = base.get_output_embeddings()
    if head is not None and not transforms_logits(base):
        kw = {**inputs, "output_hidden_states": True, "use_cache": False}
        try:
            out = model(**kw, logits_to_keep=1)  # the logits of one position only: the head runs chunked below
        except TypeError:  # a model without logits_to_keep
            out = model(**kw)
        # prompt tuning puts virtual tokens in front: the real tokens' states are the last n
        hidden = out.hidden_states[-1][:, -n:]
        vocab = base.config.get_text_config().vocab_size
        return token_logps(hidden, head, labels, vocab_size=vocab, entropy=entropy)
    logits = model(**inputs, use_cache=False).logits[:, -n:].float()
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    logp = torch.log_softmax(logits, -1)
    keep = shifted != -100
    picked = logp.gather(-1, shifted.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
    if not entropy:
        return picked
    with torch.no_grad():
        ent = -(logp.exp() * logp).sum(-1) * keep
    return picked, ent


def policy_logps(model: nn.Module, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed answer log-probs [rows], answer token counts [rows]) of the batch's rows under `model`."""
    labels = inputs["labels"]
    per_token = model_token_logps(
        model, {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}, labels
    )
    return per_token.sum(-1), (labels[:, 1:] != -100).sum(-1)


class PreferenceLoss:
    """`loss(model, inputs) -> (loss, outputs)` for the Trainer (tasks/base.Task.training_loss). `without_adapters`:
    the method's `disabled_adapters` hook (the reference is then the same weights with the adapters off). Pairs that
    carry precomputed reference log-probs (`ref_logps`, tasks/preference_reference.py) use them instead."""

    def __init__(self, cfg: RunConfig, without_adapters: Callable | None = None):
        self.cfg = cfg
        self.name = cfg.task.loss
        self.params = loss_parameters(cfg)
        self.sft_weight = 1.0 if self.name == "orpo" else cfg.task.sft_weight
        self.needs_reference = self.name in REFERENCE_LOSSES
        self.reference = Reference(cfg, without_adapters)
        self._prepared_models: set[int] = set()

    def __call__(self, model: nn.Module, inputs: dict):
        if id(model) not in self._prepared_models:
            disable_dropout(model)
            self._prepared_models.add(id(model))
        logps, tokens = policy_logps(model, inputs)
        half = logps.shape[0] // 2
        ref_c = ref_r = None
        if self.needs_reference:
            ref_logps = inputs.get("ref_logps")  # precomputed (tasks/preference_reference.py)
            if ref_logps is None:
                with torch.no_grad(), self.reference(unwrap(model)) as ref:
                    ref_logps, _ = policy_logps(ref, inputs)
            ref_logps = ref_logps.to(logps.device, logps.dtype)
            ref_c, ref_r = ref_logps[:half], ref_logps[half:]
        if self.name == "kto":  # rows: each prompt with its own answer, then with another row's answer (the KL term)
            desirable = inputs["desirable"].to(logps.device)
            out = preference_loss(
                self.name, UnpairedLogps(logps[:half], ref_c, desirable, logps[half:], ref_r), **self.params
            )
            rewards = self.params["beta"] * (logps[:half] - ref_c).detach()
            return out.losses.mean(), {
                "rewards": rewards,
                "desirable": desirable.float(),
                "logps": logps[:half].detach(),
                "kl": out.kl.expand(half),
            }
        pair = PairedLogps(logps[:half], logps[half:], ref_c, ref_r, tokens[:half], tokens[half:])
        out = preference_loss(self.name, pair, **self.params)
        loss = out.losses.mean()
        if self.sft_weight:
            loss = loss + sft_loss(logps[:half], tokens[:half], self.sft_weight)
        outputs = {
            "chosen_rewards": out.chosen_rewards.detach(),
            "rejected_rewards": out.rejected_rewards.detach(),
            "chosen_logps": logps[:half].detach(),
            "rejected_logps": logps[half:].detach(),
        }
        return loss, outputs


def kto_metrics(eval_pred) -> dict[str, float]:
    """KTO's answers are unpaired: reward accuracy is the share of (good, bad) answer pairs across the held-out set
    whose good answer gets the larger reward (the ROC AUC of the reward); margin and means per side; the KL term."""
    r, good, lp, kl = (np.asarray(eval_pred.predictions[i], dtype=np.float64).reshape(-1) for i in range(4))
    pos, neg = r[good > 0.5], r[good <= 0.5]
    out = {"kl": float(kl.mean())}
    if len(pos) and len(neg):
        order = np.sort(neg)
        below = np.searchsorted(order, pos, side="left")  # bad answers strictly below each good one
        ties = np.searchsorted(order, pos, side="right") - below
        out["reward_accuracy"] = float((below + 0.5 * ties).sum() / (len(pos) * len(neg)))
        out["reward_margin"] = float(pos.mean() - neg.mean())
    if len(pos):
        out.update(rewards_chosen=float(pos.mean()), logps_chosen=float(lp[good > 0.5].mean()))
    if len(neg):
        out.update(rewards_rejected=float(neg.mean()), logps_rejected=float(lp[good <= 0.5].mean()))
    return out


def preference_metrics(eval_pred) -> dict[str, float]:
    """Reward accuracy (the share of held-out pairs whose chosen answer gets the larger reward), the mean margin
    and rewards, and the mean log-probs of the chosen and rejected answers."""
    preds = eval_pred.predictions
    c, r, lc, lr = (np.asarray(preds[i], dtype=np.float64).reshape(-1) for i in range(len(PREDICTIONS)))
    return {
        "reward_accuracy": float((c > r).mean()),
        "reward_margin": float((c - r).mean()),
        "rewards_chosen": float(c.mean()),
        "rewards_rejected": float(r.mean()),
        "logps_chosen": float(lc.mean()),
        "logps_rejected": float(lr.mean()),
    }
