"""The task contract: what is learned. A task owns its record format, its head, its loss and its metrics.

    prepare(tokenizer)          -> Prepared: tokenized train / validation / test datasets + info
    model_kwargs(prepared)      -> `from_pretrained` arguments for the head (labels, problem type)
    head_modules(model)         -> names of modules that are new for this task and always train
    collator(tokenizer)         -> batches with dynamic padding
    compute_metrics(prepared)   -> the Trainer's metric function for validation
    loss_function(prepared)     -> optional custom loss (None: the model's own)
    write_data_report(prepared, dir) -> optional data report in the run's data/ directory
    final_evaluation(...)       -> metrics on the test split; writes eval/metrics.json, report.md, plots
    metadata(prepared)          -> what inference needs later (label map, ...), saved with the model
    preprocess_logits(prepared) -> optional reduction of each eval batch's logits before they are gathered
    save_extras(dir, prepared)  -> extra files for model/ (for example a generation_config.json)
    use_fused_loss(model)       -> optional training loss without full outputs (train.chunked_loss)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from torch import nn

from tuneforge.config.schema import RunConfig, TaskConfig
from tuneforge.errors import ConfigError
from tuneforge.registry import Registry, closest


@dataclass
class Prepared:
    train: Any
    validation: Any | None
    test: Any | None
    info: dict = field(default_factory=dict)


class Task:
    name: ClassVar[str]
    Config: ClassVar[type[TaskConfig]]
    auto_class_name: ClassVar[str]
    #: validation metrics the task reports, and whether larger is better for each
    metrics: ClassVar[dict[str, bool]] = {"loss": False}
    #: defaults for keys the config leaves null because they depend on the task
    default_metric: ClassVar[str] = "loss"
    default_max_length: ClassVar[int] = 512
    #: how `tuneforge export --format int8` quantizes: `dynamic` (int8 weights and per-batch int8 activations;
    #: faster on CPU) or `weight-only` (int8 weights on disk, fp32 compute; for models whose activations have
    #: outliers that per-tensor activation scales cannot hold)
    int8_scheme: ClassVar[str] = "dynamic"
    #: `tuneforge train --force`: data checks that can be overridden warn instead of failing
    force: bool = False

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    @property
    def auto_class(self):
        import transformers
        return getattr(transformers, self.auto_class_name)

    @classmethod
    def fill_defaults(cls, cfg: RunConfig) -> None:
        """Resolve the keys whose default depends on the task, so the saved config is explicit."""
        if cfg.eval.metric is None:
            cfg.eval.metric = cls.default_metric
        if cfg.data.max_length is None:
            cfg.data.max_length = cls.default_max_length

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        if cfg.eval.metric not in cls.metrics:
            raise ConfigError(f"eval.metric: '{cfg.eval.metric}' is not a {cls.name} metric"
                              f"{closest(cfg.eval.metric, cls.metrics)}; available: {', '.join(cls.metrics)}")

    def prepare(self, tokenizer) -> Prepared:
        raise NotImplementedError

    def model_kwargs(self, prepared: Prepared) -> dict:
        return {}

    def head_modules(self, model: nn.Module) -> list[str]:
        """Top-level modules outside the pretrained backbone that hold parameters (the new head)."""
        prefix = getattr(model, "base_model_prefix", "")
        return [name for name, mod in model.named_children()
                if name != prefix and any(True for _ in mod.parameters())]

    def collator(self, tokenizer) -> Callable:
        raise NotImplementedError

    def compute_metrics(self, prepared: Prepared) -> Callable | None:
        return None

    def write_data_report(self, prepared: Prepared, out_dir: str) -> None:
        """Write what the data looked like and what preparation did (report.md, plots) into `out_dir`
        (the run's data/ directory). Default: nothing."""

    def loss_function(self, prepared: Prepared) -> Callable | None:
        """Optional Trainer `compute_loss_func(outputs, labels, num_items_in_batch)` (e.g. class-weighted
        loss); None keeps the model's own loss."""
        return None

    def final_evaluation(self, trainer, prepared: Prepared, eval_dir: str, val_metrics: dict) -> dict:
        raise NotImplementedError

    def metadata(self, prepared: Prepared) -> dict:
        return {}

    def preprocess_logits(self, prepared: Prepared) -> Callable | None:
        """Optional Trainer `preprocess_logits_for_metrics(logits, labels)`: shrink what evaluation keeps
        (a causal LM's full-vocabulary logits for a whole split would not fit in memory)."""
        return None

    def save_extras(self, model_dir: str, prepared: Prepared) -> None:
        """Write extra files into the model directory (called after the method saved the weights)."""

    def use_fused_loss(self, model: nn.Module) -> str | None:
        """`train.chunked_loss`: make `model` compute its training loss without materialising its full
        output (for example vocabulary-sized logits). Returns None when done, else why it cannot."""
        return f"the {self.name} task has no fused loss"


TASKS: Registry[type[Task]] = Registry("task")
