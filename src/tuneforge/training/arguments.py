"""The run config as transformers' TrainingArguments: schedule, evaluation and checkpoint cadence, precision,
trackers and the distributed strategy, with the combinations transformers would refuse caught as config errors."""

from __future__ import annotations

import os
import sys

import torch

from tuneforge.config import RunConfig
from tuneforge.errors import ConfigError, first_line
from tuneforge.training import distributed as dist
from tuneforge.training.rundir import RunDir
from tuneforge.training.speed import optimizer_name


def precision_flags(precision: str, model=None) -> dict:
    """TrainingArguments' precision flags; the same check `load_config` runs (tuneforge.config.environment). `auto`
    on a CPU depends on the model's width (`model`: None, unknown)."""
    from tuneforge.config.environment import model_width, resolve_precision

    precision = resolve_precision(precision, model_width(model) if model is not None else None)
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not torch.cuda.is_available()}


def report_to(value: str) -> list[str] | str:
    """Trainer's report_to for `train.report_to`; a tracker that is asked for by name must be installed."""
    from tuneforge.config.environment import resolve_report_to

    return resolve_report_to(value)


def build_training_args(cfg: RunConfig, run: RunDir, has_validation: bool, greater_is_better: bool, model=None):
    from transformers import TrainingArguments

    t = cfg.train
    evaluate = has_validation and t.eval_strategy != "no"
    if t.early_stopping.patience and not evaluate:
        raise ConfigError("train.early_stopping.patience needs a validation split and train.eval_strategy != 'no'")
    load_best = cfg.eval.load_best_model and evaluate
    save_strategy = "steps" if t.save_steps else (t.eval_strategy if evaluate else "epoch")
    if load_best and save_strategy != t.eval_strategy:
        raise ConfigError(
            "train.save_steps with eval.load_best_model needs train.eval_strategy: steps "
            "(checkpoints must coincide with evaluations); or set eval.load_best_model=false"
        )
    if load_best and t.save_steps and t.eval_steps and t.save_steps % t.eval_steps:
        raise ConfigError(
            f"train.save_steps: {t.save_steps} is not a multiple of train.eval_steps ({t.eval_steps}); "
            f"with eval.load_best_model every checkpoint must be an evaluation step"
        )
    rt = report_to(t.report_to)
    if rt != "none" and "tensorboard" in rt:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.path / "tensorboard")
    precision = precision_flags(t.precision, model)
    # train.distributed: DDP needs nothing (the Trainer's default under torchrun); FSDP2 / DeepSpeed their configs
    spread = dist.training_arguments(
        cfg, model, "bf16" if precision["bf16"] else "fp16" if precision["fp16"] else "fp32"
    )
    try:
        return TrainingArguments(
            output_dir=str(run.checkpoints),
            num_train_epochs=t.epochs,
            max_steps=t.max_steps or -1,
            per_device_train_batch_size=t.batch_size,
            per_device_eval_batch_size=t.eval_batch_size or 2 * t.batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type=t.scheduler,
            weight_decay=t.weight_decay,
            warmup_steps=t.warmup_steps if t.warmup_steps is not None else t.warmup_ratio,
            max_grad_norm=t.max_grad_norm,  # 0 disables clipping
            seed=t.seed,
            data_seed=t.seed,
            eval_strategy=t.eval_strategy if evaluate else "no",
            eval_steps=t.eval_steps,
            save_strategy=save_strategy,
            save_steps=t.save_steps or t.eval_steps or 500,
            save_total_limit=t.save_total_limit,
            load_best_model_at_end=load_best,
            metric_for_best_model=f"eval_{cfg.eval.metric}" if evaluate else None,
            greater_is_better=greater_is_better if evaluate else None,
            logging_steps=t.logging_steps,
            logging_first_step=True,
            report_to=rt,
            train_sampling_strategy="group_by_length" if t.group_by_length else "random",
            length_column_name="length",
            dataloader_num_workers=t.num_workers,
            dataloader_pin_memory=torch.cuda.is_available(),
            include_num_input_tokens_seen="non_padding",
            remove_unused_columns=False,
            optim=optimizer_name(t.optimizer),
            disable_tqdm=not sys.stderr.isatty() and os.environ.get("TUNEFORGE_PROGRESS") != "1",
            **precision,
            **spread,
        )
    except ValueError as exc:  # a combination transformers refuses that the config checks missed
        raise ConfigError(f"train: transformers refuses these training settings: {first_line(exc)}") from None
