"""Reward models (Bradley-Terry): a one-output sequence classifier learns to give the chosen answer of each pair a
larger scalar reward than the rejected one, on the same pair data the preference task reads.

The model is the text classifier's (AutoModelForSequenceClassification, its head kept in full precision and trained
in full under adapter methods) with one output: on a causal LM (SmolLM2) the reward is read at the last real token,
which the saved pad token locates; on an encoder (MiniLM) at its pooled first token. The pairs are read, checked,
split and reported by the preference task's code (tasks/preference_prepare, data/preference_formats), every format
but KTO's unpaired one; each answer is scored with its prompt as one sequence (data/reward_encode: the conversation
rendered with the chat template, or prompt and answer as a text pair for a model without one), and a batch of B
pairs is one forward pass over 2 x B rows, the chosen answers first. The loss is kernels/reward.py's (TRL's
RewardTrainer loss, optional per-pair margin and reward centring); metrics and reports are in tasks/reward_eval, how
a finished run scores texts and answers in tasks/reward_hooks.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError
from tuneforge.tasks.base import TASKS, Prepared, Task, ensure_pad_token
from tuneforge.tasks.classification import ClassificationTask
from tuneforge.tasks.reward_config import RewardConfig, RewardData
from tuneforge.tasks.reward_hooks import RewardExports, RewardInference

#: the one output of the head, as the label map names it (serve's /v1/classify lists it)
SCORE_LABELS = ["score"]


@dataclass
class RewardState:
    """What preparation decided: the record format, the chat template (None: prompt and answer as a text pair), the
    system prompt and the pad token that marks where a row's real tokens end."""

    fmt: str
    chat: object | None  # data.templates.ChatFormat
    system_prompt: str | None
    stop_token_ids: list[int]
    pad_token_id: int | None
    report_pairs: list[dict] = field(default_factory=list)

    @property
    def scoring(self) -> str:
        return "template" if self.chat is not None else "pair"


class RewardLoss:
    """`loss(model, inputs) -> (loss, outputs)` for the Trainer: one forward pass over the batch's 2 x B rows, the
    Bradley-Terry loss of kernels/reward.py with the pairs' margins (the batch's `labels`); evaluation gets the
    per-pair rewards as its predictions (chosen, rejected)."""

    def __init__(self, center_rewards_coefficient: float | None):
        self.center = center_rewards_coefficient

    def __call__(self, model: nn.Module, inputs: dict):
        from tuneforge.kernels.reward import bradley_terry_loss, split_rewards

        kw = {k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in inputs}
        try:
            scores = model(**kw, use_cache=False).logits  # as TRL: no KV cache is built for one scoring pass
        except TypeError:  # a model whose forward takes no use_cache
            scores = model(**kw).logits
        chosen, rejected = split_rewards(scores)
        out = bradley_terry_loss(chosen, rejected, inputs.get("labels"), self.center)
        return out.loss, {"chosen_rewards": out.chosen, "rejected_rewards": out.rejected}


@TASKS.register("reward")
class RewardTask(Task):
    name = "reward"
    Config = RewardConfig
    DataConfig = RewardData
    # the text classifier's head: its model class, and its head's names kept out of 4/8-bit quantization
    auto_class_name = ClassificationTask.auto_class_name
    full_precision_modules = ClassificationTask.full_precision_modules
    inference = RewardInference()
    exports = RewardExports()
    aliases = ("rm",)
    metrics: ClassVar[dict[str, bool]] = {"loss": False, "reward_accuracy": True, "reward_margin": True}
    report_metrics = ("loss", "reward_accuracy", "reward_margin")
    default_metric = "reward_accuracy"
    default_max_length = 512  # an encoder's position limit; TRL's reward default is 1024
    rows_per_example = 2  # chosen and rejected in one forward pass

    @classmethod
    def fill_defaults(cls, cfg: RunConfig) -> None:
        super().fill_defaults(cfg)
        if cfg.data.max_prompt_length is None:
            cfg.data.max_prompt_length = cfg.data.max_length // 2

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        super().check_config(cfg)
        if cfg.data.max_prompt_length >= cfg.data.max_length:
            raise ConfigError(
                f"data.max_prompt_length={cfg.data.max_prompt_length} leaves no room for an answer within "
                f"data.max_length={cfg.data.max_length}; make it smaller"
            )

    # ---- data -------------------------------------------------------------------------------------------
    def _pair_settings(self, tokenizer):
        """The chat template (set on the tokenizer, so it is saved with the model) or None for a text pair, the
        system prompt and the lengths. The pad token defaults to eos (as TRL's): it only marks the padding."""
        from tuneforge.data.preference_encode import PairSettings
        from tuneforge.data.templates import fill_variables, resolve_template

        d = self.cfg.data
        ensure_pad_token(tokenizer, self.cfg.model.name)
        system_prompt = fill_variables(d.system_prompt, d.variables, "data.system_prompt") if d.system_prompt else None
        chat = None
        if d.template != "auto" or tokenizer.chat_template:
            chat = resolve_template(tokenizer, d.template)
            if chat.problems:  # what matters for generating (a turn's end token) does not for scoring: a warning
                print(f"tuneforge: warning: chat template: {'; '.join(chat.problems)}", file=sys.stderr, flush=True)
            tokenizer.chat_template = chat.jinja  # saved with the model: scoring uses what training used
        return PairSettings(chat, system_prompt, d.max_length, d.max_prompt_length)

    def prepare(self, tokenizer) -> Prepared[RewardState]:
        from tuneforge.data.reward_encode import encode_scored_pairs
        from tuneforge.tasks.preference_prepare import prepare_pairs

        s = self._pair_settings(tokenizer)

        def state_of(fmt: str) -> RewardState:
            return RewardState(fmt, s.chat, s.system_prompt, [], tokenizer.pad_token_id)

        prepared = prepare_pairs(self.cfg, tokenizer, s, state_of, encode=encode_scored_pairs, margins=True)
        prepared.info["scoring"] = prepared.state.scoring
        return prepared

    def held_out(self, run_dir, tokenizer):
        from tuneforge.data.reward_encode import encode_scored_pairs
        from tuneforge.data.splits import load_split

        saved = {name: load_split(run_dir, name) for name in ("test", "validation")}
        name = "test" if saved["test"] else "validation"
        if not saved[name]:
            return None, name
        return encode_scored_pairs(saved[name], tokenizer, name, {}, self._pair_settings(tokenizer)), name

    def write_data_report(self, prepared: Prepared, out_dir: str) -> None:
        from tuneforge.data.report import write_report

        template = prepared.info.get("template")
        how = f"template {template}" if template else "prompt and answer as a text pair"
        write_report(
            out_dir,
            prepared.report,
            prepared.lengths,
            self.cfg.data.max_length,
            truncated=prepared.info["truncated_pairs"],
            title=f"Reward-model data report ({prepared.info['format']} records, {how}; lengths in tokens of the "
            f"longer scored sequence of each pair)",
        )

    # ---- model ------------------------------------------------------------------------------------------
    def model_kwargs(self, prepared: Prepared[RewardState]) -> dict:
        return self.inference.head_kwargs({"labels": SCORE_LABELS, "pad_token_id": prepared.state.pad_token_id})

    def prepare_model(self, model: nn.Module) -> nn.Module:
        if self.cfg.task.disable_dropout:  # as TRL's RewardTrainer (disable_dropout=True)
            for m in model.modules():
                if isinstance(m, nn.Dropout):
                    m.p = 0.0
        return model

    def collator(self, tokenizer):
        from tuneforge.data.reward_encode import ScoredPairCollator

        return ScoredPairCollator(tokenizer.pad_token_id)

    def training_loss(self, prepared: Prepared, without_adapters=None):
        return RewardLoss(self.cfg.task.center_rewards_coefficient)

    def compute_metrics(self, prepared: Prepared):
        from tuneforge.tasks.reward_eval import compute_metrics

        return compute_metrics

    def final_evaluation(
        self, trainer, prepared: Prepared, eval_dir: str, val_metrics: dict, without_adapters=None
    ) -> dict:
        from tuneforge.tasks.reward_eval import final_evaluation

        return final_evaluation(self.cfg, trainer, prepared, eval_dir, val_metrics)

    # ---- artefacts --------------------------------------------------------------------------------------
    def metadata(self, prepared: Prepared[RewardState]) -> dict:
        """What scoring needs later (tasks/reward_hooks.py): the label map, the pad token, and how a prompt and an
        answer become the scored text (the template itself is saved with the tokenizer)."""
        st, d = prepared.state, self.cfg.data
        return {
            "labels": SCORE_LABELS,
            "scoring": st.scoring,
            "format": st.fmt,
            "template": st.chat.name if st.chat is not None else None,
            "end_of_turn_token": st.chat.end_token if st.chat is not None else None,
            "system_prompt": st.system_prompt,
            "pad_token_id": st.pad_token_id,
            "max_length": d.max_length,
            "max_prompt_length": d.max_prompt_length,
        }
