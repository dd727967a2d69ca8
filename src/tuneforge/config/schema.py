"""The run configuration: one strict pydantic model per section.

Every field has a description; `tuneforge config-reference` and the README's reference are built from
them, so help text has one source. `task` and `method` are open sections: their keys belong to the
registered task or method named by `task.type` / `method.name` (each owns its config class).
"""
from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator, model_validator


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ModelSection(Section):
    name: str = Field("builtin:minilm-l6", description=(
        "Base model: a builtin alias (`tuneforge models` lists them), a local transformers model "
        "directory, or a hub id (needs network access)."))
    revision: Optional[str] = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description=(
        "Weight dtype when loading. `auto`: float32 on CPU, bfloat16 on GPUs that support it."))
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the model directory.")


class SplitSection(Section):
    validation: float = Field(0.1, ge=0.0, lt=1.0, description=(
        "Fraction of the data held out for validation when no `data.validation` file is given."))
    test: float = Field(0.1, ge=0.0, lt=1.0, description=(
        "Fraction held out for the final test when no `data.test` file is given."))
    stratify: bool = Field(True, description="Keep class proportions equal across splits (classification).")
    group_column: Optional[str] = Field(None, description=(
        "Keep rows sharing this column's value in one split (for example `movie_name`), so near-identical "
        "texts cannot leak from train into test."))
    seed: Optional[int] = Field(None, description="Seed of the split; defaults to `train.seed`.")

    @model_validator(mode="after")
    def _sizes(self):
        if self.validation + self.test >= 0.9:
            raise ValueError("split.validation + split.test must leave at least 10% for training")
        return self


class DataSection(Section):
    train: str = Field("builtin:rotten-tomatoes", description=(
        "Training data: a csv/tsv/json/jsonl/parquet file, a directory saved by `datasets`, or a builtin "
        "data set (`builtin:rotten-tomatoes`). Without `validation`/`test` files it is split."))
    validation: Optional[str] = Field(None, description="Optional validation file (same columns as train).")
    test: Optional[str] = Field(None, description="Optional test file (same columns as train).")
    text_column: str = Field("text", description="Column holding the input text.")
    text_pair_column: Optional[str] = Field(None, description="Optional second text column (sentence pairs).")
    label_column: str = Field("label", description="Column holding the label (strings or integers).")
    max_length: Optional[int] = Field(None, ge=8, le=131072, description=(
        "Longest example in tokens (the cutoff length); longer ones are truncated. Default: the task's "
        "(128 for classification). Batches are padded only to their own longest example, never to this length."))
    max_train_samples: Optional[int] = Field(None, ge=1, description=(
        "Use only this many training rows (a stratified sample), for quick experiments."))
    split: SplitSection = Field(default_factory=SplitSection, description="How to split when files are not given.")


class EarlyStoppingSection(Section):
    patience: Optional[int] = Field(None, ge=1, description=(
        "Stop after this many evaluations without improvement of `eval.metric`; null disables early stopping."))
    threshold: float = Field(0.0, ge=0.0, description="Smallest change that counts as an improvement.")


class TrainSection(Section):
    epochs: float = Field(3.0, gt=0, description="Number of passes over the training data.")
    max_steps: Optional[int] = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(32, ge=1, description="Examples per device per forward pass.")
    eval_batch_size: Optional[int] = Field(None, ge=1, description="Examples per evaluation batch (default 2x batch_size).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    learning_rate: Optional[float] = Field(None, gt=0, description=(
        "Peak learning rate. Default: the method's own (for example 5e-5 for full fine-tuning, 1e-3 for LoRA)."))
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"] = \
        Field("linear", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0, description="Fraction of the steps spent warming up.")
    warmup_steps: Optional[int] = Field(None, ge=0, description="Warmup steps; overrides warmup_ratio when set.")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay (not applied to biases and norms).")
    max_grad_norm: float = Field(1.0, ge=0.0, description="Gradient clipping norm; 0 disables clipping.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description=(
        "`auto`: bf16 mixed precision on GPUs that support it, fp16 on older GPUs, fp32 on CPU."))
    seed: int = Field(42, description="Seed for initialisation, shuffling and splits: same config + seed = same metrics.")
    eval_strategy: Literal["epoch", "steps", "no"] = Field("epoch", description="When to evaluate on validation.")
    eval_steps: Optional[int] = Field(None, ge=1, description="Evaluate every N steps (with eval_strategy: steps).")
    save_steps: Optional[int] = Field(None, ge=1, description=(
        "Save a checkpoint every N steps; default: at every evaluation. `tuneforge train --resume` continues from the last."))
    save_total_limit: int = Field(2, ge=1, description="Keep at most this many checkpoints (the best one is always kept).")
    logging_steps: int = Field(10, ge=1, description="Write a row to metrics.jsonl every N steps.")
    early_stopping: EarlyStoppingSection = Field(default_factory=EarlyStoppingSection, description="Early stopping.")
    group_by_length: bool = Field(True, description="Batch examples of similar length together to cut padding.")
    report_to: Literal["auto", "none", "tensorboard", "mlflow"] = Field("auto", description=(
        "Experiment tracker. `auto`: TensorBoard when installed, else none."))
    num_workers: int = Field(0, ge=0, description="Data-loader worker processes.")

    @model_validator(mode="after")
    def _steps(self):
        if self.eval_strategy == "steps" and self.eval_steps is None:
            raise ValueError("train.eval_steps is required when train.eval_strategy is 'steps'")
        return self


class EvalSection(Section):
    metric: Optional[str] = Field(None, description=(
        "Validation metric for best-model selection and early stopping. Default: the task's (classification: "
        "accuracy; others: loss). Classification offers accuracy, f1_macro, f1_weighted, precision_macro, "
        "recall_macro, auc_roc, loss."))
    load_best_model: bool = Field(True, description="At the end, restore the checkpoint with the best `eval.metric`.")


class OutputSection(Section):
    dir: Optional[str] = Field(None, description="Run directory; default `runs/<name>-<timestamp>`.")
    name: Optional[str] = Field(None, description="Run name; default the config file's name.")
    overwrite: bool = Field(False, description="Allow writing into an existing run directory that is not being resumed.")


class TaskConfig(Section):
    """Base of each task's own config; `type` selects the registered task."""

    type: str = Field(description="The task: what is learned (`classification`, `causal_lm`).")


class MethodConfig(Section):
    """Base of each method's own config; `name` selects the registered method."""

    name: str = Field(description="The method: which parameters learn (`full`, `lora`, ...).")
    #: used when train.learning_rate is not set; each method states what suits it
    default_learning_rate: ClassVar[float] = 5e-5


class RunConfig(Section):
    model: ModelSection = Field(default_factory=ModelSection, description="The pretrained base model.")
    data: DataSection = Field(default_factory=DataSection, description="Where the data come from and how they are prepared.")
    task: SerializeAsAny[TaskConfig] = Field(description="What is learned; keys depend on `task.type`.")
    method: SerializeAsAny[MethodConfig] = Field(description="Which parameters learn; keys depend on `method.name`.")
    train: TrainSection = Field(default_factory=TrainSection, description="Optimisation and training loop.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Evaluation and model selection.")
    output: OutputSection = Field(default_factory=OutputSection, description="Where the run is written.")

    @property
    def learning_rate(self) -> float:
        return self.train.learning_rate or self.method.default_learning_rate
