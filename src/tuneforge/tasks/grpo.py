"""Reinforcement learning from reward functions (GRPO, with the Dr. GRPO / DAPO / BNPO reductions) on chat models: the
model answers each prompt several times, the rewards score the answers, and the answers better than their group's
mean are made more likely (tasks/grpo_step.py; the loss is kernels/grpo.py's, equal to TRL's).

A causal LM task like SFT (tasks/causal_lm.py), whose chat template check and chat/serve/export hooks it keeps. What
differs: the data are prompts with fields for the rewards (tasks/grpo_prepare.py), the training step generates
(tasks/grpo_step.py), the metrics are rewards, and the final report compares the base model's and the tuned model's
answers on held-out prompts (tasks/grpo_eval.py). The config keys are in tasks/grpo_config.py; docs/grpo.md."""

from __future__ import annotations

from typing import ClassVar

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError
from tuneforge.tasks.base import TASKS, Prepared, Task
from tuneforge.tasks.causal_lm import CausalLMTask
from tuneforge.tasks.grpo_config import GRPOConfig, GRPOData
from tuneforge.tasks.grpo_prepare import GRPOState


class RepeatedBatches:
    """The training order of `task.num_iterations` > 1: the rows shuffled by (seed, epoch), cut into batches of
    `batch_size`, each batch handed `repeats` times in a row (the step reuses its completions)."""

    def __init__(self, rows: int, batch_size: int, repeats: int, seed: int):
        self.rows, self.batch_size, self.repeats, self.seed, self.epoch = rows, batch_size, repeats, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        import torch

        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.rows, generator=g).tolist()
        for lo in range(0, self.rows, self.batch_size):
            batch = order[lo : lo + self.batch_size]
            for _ in range(self.repeats):
                yield from batch

    def __len__(self) -> int:
        return self.rows * self.repeats


@TASKS.register("grpo")
class GRPOTask(CausalLMTask):
    name = "grpo"
    Config = GRPOConfig
    DataConfig = GRPOData
    distill_keys = ()
    aliases = ()
    metrics: ClassVar[dict[str, bool]] = {"reward": True, "accuracy": True, "loss": False}
    report_metrics = ("reward", "accuracy")
    default_metric = "reward"
    default_max_length = 512

    @classmethod
    def fill_defaults(cls, cfg: RunConfig) -> None:
        super().fill_defaults(cfg)
        if cfg.data.max_prompt_length is None:
            cfg.data.max_prompt_length = max(1, cfg.data.max_length - cfg.task.max_new_tokens)

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        super(CausalLMTask, cls).check_config(cfg)  # the base checks, not causal_lm's own
        t = cfg.task
        if not t.rewards:
            raise ConfigError("task.rewards: give at least one reward, for example [{name: exact_answer}]")
        if cfg.data.max_prompt_length + t.max_new_tokens > cfg.data.max_length:
            raise ConfigError(
                f"data.max_prompt_length={cfg.data.max_prompt_length} + task.max_new_tokens={t.max_new_tokens} "
                f"exceed data.max_length={cfg.data.max_length}; lower one or raise data.max_length"
            )
        if t.beta == 0 and (t.reference is not None or t.reference_model):
            raise ConfigError("task.reference / task.reference_model: only used with task.beta > 0 (the KL term)")
        if t.reference == "adapters" and t.reference_model:
            raise ConfigError("task.reference: adapters uses the run's own base model, not task.reference_model")
        if cfg.eval.metric == "accuracy" and not cls.accuracy_reward(cfg):
            raise ConfigError("eval.metric: accuracy needs an exact_answer reward in task.rewards; use reward")
        from tuneforge.data.reward_functions import RewardSet

        RewardSet(t.rewards, t.reward_errors)  # a bad spec (unknown builtin, missing file or function) stops here

    @classmethod
    def rows_of(cls, cfg: RunConfig) -> int:
        return cfg.task.num_generations  # each prompt's group of completions trains in one forward pass

    @classmethod
    def generated_tokens(cls, cfg: RunConfig) -> int:
        prompt = cfg.data.max_prompt_length or max(1, cfg.data.max_length - cfg.task.max_new_tokens)
        return prompt + cfg.task.max_new_tokens  # every completion of the batch's prompts, generated at once

    @classmethod
    def frozen_copies(cls, cfg: RunConfig, has_adapters: bool) -> list[str]:
        t = cfg.task
        if t.beta == 0 or (has_adapters and t.reference in (None, "auto", "adapters") and not t.reference_model):
            return []
        return [f"a frozen reference copy of {t.reference_model or cfg.model.name} (task.beta > 0)"]

    @staticmethod
    def accuracy_reward(cfg: RunConfig) -> str | None:
        """The name (as RewardSet names it) of the reward whose mean is `accuracy`: the first exact_answer."""
        from tuneforge.data.reward_functions import RewardSet

        rs = RewardSet(cfg.task.rewards, cfg.task.reward_errors)
        return next((r.name for r in rs.rewards if r.spec_name == "exact_answer"), None)

    @classmethod
    def supports_strategy(cls, cfg: RunConfig, strategy: str) -> str | None:
        if strategy != "ddp":
            return "the grpo task runs with ddp only so far (generation is not sharded)"
        return None

    # ---- data -------------------------------------------------------------------------------------------
    def _rewards(self, tokenizer):
        """The run's RewardSet, built once (a reward run among the rewards loads its model on the first score)."""
        from tuneforge.data.reward_functions import RewardSet

        if getattr(self, "_reward_set", None) is None:
            t = self.cfg.task
            self._reward_set = RewardSet(
                t.rewards,
                t.reward_errors,
                tokenize=lambda s: tokenizer(s, add_special_tokens=False)["input_ids"],
                score_run=self.run_scorer,
            )
        return self._reward_set

    def prepare(self, tokenizer) -> Prepared[GRPOState]:
        from tuneforge.tasks.grpo_prepare import prepare_prompts

        chat, system_prompt = self._template(tokenizer, "messages")

        def state_of(fmt: str) -> GRPOState:
            stops = self._stop_token_ids(tokenizer, chat)
            return GRPOState(fmt, chat, system_prompt, stops, tokenizer.pad_token_id, tokenizer=tokenizer)

        return prepare_prompts(self.cfg, tokenizer, chat, system_prompt, state_of)

    def held_out(self, run_dir, tokenizer):
        """The saved held-out prompts (test, else validation), templated, as token rows (export parity)."""
        import datasets

        from tuneforge.data.splits import load_split
        from tuneforge.tasks.grpo_prepare import prompt_ids

        saved = {name: load_split(run_dir, name) for name in ("test", "validation")}
        name = "test" if saved["test"] else "validation"
        if not saved[name]:
            return None, name
        chat, system_prompt = self._template(tokenizer, "messages")
        ids = prompt_ids(saved[name], tokenizer, chat, system_prompt)
        return datasets.Dataset.from_dict({"input_ids": ids, "labels": ids}), name

    def distill(self, prepared: Prepared, tokenizer, teacher, cache_dir) -> Prepared:
        return Task.distill(self, prepared, tokenizer, teacher, cache_dir)

    def write_data_report(self, prepared: Prepared, out_dir: str) -> None:
        from tuneforge.data.report import write_report

        write_report(
            out_dir,
            prepared.report,
            prepared.lengths,
            self.cfg.data.max_length,
            title=f"GRPO data report ({prepared.info['format']} records, template {prepared.info['template']}; "
            f"lengths in tokens of the templated prompts)",
        )

    # ---- training hooks ---------------------------------------------------------------------------------
    def collator(self, tokenizer):
        from tuneforge.tasks.grpo_prepare import PromptCollator

        return PromptCollator(tokenizer.pad_token_id)

    def train_sampler(self, prepared: Prepared):
        t = self.cfg.task
        if t.num_iterations == 1:
            return None
        from tuneforge.data.splits import data_seed

        return RepeatedBatches(len(prepared.train), self.cfg.train.batch_size, t.num_iterations, data_seed(self.cfg))

    def training_loss(self, prepared: Prepared, without_adapters=None):
        from tuneforge.tasks.grpo_step import GRPOStep

        tok = prepared.state.tokenizer
        return GRPOStep(self.cfg, prepared.state, self._rewards(tok), tok, without_adapters)

    def before_training(self, trainer, prepared: Prepared, without_adapters, cache_dir) -> Prepared:
        import torch.distributed as torch_dist

        if self.cfg.task.num_iterations > 1 and torch_dist.is_available() and torch_dist.is_initialized():
            if torch_dist.get_world_size() > 1:
                raise ConfigError("task.num_iterations > 1 runs in one process only so far (not with --nproc)")
        return prepared

    def preprocess_logits(self, prepared: Prepared):
        return None  # the step hands evaluation per-prompt rewards, not logits

    def compute_metrics(self, prepared: Prepared):
        from tuneforge.tasks.grpo_step import grpo_metrics

        return grpo_metrics(self._rewards(prepared.state.tokenizer).names, self.accuracy_reward(self.cfg))

    def use_fused_loss(self, model) -> str | None:
        return None  # the step reads per-token log-probs chunk by chunk from the hidden states itself

    def final_evaluation(
        self, trainer, prepared: Prepared, eval_dir: str, val_metrics: dict, without_adapters=None
    ) -> dict:
        from tuneforge.tasks.grpo_eval import final_evaluation

        rewards = self._rewards(prepared.state.tokenizer)
        return final_evaluation(self.cfg, trainer, prepared, eval_dir, val_metrics, rewards, without_adapters)
