"""Preference losses (kernels/preference.py) against TRL 1.16's own code on the same random float64 batch, to 1e-6:
DPOTrainer._compute_loss (sigmoid, ipo, robust, hinge, aot as cDPO, sft as RPO), CPOTrainer.cpo_loss and
get_batch_loss_metrics (simpo, and sigmoid as cDPO), ORPOTrainer.odds_ratio_loss and get_batch_loss_metrics (the
total with the NLL), KTOTrainer._compute_loss (with its KL term). TRL's methods are called unbound on a light
stand-in `self` carrying the attributes they read, with a stand-in model returning the per-token log-probs (or the
logits) of the batch, so TRL computes every length normalisation, reward and reduction itself. Then the parameter
check of `preference_loss`."""

from __future__ import annotations

from collections import defaultdict
from types import MethodType, SimpleNamespace

import pytest
import torch
from trl import DPOTrainer, KTOTrainer
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer

from tuneforge.kernels.preference import PairedLogps, UnpairedLogps, preference_loss, sft_loss

pytestmark = pytest.mark.unit

B, L, V = 6, 10, 13  # pairs, sequence length, vocabulary (logits batch)
F64 = torch.float64


def close(actual, expected):
    torch.testing.assert_close(
        torch.as_tensor(actual, dtype=F64), torch.as_tensor(expected, dtype=F64), rtol=0, atol=1e-6
    )


class Accelerator:
    """What TRL's loss code asks of accelerate on one process."""

    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


def metrics_of(standin) -> dict[str, float]:
    return {k: v[-1] for k, v in standin._metrics["eval"].items()}


# ---- per-token batch: what TRL's fused LM head returns (log-probs of the completion tokens, zero elsewhere) -------
@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, B, L, dtype=torch.long)  # [chosen | rejected, pair, position]; position 0 is prompt
    for side in range(2):
        for i in range(B):
            p = int(torch.randint(1, 4, (1,), generator=g))
            c = int(torch.randint(1, L - p + 1, (1,), generator=g))
            mask[side, i, p : p + c] = 1
    shift = mask[..., 1:].to(F64)
    policy = -3 * torch.rand(2, B, L - 1, generator=g, dtype=F64) * shift
    ref = (policy + 0.8 * torch.randn(2, B, L - 1, generator=g, dtype=F64)) * shift
    return SimpleNamespace(mask=mask, policy=policy, ref=ref, counts=shift.sum(-1))


def paired(t) -> PairedLogps:
    s, r = t.policy.sum(-1), t.ref.sum(-1)
    return PairedLogps(s[0], s[1], r[0], r[1], t.counts[0], t.counts[1])


def trl_dpo(t, idx, loss_types, loss_weights=None, **attrs):
    """DPOTrainer._compute_loss on pairs `idx` (reference log-probs precomputed): the batch loss and logged metrics."""
    standin = SimpleNamespace(
        model=SimpleNamespace(training=False),
        accelerator=Accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=loss_types,
        loss_weights=loss_weights or [1.0] * len(loss_types),
        use_weighting=False,
        beta=0.1,
        label_smoothing=0.0,
        args=SimpleNamespace(discopop_tau=0.05),
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    standin.__dict__.update(attrs)
    per_token = torch.cat([t.policy[0, idx], t.policy[1, idx]])
    zeros = torch.zeros_like(per_token)
    outputs = SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())
    n = per_token.shape[0]
    inputs = {
        "input_ids": torch.ones(n, L, dtype=torch.long),
        "attention_mask": torch.ones(n, L, dtype=torch.long),
        "completion_mask": torch.cat([t.mask[0, idx], t.mask[1, idx]]),
        "ref_chosen_logps": t.ref[0, idx].sum(-1),
        "ref_rejected_logps": t.ref[1, idx].sum(-1),
    }
    loss = DPOTrainer._compute_loss(standin, lambda **kw: outputs, inputs, return_outputs=False)
    return loss, metrics_of(standin)


def check_against_trl_dpo(t, ours, loss_types, **attrs):
    """Per pair (a batch of one) the loss and both rewards, then the whole batch's mean loss and reward metrics."""
    for i in range(B):
        loss, metrics = trl_dpo(t, [i], loss_types, **attrs)
        close(ours.losses[i], loss)
        close(ours.chosen_rewards[i], metrics["rewards/chosen"])
        close(ours.rejected_rewards[i], metrics["rewards/rejected"])
    loss, metrics = trl_dpo(t, list(range(B)), loss_types, **attrs)
    close(ours.losses.mean(), loss)
    stats = ours.reward_stats()
    assert set(stats) == {k for k in metrics if k.startswith("rewards/")}
    for key, value in stats.items():
        close(value, metrics[key])


@pytest.mark.parametrize(
    "name, trl_type, params",
    [
        ("dpo", "sigmoid", {"beta": 0.1}),
        ("dpo", "sigmoid", {"beta": 0.7}),
        ("ipo", "ipo", {"beta": 0.1}),
        ("ipo", "ipo", {"beta": 1.5}),
        ("robust", "robust", {"beta": 0.1, "label_smoothing": 0.2}),
        ("robust", "robust", {"beta": 0.5, "label_smoothing": 0.0}),
        ("hinge", "hinge", {"beta": 0.5}),
    ],
)
def test_dpo_trainer_losses_match_trl(tokens, name, trl_type, params):
    ours = preference_loss(name, paired(tokens), **params)
    if name == "hinge":
        assert 0 < int((ours.losses > 0).sum()) < B  # both sides of the hinge are in the batch
    check_against_trl_dpo(tokens, ours, [trl_type], **params)


@pytest.mark.parametrize("label_smoothing", [0.1, 0.3])
def test_conservative_dpo_matches_trl(tokens, label_smoothing):
    """TRL 1.16 dropped label smoothing from its "sigmoid" DPO loss; the cDPO form lives on in DPOTrainer's "aot"
    loss (which sorts the batch's margins: the identity for one pair) and CPOTrainer.cpo_loss "sigmoid" (which, given
    the policy-minus-reference log-ratios, is cDPO)."""
    batch = paired(tokens)
    ours = preference_loss("dpo", batch, beta=0.4, label_smoothing=label_smoothing)
    assert not torch.allclose(ours.losses, preference_loss("dpo", batch, beta=0.4).losses)
    for i in range(B):
        loss, metrics = trl_dpo(tokens, [i], ["aot"], beta=0.4, label_smoothing=label_smoothing)
        close(ours.losses[i], loss)
        close(ours.chosen_rewards[i], metrics["rewards/chosen"])
    cpo = SimpleNamespace(
        accelerator=Accelerator(), alpha=0.0, loss_type="sigmoid", beta=0.4, label_smoothing=label_smoothing
    )
    losses, _, _ = CPOTrainer.cpo_loss(cpo, batch.chosen - batch.ref_chosen, batch.rejected - batch.ref_rejected)
    close(ours.losses, losses)


def test_rpo_sft_weight_matches_trl(tokens):
    """RPO: TRL 1.16's loss_type ["sigmoid", "sft"] with loss_weights [1, rpo_alpha] (the "sft" term is the NLL per
    chosen token over the batch) equals dpo's mean loss plus sft_loss."""
    batch, alpha = paired(tokens), 0.7
    ours = preference_loss("dpo", batch, beta=0.2)
    for i in range(B):
        loss, _ = trl_dpo(tokens, [i], ["sigmoid", "sft"], [1.0, alpha], beta=0.2)
        close(ours.losses[i] + sft_loss(batch.chosen[i : i + 1], batch.chosen_tokens[i : i + 1], alpha), loss)
    loss, _ = trl_dpo(tokens, list(range(B)), ["sigmoid", "sft"], [1.0, alpha], beta=0.2)
    close(ours.losses.mean() + sft_loss(batch.chosen, batch.chosen_tokens, alpha), loss)


# ---- logits batch for the reference-free trainers (CPO/SimPO, ORPO), which take logits and do their own averaging ---
@pytest.fixture(scope="module")
def logits_batch():
    g = torch.Generator().manual_seed(1)
    logits = 2 * torch.randn(2, B, L, V, generator=g, dtype=F64)
    input_ids = torch.randint(1, V, (2, B, L), generator=g)
    attention = torch.zeros(2, B, L, dtype=torch.long)
    labels = torch.full((2, B, L), -100)
    for side in range(2):
        for i in range(B):
            p = int(torch.randint(1, 4, (1,), generator=g))
            c = int(torch.randint(1, L - p + 1, (1,), generator=g))
            attention[side, i, : p + c] = 1
            labels[side, i, p : p + c] = input_ids[side, i, p : p + c]
    batch = {"chosen_input_ids": input_ids[0], "chosen_attention_mask": attention[0], "chosen_labels": labels[0]}
    batch |= {"rejected_input_ids": input_ids[1], "rejected_attention_mask": attention[1], "rejected_labels": labels[1]}
    return SimpleNamespace(logits=logits, input_ids=input_ids, attention=attention, labels=labels, batch=batch)


def completion_logps(lb) -> PairedLogps:
    """Summed completion log-probs (TRL's get_batch_logps without averaging) and completion token counts."""
    sums = [CPOTrainer.get_batch_logps(lb.logits[s], lb.labels[s], average_log_prob=False) for s in range(2)]
    counts = [(lb.labels[s][:, 1:] != -100).sum(-1) for s in range(2)]
    return PairedLogps(sums[0], sums[1], chosen_tokens=counts[0], rejected_tokens=counts[1])


def standin_trainer(cls, loss_method: str, **attrs):
    standin = SimpleNamespace(
        accelerator=Accelerator(), is_encoder_decoder=False, aux_loss_enabled=False, pad_token_id=0, padding_value=0
    )
    standin.__dict__.update(attrs)
    standin.concatenated_inputs, standin.get_batch_logps = cls.concatenated_inputs, cls.get_batch_logps
    for method in ("concatenated_forward", loss_method):
        setattr(standin, method, MethodType(getattr(cls, method), standin))
    return standin


def logits_model(lb):
    return lambda input_ids, **kw: SimpleNamespace(logits=torch.cat([lb.logits[0], lb.logits[1]]))


def averaged(cls, lb):
    """TRL's own length normalisation: get_batch_logps(average_log_prob=True)."""
    return [cls.get_batch_logps(lb.logits[s], lb.labels[s], average_log_prob=True) for s in range(2)]


@pytest.mark.parametrize(
    "params",
    [{"beta": 2.0, "gamma": 0.5}, {"beta": 2.5, "gamma": 1.4}, {"beta": 1.0, "gamma": 0.3, "label_smoothing": 0.2}],
)
def test_simpo_matches_trl_cpo_trainer(logits_batch, params):
    lb, ours = logits_batch, preference_loss("simpo", completion_logps(logits_batch), **params)
    attrs = {"alpha": 0.0, "cpo_alpha": 0.0, "loss_type": "simpo", "beta": params["beta"]}
    attrs |= {"simpo_gamma": params["gamma"], "label_smoothing": params.get("label_smoothing", 0.0)}
    standin = standin_trainer(CPOTrainer, "cpo_loss", **attrs)
    losses, chosen_rewards, rejected_rewards = standin.cpo_loss(*averaged(CPOTrainer, lb))
    close(ours.losses, losses)
    close(ours.chosen_rewards, chosen_rewards)
    close(ours.rejected_rewards, rejected_rewards)
    loss, metrics = CPOTrainer.get_batch_loss_metrics(standin, logits_model(lb), lb.batch, train_eval="train")
    close(ours.losses.mean(), loss)
    for key, value in ours.reward_stats().items():
        close(value, metrics[key])


@pytest.mark.parametrize("orpo_alpha", [0.1, 1.0])
def test_orpo_matches_trl_orpo_trainer(logits_batch, orpo_alpha):
    """Per pair: ours is minus TRL's odds_ratio_loss `losses` (TRL subtracts them). The total: TRL's
    get_batch_loss_metrics loss is sft_loss over the chosen prompt + completion tokens plus our mean loss."""
    lb = logits_batch
    ours = preference_loss("orpo", completion_logps(lb), orpo_alpha=orpo_alpha)
    standin = standin_trainer(ORPOTrainer, "odds_ratio_loss", beta=orpo_alpha)
    losses, chosen_rewards, rejected_rewards, _, _ = standin.odds_ratio_loss(*averaged(ORPOTrainer, lb))
    close(ours.losses, -losses)
    close(ours.chosen_rewards, chosen_rewards)
    close(ours.rejected_rewards, rejected_rewards)
    whole = torch.where(lb.attention[0] == 1, lb.input_ids[0], -100)  # ORPO's NLL covers prompt and completion
    nll_logps = ORPOTrainer.get_batch_logps(lb.logits[0], whole, average_log_prob=False)
    loss, metrics = ORPOTrainer.get_batch_loss_metrics(standin, logits_model(lb), lb.batch, train_eval="train")
    close(sft_loss(nll_logps, (whole[:, 1:] != -100).sum(-1)) + ours.losses.mean(), loss)
    for key, value in ours.reward_stats().items():
        close(value, metrics[key])


# ---- KTO: unpaired, with the KL estimate from mismatched completions -------------------------------------------------
DESIRABLE = torch.tensor([True, False, True, True, False, False])


def unpaired(t, kl_shift: float) -> UnpairedLogps:
    """Completions: the chosen side of `tokens`; KL completions: the rejected side, whose reference log-probs sit
    `kl_shift` below on average (so the KL estimate is kl_shift, clamped at 0)."""
    kl_logps = t.policy[1].sum(-1)
    noise = t.ref[1].sum(-1) - kl_logps
    return UnpairedLogps(
        t.policy[0].sum(-1), t.ref[0].sum(-1), DESIRABLE, kl_logps, kl_logps + noise - noise.mean() - kl_shift
    )


def trl_kto(t, idx, logps: UnpairedLogps, **attrs):
    """KTOTrainer._compute_loss on examples `idx` with the whole batch's KL completions."""
    standin = SimpleNamespace(
        model=SimpleNamespace(training=False),
        accelerator=Accelerator(),
        aux_loss_enabled=False,
        calculate_KL=True,
        precompute_ref_logps=True,
        loss_type="kto",
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    standin.__dict__.update(attrs)
    standin._compute_kl_logps = MethodType(KTOTrainer._compute_kl_logps, standin)

    def out(per_token):
        zeros = torch.zeros_like(per_token)
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    main, kl = out(t.policy[0, idx]), out(t.policy[1])
    n = len(idx)
    inputs = {
        "input_ids": torch.ones(n, L, dtype=torch.long),  # 1: the completions, 2: the KL completions
        "attention_mask": torch.ones(n, L, dtype=torch.long),
        "completion_mask": t.mask[0, idx],
        "label": logps.desirable[idx],
        "ref_logps": logps.ref_logps[idx],
        "KL_input_ids": torch.full((B, L), 2),
        "KL_attention_mask": torch.ones(B, L, dtype=torch.long),
        "KL_completion_mask": t.mask[1],
        "ref_KL_logps": logps.ref_kl_logps,
    }
    model = lambda input_ids, **kw: main if int(input_ids[0, 0]) == 1 else kl  # noqa: E731
    loss = KTOTrainer._compute_loss(standin, model, inputs, return_outputs=False)
    return loss, metrics_of(standin)


@pytest.mark.parametrize("kl_shift", [0.6, -0.6])
@pytest.mark.parametrize("params", [{"beta": 0.1}, {"beta": 0.5, "desirable_weight": 1.0, "undesirable_weight": 1.33}])
def test_kto_matches_trl(tokens, kl_shift, params):
    params = {"desirable_weight": 1.0, "undesirable_weight": 1.0} | params
    logps = unpaired(tokens, kl_shift)
    ours = preference_loss("kto", logps, **params)
    close(ours.kl, max(kl_shift, 0.0))  # the KL term is on, and clamped at 0 below
    for i in range(B):
        loss, metrics = trl_kto(tokens, [i], logps, **params)
        close(ours.losses[i], loss)
        side = "chosen" if DESIRABLE[i] else "rejected"
        rewards = ours.chosen_rewards if DESIRABLE[i] else ours.rejected_rewards
        position = int((DESIRABLE[:i] == DESIRABLE[i]).sum())  # example i's place among its side's rewards
        close(rewards[position], metrics[f"rewards/{side}"])
    loss, metrics = trl_kto(tokens, list(range(B)), logps, **params)
    close(ours.losses.mean(), loss)
    stats = ours.reward_stats()
    assert set(stats) == {k for k in metrics if k.startswith("rewards/")} | {"kl"}
    for key, value in stats.items():
        close(value, metrics[key])


# ---- the entry point ---------------------------------------------------------------------------------------------
def test_a_parameter_of_another_loss_is_rejected_naming_its_loss(tokens):
    batch = paired(tokens)
    with pytest.raises(ValueError, match=r"^gamma is read by loss simpo, not dpo$"):
        preference_loss("dpo", batch, gamma=1.0)
    with pytest.raises(ValueError, match=r"^label_smoothing is read by losses dpo, robust, simpo, not ipo$"):
        preference_loss("ipo", batch, label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"^beta is read by losses dpo, ipo, robust, hinge, simpo, kto, not orpo$"):
        preference_loss("orpo", batch, beta=0.1)
    with pytest.raises(ValueError, match=r"^orpo_alpha is read by loss orpo, not kto$"):
        preference_loss("kto", unpaired(tokens, 0.5), orpo_alpha=0.1)
    with pytest.raises(ValueError, match="desirable_weight is read by loss kto, not simpo"):
        preference_loss("simpo", batch, desirable_weight=1.0)
    with pytest.raises(ValueError, match="rpo_alpha is not a parameter of any preference loss; dpo reads beta"):
        preference_loss("dpo", batch, rpo_alpha=0.5)
    with pytest.raises(ValueError, match="unknown preference loss 'sigmoid'"):
        preference_loss("sigmoid", batch)
    with pytest.raises(ValueError, match="loss kto takes UnpairedLogps"):
        preference_loss("kto", batch)
    with pytest.raises(ValueError, match="loss dpo needs the reference log-probs"):
        preference_loss("dpo", PairedLogps(batch.chosen, batch.rejected))
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 0.5\) for the robust loss"):
        preference_loss("robust", batch, label_smoothing=0.5)


def test_losses_carry_gradients_and_rewards_do_not(tokens):
    """Half-precision inputs are computed in float32; only the losses take part in backward."""
    chosen = tokens.policy[0].sum(-1).float().requires_grad_()
    s, r = tokens.policy.sum(-1), tokens.ref.sum(-1)
    out = preference_loss("dpo", PairedLogps(chosen, s[1].to(torch.bfloat16), r[0].half(), r[1].half()))
    assert out.losses.dtype == torch.float32 and out.losses.requires_grad
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    out.losses.mean().backward()
    assert chosen.grad is not None and bool((chosen.grad <= 0).all())
