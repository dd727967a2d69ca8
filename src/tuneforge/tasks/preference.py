"""Preference tuning of chat models (DPO, IPO, robust DPO, SLiC hinge, ORPO, SimPO, KTO): the model learns to give
the chosen answer of each pair a higher likelihood than the rejected one (KTO: good answers more, bad ones less),
relative to a reference model (the same weights with the method's adapters off, or a frozen copy of the base) or,
for ORPO and SimPO, to none.

A causal LM task like SFT (tasks/causal_lm.py), whose chat template check, chat/serve/export hooks and saved
generation settings it keeps; what differs is the data (pairs: data/preference_formats, data/preference_encode,
tasks/preference_prepare), the loss (kernels/preference through tasks/preference_loss), the metrics (reward
accuracy and margin on held-out pairs) and the final report (tasks/preference_eval). The config keys are in
tasks/preference_config. Start from a finished SFT run with `model.name: runs/<sft-run>` (see docs/preference.md).
"""

from __future__ import annotations

from typing import ClassVar

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError
from tuneforge.tasks.base import TASKS, Prepared, Task
from tuneforge.tasks.causal_lm import CausalLMTask
from tuneforge.tasks.preference_config import PreferenceConfig, PreferenceData, check_preference_config
from tuneforge.tasks.preference_hooks import PreferenceExports, PreferenceInference
from tuneforge.tasks.preference_prepare import PreferenceState


@TASKS.register("preference")
class PreferenceTask(CausalLMTask):
    name = "preference"
    Config = PreferenceConfig
    DataConfig = PreferenceData
    distill_keys = ()
    aliases = ("dpo",)
    metrics: ClassVar[dict[str, bool]] = {"loss": False, "reward_accuracy": True, "reward_margin": True}
    report_metrics = ("loss", "reward_accuracy", "reward_margin")
    default_metric = "loss"
    default_max_length = 1024
    rows_per_example = 2  # chosen and rejected in one forward pass
    # under bf16 autocast the summed log-probs of one answer move by tenths of a nat from rounding alone (a DPO loss
    # of 0.726 instead of 0.694 for the same weights of SmolLM2-135M), as much as a trained reward margin: held-out
    # rewards, margins and accuracy are computed in fp32 (training keeps bf16: its gradients point the same way)
    evaluate_in_fp32 = True
    inference = PreferenceInference()  # chats like SFT; `tuneforge eval` measures held-out pairs
    exports = PreferenceExports()  # exports like SFT; parity on the held-out prompts with their chosen answers

    @classmethod
    def fill_defaults(cls, cfg: RunConfig) -> None:
        super().fill_defaults(cfg)
        if cfg.data.max_prompt_length is None:
            cfg.data.max_prompt_length = cfg.data.max_length // 2

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        super(CausalLMTask, cls).check_config(cfg)  # the base checks, not causal_lm's own
        check_preference_config(cfg)
        if cfg.data.max_prompt_length >= cfg.data.max_length:
            raise ConfigError(
                f"data.max_prompt_length={cfg.data.max_prompt_length} leaves no room for an answer within "
                f"data.max_length={cfg.data.max_length}; make it smaller"
            )

    @classmethod
    def frozen_copies(cls, cfg: RunConfig, has_adapters: bool) -> list[str]:
        from tuneforge.tasks.preference_reference import resolve_mode

        if resolve_mode(cfg, has_adapters) != "copy":
            return []
        return [f"a frozen reference copy of {cfg.task.reference_model or cfg.model.name} (task.reference: copy)"]

    @classmethod
    def supports_strategy(cls, cfg: RunConfig, strategy: str) -> str | None:
        if strategy == "ddp":
            return None
        return "the preference task runs with ddp only so far (its reference pass is not sharded)"

    # ---- data -------------------------------------------------------------------------------------------
    def _pair_settings(self, tokenizer):
        from tuneforge.data.preference_encode import PairSettings

        chat, system_prompt = self._template(tokenizer, "messages")
        d = self.cfg.data
        return PairSettings(chat, system_prompt, d.max_length, d.max_prompt_length)

    def prepare(self, tokenizer) -> Prepared[PreferenceState]:
        from tuneforge.tasks.preference_prepare import prepare_pairs

        s = self._pair_settings(tokenizer)

        def state_of(fmt: str) -> PreferenceState:
            stops = self._stop_token_ids(tokenizer, s.chat)
            return PreferenceState(fmt, s.chat, s.system_prompt, stops, tokenizer.pad_token_id)

        return prepare_pairs(self.cfg, tokenizer, s, state_of)

    def held_out(self, run_dir, tokenizer):
        from tuneforge.data.preference_encode import encode_pairs, encode_unpaired
        from tuneforge.data.splits import load_split

        saved = {name: load_split(run_dir, name) for name in ("test", "validation")}
        name = "test" if saved["test"] else "validation"
        if not saved[name]:
            return None, name
        encode = encode_unpaired if self.cfg.task.loss == "kto" else encode_pairs
        return encode(saved[name], tokenizer, name, {}, self._pair_settings(tokenizer)), name

    def distill(self, prepared: Prepared, tokenizer, teacher, cache_dir) -> Prepared:
        return Task.distill(self, prepared, tokenizer, teacher, cache_dir)

    def write_data_report(self, prepared: Prepared, out_dir: str) -> None:
        from tuneforge.data.report import write_report

        write_report(
            out_dir,
            prepared.report,
            prepared.lengths,
            self.cfg.data.max_length,
            truncated=prepared.info["truncated_pairs"],
            title=f"Preference data report ({prepared.info['format']} records, template {prepared.info['template']}; "
            f"lengths in tokens of the longer templated conversation of each pair)",
        )

    # ---- training hooks ---------------------------------------------------------------------------------
    def collator(self, tokenizer):
        from tuneforge.data.preference_encode import PairCollator, UnpairedCollator

        if self.cfg.task.loss == "kto":
            return UnpairedCollator(tokenizer.pad_token_id, self.cfg.data.max_length)
        return PairCollator(tokenizer.pad_token_id)

    def training_loss(self, prepared: Prepared, without_adapters=None):
        from tuneforge.tasks.preference_loss import PreferenceLoss

        return PreferenceLoss(self.cfg, without_adapters)

    def before_training(self, trainer, prepared: Prepared, without_adapters, cache_dir) -> Prepared:
        from tuneforge.tasks.preference_loss import policy_logps
        from tuneforge.tasks.preference_reference import precompute

        return precompute(self.cfg, trainer, prepared, without_adapters, cache_dir, policy_logps)

    def preprocess_logits(self, prepared: Prepared):
        return None  # the loss hands evaluation per-pair rewards, not logits

    def compute_metrics(self, prepared: Prepared):
        from tuneforge.tasks.preference_loss import kto_metrics, preference_metrics

        return kto_metrics if self.cfg.task.loss == "kto" else preference_metrics

    def use_fused_loss(self, model) -> str | None:
        # the preference loss always reads log-probs chunk by chunk from the hidden states (kernels/token_logps)
        return None

    def final_evaluation(
        self, trainer, prepared: Prepared, eval_dir: str, val_metrics: dict, without_adapters=None
    ) -> dict:
        from tuneforge.tasks.preference_eval import final_evaluation

        return final_evaluation(self.cfg, trainer, prepared, eval_dir, val_metrics, without_adapters)
