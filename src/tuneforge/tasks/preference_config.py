"""The `task:` and `data:` keys of preference runs (tasks/preference.py), and the rule that a loss's parameter set
for another loss is a config error naming the loss that reads it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError
from tuneforge.tasks.causal_lm import CausalLMConfig
from tuneforge.tasks.chat_data import ChatPromptData

#: the paired losses (kernels/preference.py), names as in TRL and the papers
LOSSES = ("dpo", "ipo", "robust", "hinge", "orpo", "simpo", "kto")
#: losses that compare with a reference model (ORPO and SimPO need none)
REFERENCE_LOSSES = ("dpo", "ipo", "robust", "hinge", "kto")
#: the default of each loss's beta where the config leaves it null (SimPO's paper uses 2.0; the rest TRL's 0.1)
DEFAULT_BETA = {"dpo": 0.1, "ipo": 0.1, "robust": 0.1, "hinge": 0.1, "simpo": 2.0, "kto": 0.1}
#: task keys read by only some losses -> those losses (`beta` is read by every loss but orpo)
LOSS_KEYS = {
    "beta": ("dpo", "ipo", "robust", "hinge", "simpo", "kto"),
    "label_smoothing": ("dpo", "robust", "simpo"),
    "gamma": ("simpo",),
    "orpo_alpha": ("orpo",),
    "desirable_weight": ("kto",),
    "undesirable_weight": ("kto",),
    "reference": REFERENCE_LOSSES,
    "reference_model": REFERENCE_LOSSES,
}


class PreferenceData(ChatPromptData):
    """`data:` keys of preference runs: the record format, the chat template, and the prompt's length limit."""

    format: Literal["auto", "alpaca", "sharegpt", "trl", "kto"] = Field(
        "auto",
        description=(
            "Preference record format: `alpaca` (instruction/input/chosen/rejected, LLaMA-Factory), `sharegpt` "
            "(conversations + chosen/rejected messages, LLaMA-Factory), `trl` (prompt/chosen/rejected as texts or "
            "message lists), `kto` (unpaired: a prompt or conversation, one answer and a boolean `label` / `kto_tag`), "
            "`auto` (detected from the columns)."
        ),
    )
    max_prompt_length: int | None = Field(
        None,
        ge=1,
        description=(
            "Longest prompt in tokens (the templated conversation before the answer); a longer prompt is a bad "
            "record (`data.bad_records`): prompts are never cut. Default: half of `max_length`. The answers are "
            "cut so that prompt + answer fit `max_length`; cut pairs are counted in data/report.md."
        ),
    )


class PreferenceConfig(CausalLMConfig):
    type: Literal["preference"] = "preference"  # type: ignore[assignment]

    @classmethod
    def for_variant(cls, base: dict, variant: dict, key: str) -> tuple[dict, list[str]]:
        return _for_variant(base, variant, key)

    loss: Literal["dpo", "ipo", "robust", "hinge", "orpo", "simpo", "kto"] = Field(
        "dpo",
        description=(
            "The preference loss: `dpo` (sigmoid; with `label_smoothing`: conservative DPO), `ipo`, `robust` (rDPO), "
            "`hinge` (SLiC), `orpo` (odds ratio plus the chosen answer's NLL, no reference model), `simpo` "
            "(length-normalised, margin `gamma`, no reference model), `kto` (unpaired answers labelled good or bad; "
            "pairs are read as one good and one bad answer). Each equals TRL's implementation."
        ),
    )
    beta: float | None = Field(
        None,
        gt=0.0,
        description=(
            "Strength of the preference term (every loss but orpo): how far the policy may move from the reference. "
            "Default: 0.1 (simpo: 2.0)."
        ),
    )
    label_smoothing: float | None = Field(
        None,
        ge=0.0,
        lt=0.5,
        description="dpo, robust, simpo: the assumed fraction of flipped preference labels (0 = none; default 0).",
    )
    gamma: float | None = Field(None, ge=0.0, description="simpo: the target reward margin (default 0.5).")
    orpo_alpha: float | None = Field(
        None,
        gt=0.0,
        description="orpo: weight of the odds-ratio term next to the NLL (the paper's lambda; default 0.1).",
    )
    desirable_weight: float | None = Field(
        None, gt=0.0, description="kto: weight of the good answers' loss (default 1; raise it when they are fewer)."
    )
    undesirable_weight: float | None = Field(
        None, gt=0.0, description="kto: weight of the bad answers' loss (default 1; raise it when they are fewer)."
    )
    reference: Literal["auto", "adapters", "copy", "precompute"] | None = Field(
        None,
        description=(
            "Where the reference model's log-probs come from (every loss but orpo and simpo): `adapters` (the policy "
            "with the method's adapters switched off: no second copy; adapter methods only), `copy` (a frozen copy of "
            "the base or of `reference_model`, in memory for the whole run), `precompute` (computed once before "
            "training for every pair, cached in the run's reference/ and reused on --resume; no model in memory "
            "during training; not kto), `auto` (default: `adapters` where the method has adapters, else "
            "`precompute`, kto `copy`)."
        ),
    )
    reference_model: str | None = Field(
        None,
        description=(
            "The reference model, when it is not the run's base model: a finished full run's directory, a local "
            "model directory or a cached hub id, with the same tokenizer. Used through `precompute` (default) or "
            "`copy`."
        ),
    )
    sft_weight: float = Field(
        0.0,
        ge=0.0,
        description=(
            "Adds this weight times the chosen answer's NLL per token (RPO); 0 = off. orpo always adds it with "
            "weight 1 (it is part of ORPO)."
        ),
    )


def _for_variant(base: dict, variant: dict, key: str) -> tuple[dict, list[str]]:
    """PreferenceConfig.for_variant: with task.loss varied, the base's keys the new loss does not read are dropped,
    and `beta` too where the two losses' default betas differ (SimPO's 2.0 is on another scale than DPO's 0.1): a
    comparison of losses trains each with its own parameters, not with a config error or another loss's beta."""
    if key != "loss" or base.get("loss", "dpo") == variant.get("loss"):
        return variant, []
    old, new = base.get("loss", "dpo"), variant.get("loss")
    if new not in LOSSES:
        return variant, []  # validation names the unknown loss
    out, notes = dict(variant), []
    for name, readers in LOSS_KEYS.items():
        if out.get(name) is None:
            continue
        if new not in readers:
            notes.append(f"task.{name} dropped: read by {', '.join(readers)}, not {new}")
            out.pop(name)
        elif name == "beta" and DEFAULT_BETA.get(old) != DEFAULT_BETA[new]:
            notes.append(f"task.beta dropped: {new} uses its own default ({DEFAULT_BETA[new]}), not {old}'s beta")
            out.pop(name)
    if new in ("orpo", "kto") and out.get("sft_weight"):
        notes.append(f"task.sft_weight dropped: not read by {new}")
        out.pop("sft_weight")
    return out, notes


def check_preference_config(cfg: RunConfig) -> None:
    """A loss parameter set for a loss that does not read it is a ConfigError naming the loss that does."""
    t = cfg.task
    for key, readers in LOSS_KEYS.items():
        if getattr(t, key) is not None and t.loss not in readers:
            raise ConfigError(
                f"task.{key}: read by loss{'es' if len(readers) > 1 else ''} {', '.join(readers)}, not "
                f"{t.loss} (task.loss); remove it"
            )
    if t.loss == "orpo" and t.sft_weight:
        raise ConfigError("task.sft_weight: orpo already adds the chosen answer's NLL (weight 1); remove it")
    if t.loss == "kto" and t.sft_weight:
        raise ConfigError("task.sft_weight: not used by kto (its answers are unpaired: there is no chosen one)")
    if t.loss == "kto" and t.reference == "precompute":
        raise ConfigError(
            "task.reference: precompute: kto's KL term pairs each prompt with another row's answer of the same batch, "
            "so its reference log-probs cannot be computed ahead; use adapters or copy"
        )
    if t.reference == "adapters" and t.reference_model:
        raise ConfigError(
            "task.reference: adapters uses the run's own base model, not task.reference_model; use precompute or copy"
        )


def loss_parameters(cfg: RunConfig) -> dict[str, float]:
    """The keyword arguments of kernels.preference.preference_loss for this run's loss, defaults filled."""
    t = cfg.task
    params: dict[str, float] = {}
    if t.loss in LOSS_KEYS["beta"]:
        params["beta"] = t.beta if t.beta is not None else DEFAULT_BETA[t.loss]
    for key in ("label_smoothing", "gamma", "orpo_alpha", "desirable_weight", "undesirable_weight"):
        if getattr(t, key) is not None:
            params[key] = getattr(t, key)
    return params
