"""The run configuration: one strict pydantic model per section.

Every field has a description; `tuneforge config-reference` and the README's reference are built from
them, so help text has one source. `task` and `method` are open sections: their keys belong to the
registered task or method named by `task.type` / `method.name` (each owns its config class).

Over 400 lines because every key carries its description here: this file is the one source of help text.
"""

from __future__ import annotations

import math
import re
import typing
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationInfo, field_validator, model_validator

#: seeds go to random.seed, numpy (0 .. 2**32-1) and torch.manual_seed: the range all three accept
MAX_SEED = 2**32 - 1
#: no count in a config is meaningfully larger; bigger values overflow torch / numpy integers
MAX_INT = 2**63 - 1


def _accepts(ann: Any, kind: type) -> bool:
    """Whether the annotation `ann` (possibly Optional/Union/Literal/list/dict) accepts a `kind` value."""
    if ann is kind:
        return True
    origin = typing.get_origin(ann)
    if origin is Literal:
        return any(type(a) is kind for a in typing.get_args(ann))
    if origin is None:
        return ann is Any
    return any(_accepts(a, kind) for a in typing.get_args(ann) if a is not Ellipsis)


def _scalar_problem(value: Any, ann: Any) -> str | None:
    """Why a YAML scalar cannot be a value of `ann` although pydantic's lax mode would coerce it."""
    if isinstance(value, bool):
        # pydantic's lax mode reads true as 1 / 1.0: only where a number is expected does a boolean slip through
        if not _accepts(ann, bool) and (_accepts(ann, int) or _accepts(ann, float)):
            return "must be a number, not a boolean (true/false)"
        return None
    if isinstance(value, int) and abs(value) > MAX_INT:
        return "number is too large"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, float) and abs(value) > MAX_INT and _accepts(ann, int) and not _accepts(ann, float):
        return "number is too large"
    return None


def _holds_scalars(ann: Any) -> bool:
    """Whether `ann` is (or unions with) a list or dict of scalars, rather than a config section."""
    origin = typing.get_origin(ann)
    if origin in (list, dict, tuple, set):
        return True
    return origin is not None and origin is not Literal and any(_holds_scalars(a) for a in typing.get_args(ann))


def _container_problem(value: Any, ann: Any) -> str | None:
    if isinstance(value, (dict, list, tuple)) and not _holds_scalars(ann):
        return None  # a section (validated by its own fields) or a type error pydantic reports
    if isinstance(value, dict):
        items = list(value.values())
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return _scalar_problem(value, ann)
    for item in items:
        if isinstance(item, (bool, int, float)):
            problem = _scalar_problem(item, ann)
            if problem:
                return problem.replace("must be", "every entry must be", 1)
    return None


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated. Booleans never pass as
    numbers (pydantic would read `true` as 1), and numbers must be finite and fit a 64-bit integer."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None:
            problem = _container_problem(value, field.annotation)
            if problem:
                raise ValueError(problem)
        return value


def _seed_field(default: int | None, description: str):
    return Field(default, ge=0, le=MAX_SEED, description=description + " An integer from 0 to 4294967295.")


class ModelSection(Section):
    name: str = Field(
        "builtin:minilm-l6",
        description=(
            "Base model: a builtin alias (`tuneforge models` lists them), a local transformers model "
            "directory, a timm model directory, a torchvision/timm ResNet or MobileNetV2 checkpoint file (.pth, .pt, "
            ".bin, .ckpt, .safetensors; converted once), or a hub id (needs network access)."
        ),
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description=("Weight dtype when loading. `auto`: float32 on CPU, bfloat16 on GPUs that support it.")
    )
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the model directory.")
    keep_layers: int | list[int] | None = Field(
        None,
        description=(
            "Build a smaller student by keeping some transformer blocks of `name` (DistilBERT-style initialisation): "
            "a count (evenly spread, first and last kept) or the block indices, e.g. [0, 2, 4]. BERT- and "
            "Llama-family models. Null: all blocks."
        ),
    )
    random_init: bool = Field(
        False,
        description=(
            "Start from randomly initialised weights of `name`'s architecture instead of its pretrained weights (the "
            "from-scratch baseline that fine-tuning is measured against)."
        ),
    )

    @field_validator("keep_layers")
    @classmethod
    def _some_layers(cls, value):
        if value is None:
            return value
        if isinstance(value, int) and value < 1:
            raise ValueError(f"keep at least 1 layer, got {value}")
        if isinstance(value, list) and not value:
            raise ValueError("an empty list keeps no layer; list the block indices to keep, or give a count")
        return value


class SplitSection(Section):
    validation: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description=("Fraction of the data held out for validation when no `data.validation` file is given."),
    )
    test: float = Field(
        0.1, ge=0.0, lt=1.0, description=("Fraction held out for the final test when no `data.test` file is given.")
    )
    stratify: bool = Field(True, description="Keep class proportions equal across splits (classification).")
    group_column: str | None = Field(
        None,
        description=(
            "Keep rows sharing this column's value in one split (for example `movie_name`), so near-identical "
            "texts cannot leak from train into test."
        ),
    )
    seed: int | None = _seed_field(None, "Seed of the split; defaults to `train.seed`.")

    @model_validator(mode="after")
    def _sizes(self):
        if self.validation + self.test >= 0.9:
            raise ValueError("split.validation + split.test must leave at least 10% for training")
        return self


class CleanSection(Section):
    dedup: Literal["none", "exact", "near"] = Field(
        "near",
        description=(
            "How duplicates are found: `exact` (after NFKC, case and whitespace normalisation), `near` (exact plus "
            "MinHash/LSH near-duplicates above `near_threshold`), or `none`. Applies within train and across splits."
        ),
    )
    near_threshold: float = Field(
        0.85,
        gt=0.0,
        le=1.0,
        description=("Jaccard similarity of character 4-gram shingles above which two texts count as near-duplicates."),
    )
    within_train: Literal["drop", "report"] = Field(
        "drop",
        description=(
            "Duplicates inside the training split: `drop` keeps the first of each group (per label), `report` "
            "only counts them."
        ),
    )
    cross_split: Literal["drop", "report", "none"] = Field(
        "drop",
        description=(
            "Training rows that duplicate a validation or test row (leakage): `drop` removes them from train, "
            "`report` only lists them. Validation and test are never changed."
        ),
    )
    conflicts: Literal["report", "drop", "majority"] = Field(
        "report",
        description=(
            "Duplicate groups in train whose labels disagree: `report` keeps one row per label, `drop` removes the "
            "whole group, `majority` keeps one row with the most frequent label (ties are dropped)."
        ),
    )
    label_noise: Literal["none", "report", "drop", "relabel"] = Field(
        "report",
        description=(
            "Label-error detection on train (confident learning on out-of-fold probabilities of the detector "
            "`noise_features`): `report` lists suspects, `drop` removes them, `relabel` gives them the predicted label."
        ),
    )
    noise_features: Literal["tfidf", "model", "both", "finetune"] = Field(
        "tfidf",
        description=(
            "The label-noise detector: a logistic regression on `tfidf` (word or character n-grams; seconds), on "
            "`model` (mean-pooled sentence embeddings of `model.name`, frozen; a forward pass over the training "
            "split, better on paraphrased or short texts) or `both` (the two models' probabilities averaged: fewer "
            "false suspects at about the same recall, at the cost of `model`); or `finetune`: the run's own model, "
            "method and training settings fine-tuned once per fold (`noise_folds` extra trainings: the most "
            "accurate detector and by far the slowest)."
        ),
    )
    noise_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description=(
            "`drop`/`relabel` act only on suspects whose out-of-fold probability for the suggested label is at "
            "least this."
        ),
    )
    noise_folds: int = Field(5, ge=2, le=20, description="Cross-validation folds for the out-of-fold probabilities.")


class BackTranslationSection(Section):
    to_model: str | None = Field(
        None,
        description=(
            "Local seq2seq translation model directory (source language -> pivot), e.g. a Marian en-de model."
        ),
    )
    back_model: str | None = Field(None, description="Local seq2seq model directory (pivot -> source language).")
    batch_size: int = Field(16, ge=1, description="Texts per translation batch.")
    max_length: int = Field(256, ge=8, description="Longest generated translation, in tokens.")
    num_beams: int = Field(1, ge=1, description="Beam width (1 = greedy, fastest).")
    sample: bool = Field(
        False, description="Sample (top-k 50) instead of greedy/beam search, for more varied paraphrases."
    )


class AugmentSection(Section):
    enabled: bool = Field(
        False, description="Add augmented copies of training examples (validation and test are never augmented)."
    )
    num_per_example: float = Field(
        1.0,
        ge=0.0,
        le=32.0,
        description=(
            "Augmented copies per training example; a fraction adds a copy to that share of examples (1.5: every "
            "example gets one, half get two)."
        ),
    )
    per_class: dict[str, float] | None = Field(
        None,
        description=("Copies per example for the named labels, overriding `num_per_example` (to top up rare classes)."),
    )
    ops: list[Literal["synonym", "insert", "swap", "delete", "back_translation"]] = Field(
        default_factory=lambda: ["synonym", "insert", "swap", "delete"],
        description=(
            "Operations; each copy uses one, chosen at random. `back_translation` needs "
            "`augment.back_translation.to_model` and `back_model`."
        ),
    )
    synonym_rate: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of words replaced by a synonym (WordNet / Cilin)."
    )
    insert_rate: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of words for which a synonym is inserted at a random place."
    )
    swap_rate: float = Field(0.1, ge=0.0, le=1.0, description="Share of words swapped with another word.")
    delete_rate: float = Field(0.1, ge=0.0, le=1.0, description="Probability of deleting each word.")
    language: Literal["auto", "en", "zh"] = Field(
        "auto",
        description=(
            "Language of the texts: `auto` detects it per example from the script (Han characters: zh, else en)."
        ),
    )
    protect: list[str] = Field(default_factory=list, description="Words that are never replaced, moved or deleted.")
    protect_entities: bool = Field(
        True, description=("Never change numbers or capitalised words inside a sentence (likely names and entities).")
    )
    protect_negations: bool = Field(
        True,
        description=(
            "Never change, move or delete negations (not, never, isn't, 不, 没有, ...): losing one can flip the label."
        ),
    )
    synonym_senses: int = Field(
        2,
        ge=0,
        description=(
            "English synonyms come from this many most frequent WordNet senses of a word per part of speech; 0 takes "
            "every sense (the EDA paper's choice, which also gives rare ones such as great -> 'with child')."
        ),
    )
    seed: int | None = _seed_field(None, "Seed of the augmentation; defaults to `train.seed`.")
    back_translation: BackTranslationSection = Field(
        default_factory=BackTranslationSection, description="Back-translation through local translation models."
    )

    @model_validator(mode="after")
    def _ops(self):
        if self.enabled and not self.ops:
            raise ValueError(
                "data.augment.ops is empty: list at least one of synonym, insert, swap, delete, back_translation"
            )
        bt = self.back_translation
        if "back_translation" in self.ops and self.enabled and not (bt.to_model and bt.back_model):
            raise ValueError(
                "data.augment.ops includes back_translation, but no translation models are configured: "
                "set data.augment.back_translation.to_model and back_model to local seq2seq model directories"
            )
        return self


class BalanceSection(Section):
    class_weights: Literal["none", "balanced"] | dict[str, float] = Field(
        "none",
        description=(
            "Class-weighted loss: `balanced` (inverse class frequency in the final training split), a mapping "
            "label -> weight, or `none`."
        ),
    )
    sampling: Literal["none", "oversample", "undersample", "augment"] = Field(
        "none",
        description=(
            "Resample the training split: `oversample` repeats rare-class rows, `undersample` drops frequent-class "
            "rows, `augment` tops up rare classes with augmented copies (data.augment's operations and rates)."
        ),
    )

    @field_validator("class_weights", mode="before")
    @classmethod
    def _weights(cls, v):
        if isinstance(v, str) and v not in ("none", "balanced"):
            raise ValueError("must be 'none', 'balanced' or a mapping label -> weight")
        if isinstance(v, dict) and any(not isinstance(w, (int, float)) or w <= 0 for w in v.values()):
            raise ValueError("every class weight must be a positive number")
        return v

    ratio: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description=(
            "Target size of every class relative to the largest (over/augment) or the floor relative to the smallest "
            "(undersample keeps at most smallest/ratio rows per class)."
        ),
    )


class DataSection(Section):
    """The data keys every task reads. Each task extends this class with its own keys (its `DataConfig`), and
    the `data:` section of a config is validated against the class of its `task.type`."""

    train: str = Field(
        "builtin:rotten-tomatoes",
        description=(
            "Training data: a csv/tsv/json/jsonl/parquet file, a directory saved by `datasets`, or a builtin "
            "data set (`builtin:rotten-tomatoes`; images: a folder of class folders, or `builtin:fashion-mnist`, "
            "`builtin:digits`). Without `validation`/`test` files it is split."
        ),
    )
    validation: str | None = Field(None, description="Optional validation file (same columns as train).")
    test: str | None = Field(None, description="Optional test file (same columns as train).")
    text_column: str = Field("text", description="Column holding the input text.")
    max_length: int | None = Field(
        None,
        ge=8,
        le=131072,
        description=(
            "Longest example in tokens (the cutoff length); longer ones are truncated. Default: the task's "
            "(128 for classification). Batches are padded only to their own longest example, never to this length."
        ),
    )
    max_train_samples: int | None = Field(
        None, ge=1, description=("Use only this many training rows (a stratified sample), for quick experiments.")
    )
    bad_records: Literal["error", "skip"] = Field(
        "error",
        description=(
            "A record that cannot be used (SFT: a turn that is empty, missing or not text, an unknown role, no "
            "assistant turn; classification: a label that is a list, a text that is a list or bytes that are not "
            "UTF-8): `error` stops with a message naming the record, `skip` leaves such records out, counts them in "
            "the log and lists them in the run's data/report.md. Unreadable files are errors either way."
        ),
    )
    split: SplitSection = Field(default_factory=SplitSection, description="How to split when files are not given.")


class EarlyStoppingSection(Section):
    patience: int | None = Field(
        None,
        ge=1,
        description=(
            "Stop after this many evaluations without improvement of `eval.metric`; null disables early stopping."
        ),
    )
    threshold: float = Field(0.0, ge=0.0, description="Smallest change that counts as an improvement.")


class FsdpSection(Section):
    sharding: Literal["full", "shard_grad_op", "hybrid"] = Field(
        "full",
        description=(
            "What FSDP2 shards: `full` (weights, gradients and optimizer states; weights re-gathered per block), "
            "`shard_grad_op` (weights stay gathered after the forward pass: faster, more memory), `hybrid` (full "
            "sharding inside a node, replicas across nodes: `--nnodes` > 1)."
        ),
    )
    auto_wrap: Literal["auto"] | list[str] = Field(
        "auto",
        description=(
            "Module classes that become one FSDP unit each. `auto`: the model's transformer block class (its "
            "`_no_split_modules`, for example `LlamaDecoderLayer`); or a list of class names."
        ),
    )
    activation_checkpointing: bool = Field(
        False,
        description=(
            "FSDP's own activation checkpointing of every wrapped block (use instead of "
            "`train.gradient_checkpointing`, "
            "not with it)."
        ),
    )
    cpu_offload: bool = Field(
        False,
        description=(
            "Keep sharded parameters and optimizer states in CPU memory between uses (much less GPU memory, slower)."
        ),
    )
    cpu_ram_efficient_loading: bool = Field(
        False,
        description=(
            "Only rank 0 reads the pretrained weights; the others receive them when the model is sharded (less CPU RAM "
            "on nodes with many GPUs)."
        ),
    )
    state_dict_type: Literal["full", "sharded"] = Field(
        "full",
        description=(
            "How checkpoints for `--resume` are written: `full` (gathered on rank 0, FSDP's FULL_STATE_DICT) or "
            "`sharded` (each rank writes its shard: faster for large models). The final `model/` directory is always "
            "the full, gathered model in the usual loadable files."
        ),
    )


class DeepSpeedSection(Section):
    stage: Literal[2, 3] = Field(
        2,
        description=(
            "ZeRO stage: 2 shards gradients and optimizer states, 3 also the weights (gathered into full 16-bit "
            "weights for the saved model)."
        ),
    )
    offload_optimizer: bool = Field(False, description="ZeRO-Offload: keep optimizer states (and the step) on the CPU.")
    offload_params: bool = Field(False, description="Keep the sharded weights on the CPU between uses (stage 3 only).")

    @model_validator(mode="after")
    def _stage3(self):
        if self.offload_params and self.stage != 3:
            raise ValueError("train.distributed.deepspeed.offload_params needs stage: 3 (stage 2 never shards weights)")
        return self


class DistributedSection(Section):
    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp",
        description=(
            "How a run started with `tuneforge train --nproc N` (and `--nnodes`) spreads over its processes: `ddp` "
            "(a full copy of the model per process, gradients averaged; CPU (gloo) or GPUs), `fsdp` (PyTorch FSDP2: "
            "weights, gradients and optimizer states sharded; GPUs), `deepspeed` (DeepSpeed ZeRO; GPUs, "
            "pip install deepspeed). With one process `ddp` changes nothing."
        ),
    )
    fsdp: FsdpSection = Field(default_factory=FsdpSection, description="Settings of `strategy: fsdp`.")
    deepspeed: DeepSpeedSection = Field(
        default_factory=DeepSpeedSection, description="Settings of `strategy: deepspeed`."
    )
    timeout_minutes: int = Field(
        30,
        ge=1,
        le=1440,
        description=("How long a process waits for the others at a collective operation before the run fails."),
    )


class TrainSection(Section):
    epochs: float = Field(3.0, gt=0, description="Number of passes over the training data.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(32, ge=1, le=1_000_000, description="Examples per device per forward pass.")
    eval_batch_size: int | None = Field(
        None, ge=1, le=1_000_000, description="Examples per evaluation batch (default 2x batch_size)."
    )
    gradient_accumulation_steps: int = Field(1, ge=1, le=1_000_000, description="Forward passes per optimizer step.")
    learning_rate: float | None = Field(
        None,
        gt=0,
        description=(
            "Peak learning rate. Default: the method's own (for example 5e-5 for full fine-tuning, 1e-3 for LoRA)."
        ),
    )
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"] = (
        Field("linear", description="Learning-rate schedule after warmup.")
    )
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0, description="Fraction of the steps spent warming up.")
    warmup_steps: int | None = Field(None, ge=0, description="Warmup steps; overrides warmup_ratio when set.")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay (not applied to biases and norms).")
    max_grad_norm: float = Field(1.0, ge=0.0, description="Gradient clipping norm; 0 disables clipping.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description=("`auto`: bf16 mixed precision on GPUs that support it, fp16 on older GPUs, fp32 on CPU.")
    )
    seed: int = _seed_field(42, "Seed for initialisation, shuffling and splits: same config + seed = same metrics.")
    eval_strategy: Literal["epoch", "steps", "no"] = Field("epoch", description="When to evaluate on validation.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N steps (with eval_strategy: steps).")
    save_steps: int | None = Field(
        None,
        ge=1,
        description=(
            "Save a checkpoint every N steps; default: at every evaluation. `tuneforge train --resume` "
            "continues from the last."
        ),
    )
    save_total_limit: int = Field(
        2, ge=1, description="Keep at most this many checkpoints (the best one is always kept)."
    )
    logging_steps: int = Field(10, ge=1, description="Write a row to metrics.jsonl every N steps.")
    early_stopping: EarlyStoppingSection = Field(default_factory=EarlyStoppingSection, description="Early stopping.")
    group_by_length: bool = Field(True, description="Batch examples of similar length together to cut padding.")
    report_to: Literal["auto", "none", "tensorboard", "mlflow"] = Field(
        "auto", description=("Experiment tracker. `auto`: TensorBoard when installed, else none.")
    )
    num_workers: int = Field(0, ge=0, le=256, description="Data-loader worker processes.")
    # speed and memory levers (tuneforge.training.speed): `auto` = on where it pays off (CUDA), off on CPU
    chunked_loss: Literal["auto"] | bool = Field(
        "auto",
        description=(
            "Causal LM: compute the training loss from the hidden states chunk by chunk, never holding the full "
            "tokens x vocabulary logits (GiBs at long sequences). `auto`: on with CUDA; `true` also on CPU."
        ),
    )
    fused_lora: Literal["auto"] | bool = Field(
        "auto",
        description=(
            "LoRA layers with dropout 0 and no DoRA run as one fused autograd function (less memory traffic, "
            "no float32 copy of each layer input). `auto`: on with CUDA; `true` also on CPU."
        ),
    )
    compile: Literal["auto"] | bool = Field(
        "auto",
        description=(
            "torch.compile each transformer block. `auto`: on with CUDA, off when liger is on; `true` needs a CUDA "
            "device (a config error on CPU, where compiling takes minutes before the first step and does not pay off), "
            "and with liger it compiles around liger's kernels."
        ),
    )
    liger: Literal["auto"] | bool = Field(
        "auto",
        description=(
            "liger-kernel's RMSNorm/RoPE/SwiGLU kernels (pip install 'tuneforge[gpu]'). `auto`: on with CUDA when "
            "installed; `true` fails without them."
        ),
    )
    optimizer: Literal["auto", "adamw", "adamw_fused", "adamw_8bit", "paged_adamw_8bit"] = Field(
        "auto",
        description=(
            "AdamW implementation. `auto`: fused (one kernel for all parameters) on CUDA and torch >= 2.8; "
            "`adamw_8bit` / `paged_adamw_8bit`: bitsandbytes 8-bit states (a quarter of AdamW's state memory)."
        ),
    )
    distributed: DistributedSection = Field(
        default_factory=DistributedSection,
        description=("Multi-process training (`tuneforge train CONFIG --nproc N`): the strategy and its settings."),
    )

    @field_validator("eval_strategy", mode="before")
    @classmethod
    def _no(cls, v):
        # `eval_strategy: no` in a YAML file arrives as False (YAML 1.1 booleans)
        return "no" if v is False else v

    @model_validator(mode="after")
    def _steps(self):
        if self.eval_strategy == "steps" and self.eval_steps is None:
            raise ValueError("train.eval_steps is required when train.eval_strategy is 'steps'")
        return self


_BAD_NAME = re.compile(r"[\\/\x00-\x1f\x7f]")


class DistillSection(Section):
    teacher: str | None = Field(
        None,
        description=(
            "Knowledge distillation: the teacher, a finished tuneforge run directory (any method; its adapters are "
            "applied), a `tuneforge export` directory or a local model directory of the same task. Null: no "
            "distillation."
        ),
    )
    temperature: float | None = Field(
        None,
        gt=0,
        le=100,
        description=(
            "Softmax temperature of teacher and student (the soft term is scaled by T^2). Default: the task's "
            "(classification 4, causal_lm 1)."
        ),
    )
    alpha: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description=("Weight of the distillation term; 1 - alpha weighs the ordinary loss on the true labels/tokens."),
    )
    unlabeled: str | None = Field(
        None,
        description=(
            "Classification: a file of extra texts (column `data.text_column`) without labels that only the teacher "
            "labels; only the distillation term applies to them."
        ),
    )
    hidden_weight: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description=(
            "Classification: weight of a mean-squared error between the student's block outputs and those of the "
            "teacher blocks they were cut from (`model.keep_layers` of the teacher's own model directory, so the "
            "hidden sizes and the tokenizer match). 0: off."
        ),
    )
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "forward_kl",
        description=(
            "causal_lm token-level distillation: KL(teacher || student), KL(student || teacher) or the generalised "
            "Jensen-Shannon divergence with weight `beta`."
        ),
    )
    beta: float = Field(0.5, gt=0.0, lt=1.0, description="Weight of the teacher in `jsd`'s mixture.")
    mode: Literal["token", "sequence"] = Field(
        "token",
        description=(
            "causal_lm: `token` matches the teacher's next-token distributions on the trained tokens (teacher and "
            "student must share a vocabulary); `sequence` has the teacher answer the training prompts once (cached) "
            "and trains the student on those answers with ordinary SFT (any tokenizers)."
        ),
    )


class EvalSection(Section):
    metric: str | None = Field(
        None,
        description=(
            "Validation metric for best-model selection and early stopping. Default: the task's (classification: "
            "accuracy; others: loss). Classification offers accuracy, f1_macro, f1_weighted, precision_macro, "
            "recall_macro, auc_roc, loss."
        ),
    )
    load_best_model: bool = Field(True, description="At the end, restore the checkpoint with the best `eval.metric`.")


class OutputSection(Section):
    dir: str | None = Field(None, description="Run directory; default `runs/<name>-<timestamp>`.")
    name: str | None = Field(
        None,
        max_length=100,
        description=(
            "Run name; default the config file's name. A plain name (no slashes, no `..`, no control characters); "
            "where the run is written is `output.dir`."
        ),
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v):
        if v is not None and (not v.strip() or v.strip(".") == "" or _BAD_NAME.search(v)):
            raise ValueError(
                "must be a plain name without path separators, '..' or control characters "
                "(use output.dir for the location)"
            )
        return v

    overwrite: bool = Field(
        False, description="Allow writing into an existing run directory that is not being resumed."
    )


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
    data: SerializeAsAny[DataSection] = Field(
        default_factory=DataSection,
        description=("Where the data come from and how they are prepared; some keys depend on `task.type`."),
    )
    task: SerializeAsAny[TaskConfig] = Field(description="What is learned; keys depend on `task.type`.")
    method: SerializeAsAny[MethodConfig] = Field(description="Which parameters learn; keys depend on `method.name`.")
    train: TrainSection = Field(default_factory=TrainSection, description="Optimisation and training loop.")
    distill: DistillSection = Field(
        default_factory=DistillSection,
        description=("Knowledge distillation from a teacher model (off unless `distill.teacher` is set)."),
    )
    eval: EvalSection = Field(default_factory=EvalSection, description="Evaluation and model selection.")
    output: OutputSection = Field(default_factory=OutputSection, description="Where the run is written.")

    @property
    def learning_rate(self) -> float:
        return self.train.learning_rate or self.method.default_learning_rate
