"""The task contract: what is learned, over a run's whole life. A task owns its data keys and record format,
its head, loss and metrics, and how a finished run is used (predict, serve, export). Nothing outside `tasks/`
asks which task runs: the engine, `inference`, `serve/` and `export/` only call the hooks and read the
capabilities below. The class holds configuration and training; a finished run is used through two objects
the task declares (tasks/hooks.py), so each side of the contract can be read on its own.

Configuration (class methods)
    Config, DataConfig          its `task:` keys and its `data:` keys (DataConfig extends config.DataSection)
    fill_defaults / check_config / supports_strategy(cfg, strategy)
    metrics, default_metric, default_max_length, report_metrics, aliases, distill_keys, prepares_tables,
    rows_per_example
Training (an instance, built with the run config and `force`)
    prepare(processor)          -> Prepared[its state]: read and split, clean the training split, encode
    auto_class(), full_precision_modules   the model class, and its head's names kept out of 4/8-bit quantization
    model_kwargs(prepared)      -> `from_pretrained` arguments for the head (labels, problem type)
    prepare_model(model)        -> the loaded model, adjusted for training (default: unchanged)
    head_modules(model)         -> names of modules that are new for this task and always train
    collator(processor)         -> batches with dynamic padding
    compute_metrics / loss_function / preprocess_logits (prepared) -> the Trainer's hooks (None: its default)
    train_sampler(prepared)     -> the order of the training rows (None: the Trainer's shuffling / length groups)
    use_fused_loss(model)       -> optional training loss without full outputs (train.chunked_loss)
    distill(prepared, ...), training_loss(prepared, without_adapters)   a teacher's targets and the loss that
                                reads them; a loss with a reference model (the method's adapters off)
    write_data_report(prepared, dir), final_evaluation(trainer, prepared, dir, val_metrics, without_adapters)
    test_outputs(trainer, prepared) -> how a final evaluation on the test split starts (None: no test split)
    metadata(prepared), save_extras(dir, prepared) -> what inference needs later, saved with the model
    held_out(run_dir, processor) -> the run's own validation/test split again (saved with the run)
A finished run (tasks/hooks.py; the defaults are for text models and their tokenizers)
    inference                   InferenceHooks: interface (`classify` / `chat`), input_kind (`text` / `image`),
                                load_processor(path), head_kwargs(meta), predict / evaluate / logits, score
                                (prompt, completion) -> a reward
    exports                     ExportHooks: formats, int8_scheme, onnx_usable, onnx_inputs / onnx_outputs,
                                check_inputs (merge check), held_out_rows / batch / output_rows / parity
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from torch import nn

from tuneforge.config.schema import DataSection, RunConfig, TaskConfig
from tuneforge.errors import ConfigError
from tuneforge.registry import TASKS, closest  # noqa: F401  (TASKS: re-exported for the task modules)
from tuneforge.tasks.hooks import ExportHooks, InferenceHooks

log = logging.getLogger("tuneforge")

#: a task's own state type (a dataclass: label names, chat template, ...)
S = TypeVar("S")


@dataclass
class Prepared(Generic[S]):
    """What `Task.prepare` returns: the encoded splits and everything the later hooks need, so nothing is
    left on the task object between hooks. `state` is the task's own dataclass (`Prepared[ClassificationState]`)."""

    train: Any  # encoded training rows (a datasets.Dataset)
    validation: Any | None
    test: Any | None
    sizes: dict[str, int]  # examples per split (before any packing)
    state: S  # what preparation decided that later hooks read (label names, chat template, ...)
    report: dict = field(default_factory=dict)  # the data report (data/report.md, report.json)
    #: the exact held-out records ({"validation": [...], "test": [...]}, as the task reads them back) and the
    #: ids of the source rows that trained; the engine saves them into the run's data/split/
    held_out: dict[str, list] = field(default_factory=dict)
    train_ids: list | None = None
    lengths: dict[str, list[int]] | None = None  # token lengths per split, for the data report
    efficiency: dict = field(default_factory=dict)  # extra efficiency.json fields (padding, packing)
    info: dict = field(default_factory=dict)  # details reported in eval/metrics.json
    teacher: Any = None  # the distillation teacher, once `Task.distill` attached it


class Task:
    name: ClassVar[str]
    Config: ClassVar[type[TaskConfig]]
    DataConfig: ClassVar[type[DataSection]] = DataSection
    auto_class_name: ClassVar[str]
    #: validation metrics the task reports, and whether larger is better for each
    metrics: ClassVar[dict[str, bool]] = {"loss": False}
    #: defaults for keys the config leaves null because they depend on the task
    default_metric: ClassVar[str] = "loss"
    default_max_length: ClassVar[int] = 512
    #: other names of the task (in file names such as configs/methods/lora-sft.yaml)
    aliases: ClassVar[tuple[str, ...]] = ()
    #: final metrics a method comparison shows, in column order
    report_metrics: ClassVar[tuple[str, ...]] = ("loss",)
    #: whether the task's data are table rows that `tuneforge data prepare` can write out cleaned (the task then
    #: implements `prepare_frames()` -> (train, validation, test, report, labels) as pandas frames)
    prepares_tables: ClassVar[bool] = False
    #: rows of the forward pass per training example (a preference pair: 2), for the memory estimate
    rows_per_example: ClassVar[int] = 1
    #: evaluate (during training and at the end) in full precision even when training runs under bf16/fp16
    #: autocast: for metrics that are small differences of long sums (a preference pair's reward margin), which
    #: 16-bit rounding would drown
    evaluate_in_fp32: ClassVar[bool] = False
    #: module names of the task's head, kept out of 4/8-bit quantization (known before the model loads)
    full_precision_modules: ClassVar[tuple[str, ...]] = ()
    #: a finished run: loading it, predict / evaluate (tasks/hooks.py)
    inference: ClassVar[InferenceHooks] = InferenceHooks()
    #: a finished run: merge and export formats, ONNX graph, parity (tasks/hooks.py)
    exports: ClassVar[ExportHooks] = ExportHooks()

    def __init__(self, cfg: RunConfig, force: bool = False):
        """`force` (`tuneforge train --force`): data checks that can be overridden warn instead of failing."""
        self.cfg = cfg
        self.force = force
        #: a finished run's directory -> a function (prompts, completions) -> rewards: set by the training engine
        #: (tuneforge.inference.run_scorer) for a task that scores with another run (GRPO's reward runs); tasks sit
        #: below the layer that loads runs, so it is handed in, not imported
        self.run_scorer: Callable[[str], Callable] | None = None

    @classmethod
    def auto_class(cls):
        import transformers

        return getattr(transformers, cls.auto_class_name)

    @classmethod
    def fill_defaults(cls, cfg: RunConfig) -> None:
        """Resolve the keys whose default depends on the task, so the saved config is explicit."""
        if cfg.eval.metric is None:
            cfg.eval.metric = cls.default_metric
        if cfg.data.max_length is None:
            cfg.data.max_length = cls.default_max_length
        if cfg.distill.temperature is None:
            cfg.distill.temperature = cls.default_distill_temperature

    #: distill.temperature when the config leaves it null
    default_distill_temperature: ClassVar[float] = 1.0
    #: distill keys this task reads (besides teacher, temperature and alpha)
    distill_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        from tuneforge.config.schema import DistillSection

        for key in ("unlabeled", "hidden_weight", "divergence", "beta", "mode"):
            if key not in cls.distill_keys and getattr(cfg.distill, key) != DistillSection.model_fields[key].default:
                raise ConfigError(f"distill.{key}: not used by the {cls.name} task; remove it")
        if cfg.distill.teacher is None and cfg.distill.unlabeled is not None:
            raise ConfigError("distill.unlabeled: needs distill.teacher (only a teacher labels those texts)")
        if cfg.eval.metric not in cls.metrics:
            raise ConfigError(
                f"eval.metric: '{cfg.eval.metric}' is not a {cls.name} metric"
                f"{closest(cfg.eval.metric, cls.metrics)}; available: {', '.join(cls.metrics)}"
            )

    @classmethod
    def supports_strategy(cls, cfg: RunConfig, strategy: str) -> str | None:
        """None when the task trains under the multi-process `train.distributed.strategy` (`ddp`, `fsdp`,
        `deepspeed`), else why not (one clause; `load_config` reports it as a config error). Default: all do."""
        return None

    # ---- training ----------------------------------------------------------------------------------------
    def prepare(self, tokenizer) -> Prepared:
        """Read and split the data, clean the training split, encode every split (`tokenizer`: what the task's
        `inference.load_processor` returned for the base model)."""
        raise NotImplementedError

    def held_out(self, run_dir, tokenizer) -> tuple[Any, str]:
        """The run's test split (its validation split when it has none), encoded as in training, from the
        records saved in RUN/data/split/ (runs written before they were saved: re-created from config.yaml).
        Returns (dataset or None, split name)."""
        raise NotImplementedError

    def model_kwargs(self, prepared: Prepared) -> dict:
        return {}

    def distill(self, prepared: Prepared, tokenizer, teacher, cache_dir) -> Prepared:
        """Attach the teacher's targets to the training data (`distill.teacher`): the engine loaded `teacher`
        (tuneforge.training.distill.Teacher); teacher outputs are cached under `cache_dir`. Raises ConfigError /
        DataError before training when the teacher cannot teach this data."""
        raise ConfigError(f"distill.teacher: the {self.name} task has no distillation")

    def training_loss(self, prepared: Prepared, without_adapters: Callable | None = None) -> Callable | None:
        """Optional `loss(model, inputs) -> (loss, outputs)` replacing the Trainer's whole loss computation (a
        distillation objective needs inputs the model does not take; a preference loss a reference model:
        `without_adapters(model)` is the method's `disabled_adapters` hook); None keeps the Trainer's. In
        evaluation, `outputs` (a dict) become the predictions `compute_metrics` receives."""
        return None

    @classmethod
    def rows_of(cls, cfg: RunConfig) -> int:
        """Rows of the forward pass per example of `train.batch_size` (for `tuneforge estimate`): `rows_per_example`
        by default; a task whose count depends on its config (GRPO's completions per prompt) says so here."""
        return cls.rows_per_example

    @classmethod
    def generated_tokens(cls, cfg: RunConfig) -> int:
        """Tokens per row (prompt + new tokens) the task generates inside each training step, before the step's
        forward pass (for `tuneforge estimate`: the generation's KV cache); 0 for a task that does not generate."""
        return 0

    @classmethod
    def frozen_copies(cls, cfg: RunConfig, has_adapters: bool) -> list[str]:
        """What frozen model copies a run of `cfg` holds in memory beside the trained model, one description each
        (a preference run's reference copy), for `tuneforge estimate`. `has_adapters`: whether the method's
        adapters can be switched off. Default: none."""
        return []

    def before_training(self, trainer, prepared: Prepared, without_adapters: Callable | None, cache_dir) -> Prepared:
        """Work with the model once it is built and before the first step (a preference run's reference log-probs):
        `trainer` is the run's Trainer (its model on its device), `without_adapters` the method's
        `disabled_adapters` hook, `cache_dir` a directory of the run for what should survive a --resume. Returns
        the prepared data the run trains on (default: unchanged)."""
        return prepared

    def train_sampler(self, prepared: Prepared):
        """A torch Sampler over the training rows with `set_epoch(epoch)` (the order must depend only on the seed
        and the epoch, so a resumed run sees the same rows), or None for the Trainer's own order."""
        return None

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Adjust the freshly loaded model before the method applies (default: as loaded)."""
        return model

    def head_modules(self, model: nn.Module) -> list[str]:
        """Top-level modules outside the pretrained backbone that hold parameters (the new head)."""
        prefix = getattr(model, "base_model_prefix", "")
        return [name for name, mod in model.named_children() if name != prefix and any(True for _ in mod.parameters())]

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

    def final_evaluation(
        self, trainer, prepared: Prepared, eval_dir: str, val_metrics: dict, without_adapters: Callable | None = None
    ) -> dict:
        """Metrics on the test split; writes eval/metrics.json, report.md and plots. `without_adapters(model)`
        is the method's context manager that yields the model with its adapters switched off, or None when
        the method has none (then the task loads the base model itself to compare)."""
        raise NotImplementedError

    def test_outputs(self, trainer, prepared: Prepared) -> tuple[np.ndarray, np.ndarray] | None:
        """How `final_evaluation` starts for a task scored on its test split: the model's logits and the labels
        there, or None (logged) when the run held no test split out; its final metrics are then the validation
        metrics."""
        if prepared.test is None:
            log.warning("no test split: final metrics are the validation metrics")
            return None
        out = trainer.predict(prepared.test, metric_key_prefix="test")
        return first_output(out.predictions), np.asarray(out.label_ids)

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


# ---- helpers the classifier tasks share -------------------------------------------------------------------------
def first_output(predictions) -> np.ndarray:
    """The logits among what the Trainer's evaluation returns (a tuple when the model returned more outputs)."""
    return np.asarray(predictions[0] if isinstance(predictions, tuple) else predictions)


def ensure_pad_token(tokenizer, model_name: str) -> int:
    """The id of the tokenizer's pad token. A tokenizer without one (most decoder models: Llama, Mistral) pads with
    its eos token, else its unk token, said in one line; the choice is set on the tokenizer, so the run saves it and
    predicts with it. Safe for tasks that read the last real token or mask the padding: pad positions are never
    read. Raises ConfigError when the tokenizer has none of the three."""
    import sys

    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    for role in ("eos", "unk"):
        token = getattr(tokenizer, f"{role}_token", None)
        if token is not None:
            tokenizer.pad_token = token
            print(
                f"tuneforge: the tokenizer of {model_name} has no pad token: padding with its {role} token "
                f"{token!r} (id {tokenizer.pad_token_id}); padding is masked and never read",
                file=sys.stderr,
                flush=True,
            )
            return int(tokenizer.pad_token_id)
    raise ConfigError(
        f"model.name: the tokenizer of {model_name} has no pad, eos or unk token to pad batches with; give the "
        f"model a tokenizer that has one"
    )


def padding_collator(tokenizer) -> Callable:
    """Batches padded to their own longest row (the `length` column used for length grouping is dropped)."""
    from transformers import DataCollatorWithPadding

    pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=None)

    def collate(features):
        return pad([{k: v for k, v in f.items() if k != "length"} for f in features])

    return collate


def token_lengths(splits: dict[str, Any]) -> dict[str, list[int]]:
    """Token lengths of each encoded split (its `length` column) for the data report; None splits are left out."""
    return {name: list(ds["length"]) for name, ds in splits.items() if ds is not None}
