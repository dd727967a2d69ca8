"""The whole run configuration (RunConfig) and its sections other than data and train: the base model,
distillation, evaluation and output; plus the bases of the open `task` and `method` sections."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, SerializeAsAny, field_validator

from tuneforge.config.schema.base import Section
from tuneforge.config.schema.data import DataSection
from tuneforge.config.schema.train import TrainSection


class VocabularySection(Section):
    """`model.extend_vocabulary`: new tokens learned from a corpus and added to the base's tokenizer."""

    corpus: str = Field(
        ...,
        description=(
            "Text to learn the new tokens from: a data file (csv/tsv/json/jsonl/parquet/txt) or a builtin set, for "
            "example builtin:zh-text-demo (raw Chinese text)."
        ),
    )
    text_column: str = Field("text", description="The corpus column holding the text.")
    new_tokens: int = Field(
        2000,
        ge=1,
        le=200000,
        description=(
            "How many tokens to add at most: those that save the most tokens over the corpus, among the tokens a "
            "tokenizer of the base's own kind (byte-level BPE, WordPiece, Unigram) learns from it."
        ),
    )
    min_frequency: int = Field(2, ge=1, description="A candidate token must occur at least this often in the corpus.")


class ModelSection(Section):
    name: str = Field(
        "builtin:minilm-l6",
        description=(
            "Base model: a builtin alias (`tuneforge models` lists them), a local transformers model "
            "directory, a GGUF file (or a directory holding one) of an architecture transformers reads (llama, "
            "mistral, qwen2, qwen3, gemma2/3, phi3, ...; dequantized and converted once), a timm model directory, a "
            "torchvision/timm ResNet or MobileNetV2 checkpoint file (.pth, .pt, .bin, .ckpt, .safetensors; converted "
            "once), or a hub id (needs network access)."
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

    extend_vocabulary: VocabularySection | None = Field(
        None,
        description=(
            "Vocabulary expansion: learn new tokens from a corpus (`corpus`, `new_tokens`, `min_frequency`), add "
            "them to the tokenizer, grow the embeddings (and an untied output layer) and start each new row as the "
            "mean of the rows of the pieces the old tokenizer split the token into. The extended tokenizer is "
            "saved with the run. Null: the base's vocabulary."
        ),
    )
    add_tokens: list[str] = Field(
        default_factory=list,
        description="Tokens to add to the tokenizer as they are (initialised like `extend_vocabulary`'s).",
    )
    add_special_tokens: list[str] = Field(
        default_factory=list,
        description=(
            "Special tokens to add (never split, skipped by decode(skip_special_tokens=True)), for example tool or "
            "role markers; initialised like `add_tokens`."
        ),
    )
    train_embeddings: Literal["new", "all"] = Field(
        "new",
        description=(
            "Under LoRA/DoRA/QLoRA with added tokens: `new` trains only the new tokens' rows of the embedding (and "
            "of an untied output layer), through PEFT's trainable tokens, and saves only those rows; `all` trains "
            "and saves the whole embedding matrix (PEFT's modules_to_save: a second copy of it in memory and in "
            "the checkpoint). Full fine-tuning trains every row either way."
        ),
    )

    @field_validator("add_tokens", "add_special_tokens")
    @classmethod
    def _tokens(cls, value):
        bad = [t for t in value if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(f"a token must be a non-empty text, got {bad[0]!r}")
        return value

    @property
    def extends_vocabulary(self) -> bool:
        """Whether the run adds tokens to its base's tokenizer."""
        return bool(self.extend_vocabulary or self.add_tokens or self.add_special_tokens)

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

    @classmethod
    def for_variant(cls, base: dict, variant: dict, key: str) -> tuple[dict, list[str]]:
        """The `task:` section of a run that differs from `base` (a raw section) in `key` only (`tuneforge compare
        --vary task.<key>=...`; `variant` is `base` with the new value). A task whose keys depend on another key's
        value (a preference loss's own parameters) drops those that no longer apply; returns (section, one note per
        key dropped). Default: `variant` as it is."""
        return variant, []


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
