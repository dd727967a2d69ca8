"""The task contract: what is learned, over a run's whole life. A task owns its data keys and record format,
its head, loss and metrics, and how a finished run is used (predict, serve, export). Nothing outside `tasks/`
asks which task runs: the engine, `inference`, `serve/` and `export/` only call the hooks and read the
capabilities below.

Configuration
    Config, DataConfig          its `task:` keys and its `data:` keys (DataConfig extends config.DataSection)
    fill_defaults / check_config
Training (an instance, built with the run config and `force`)
    prepare(tokenizer)          -> Prepared: read and split, clean the training split, encode
    model_kwargs(prepared)      -> `from_pretrained` arguments for the head (labels, problem type)
    prepare_model(model)        -> the loaded model, adjusted for training (default: unchanged)
    head_modules(model)         -> names of modules that are new for this task and always train
    collator(tokenizer)         -> batches with dynamic padding
    compute_metrics / loss_function / preprocess_logits (prepared) -> the Trainer's hooks (None: its default)
    train_sampler(prepared)     -> the order of the training rows (None: the Trainer's shuffling / length groups)
    use_fused_loss(model)       -> optional training loss without full outputs (train.chunked_loss)
    write_data_report(prepared, dir), final_evaluation(trainer, prepared, dir, val_metrics, without_adapters)
    metadata(prepared), save_extras(dir, prepared) -> what inference needs later, saved with the model
    held_out(run_dir, tokenizer) -> the run's own validation/test split again (saved with the run)
A finished run (class methods; `run` has .model, .tokenizer, .meta = model/tuneforge.json, .model_dir)
    interface                   how it is used: `classify` (predict, eval, serve /v1/classify) or `chat`
                                (chat, generate, serve /v1/chat/completions)
    head_kwargs(meta)           -> `from_pretrained` arguments that rebuild the head when loading
    predict(run, texts) / evaluate(run, frame, ...)   `classify` tasks
    export_formats, onnx_forward_kwargs, onnx_usable, parity_batch_size, export_parity(...), int8_scheme,
    onnx_outputs(meta)          the ONNX graph's output names; `logits` split into them (default: one `logits`)
    full_precision_modules      module names kept out of quantization (the head), before the model exists
Model inputs (class methods; the defaults are for text models and their tokenizers)
    input_kind                  `text` or `image`: what predict / serve / the web UI take
    load_processor(path)        the tokenizer (text) or image preprocessing saved with the model
    check_inputs(processor, meta, texts)     a few model inputs for the merge equivalence check
    export_rows(split) / export_batch(rows, processor)   held-out rows as model inputs (export parity, speed)
    onnx_inputs(processor)      the ONNX graph's input names, example arguments and dynamic axes
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from torch import nn

from tuneforge.config.schema import DataSection, RunConfig, TaskConfig
from tuneforge.errors import ConfigError, ModelError
from tuneforge.registry import TASKS, closest  # noqa: F401  (TASKS: re-exported for the task modules)


@dataclass
class Prepared:
    """What `Task.prepare` returns: the encoded splits and everything the later hooks need, so nothing is
    left on the task object between hooks."""

    train: Any  # encoded training rows (a datasets.Dataset)
    validation: Any | None
    test: Any | None
    sizes: dict[str, int]  # examples per split (before any packing)
    state: Any = None  # the task's own typed result (label names, chat template, ...)
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
    #: how a finished run is used: `classify` or `chat` (see the module docstring)
    interface: ClassVar[str] = "classify"
    #: module names of the task's head, kept out of 4/8-bit quantization (known before the model loads)
    full_precision_modules: ClassVar[tuple[str, ...]] = ()
    #: `tuneforge export --format` values that apply to this task
    export_formats: ClassVar[tuple[str, ...]] = ("merged", "onnx", "int8")
    #: extra forward arguments for the ONNX graph (for example no KV cache)
    onnx_forward_kwargs: ClassVar[dict] = {}
    #: whether an ONNX export can stand in for the model in predict / serve (not only in parity checks)
    onnx_usable: ClassVar[bool] = False
    #: rows per forward pass in export parity checks and benchmarks
    parity_batch_size: ClassVar[int] = 32
    #: how `tuneforge export --format int8` quantizes: `dynamic` (int8 weights and per-batch int8 activations;
    #: faster on CPU) or `weight-only` (int8 weights on disk, fp32 compute; for models whose activations have
    #: outliers that per-tensor activation scales cannot hold)
    int8_scheme: ClassVar[str] = "dynamic"
    #: what a finished run is given to predict: `text` (strings) or `image` (image files or bytes)
    input_kind: ClassVar[str] = "text"

    def __init__(self, cfg: RunConfig, force: bool = False):
        """`force` (`tuneforge train --force`): data checks that can be overridden warn instead of failing."""
        self.cfg = cfg
        self.force = force

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

    def training_loss(self, prepared: Prepared) -> Callable | None:
        """Optional `loss(model, inputs) -> (loss, outputs)` replacing the Trainer's whole loss computation (a
        distillation objective needs inputs the model does not take); None keeps the Trainer's."""
        return None

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

    # ---- a finished run ----------------------------------------------------------------------------------
    @classmethod
    def head_kwargs(cls, meta: dict) -> dict:
        """`from_pretrained` arguments that rebuild the task's head when a run is loaded (label map, ...)."""
        return {}

    @classmethod
    def predict(cls, run, texts: list[str], batch_size: int = 64) -> list[dict]:
        raise ModelError(f"this run's task is '{cls.name}': it answers with `tuneforge chat` / `generate`, not predict")

    @classmethod
    def evaluate(
        cls, run, source: str, out_dir, text_column: str | None = None, label_column: str | None = None
    ) -> dict:
        raise ModelError(f"eval --data does not apply to this run's task '{cls.name}'")

    @classmethod
    def onnx_outputs(cls, meta: dict) -> list[tuple[str, int]]:
        """The ONNX graph's outputs as (name, width): the model's `logits` are split along the last axis into
        them in this order (and joined again when the export is loaded). Default: one output, `logits`."""
        return [("logits", -1)]

    # ---- model inputs outside training (text defaults) ------------------------------------------------------
    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False):
        """What turns raw inputs into model inputs, saved beside the weights: here the tokenizer."""
        from tuneforge.models.loader import load_tokenizer

        return load_tokenizer(path, trust_remote_code)

    @classmethod
    def check_inputs(cls, processor, meta: dict, texts: list[str] | None = None) -> list[dict]:
        """Model inputs (one example each, unpadded) on which a merged model must agree with the trained one:
        `texts` (`tuneforge merge --text`) or a few fixed sentences."""
        max_length = int(meta.get("max_length") or 128)
        out = []
        for text in texts or CHECK_TEXTS:
            enc = processor(text, return_tensors="pt", truncation=True, max_length=max_length)
            out.append(
                {
                    k: v
                    for k, v in enc.items()
                    if k != "token_type_ids" or "token_type_ids" in getattr(processor, "model_input_names", [])
                }
            )
        return out

    @classmethod
    def export_rows(cls, split, n: int) -> list[dict]:
        """The first `n` rows of a held-out split (as `held_out` returns it) in the form `export_batch` takes;
        each row carries its `label` (None when the task has none)."""
        rows = []
        for r in split.select(range(n)):
            rows.append(
                {
                    "input_ids": list(r["input_ids"]),
                    "label": r.get("labels"),
                    **({"token_type_ids": list(r["token_type_ids"])} if "token_type_ids" in r else {}),
                }
            )
        return rows

    @classmethod
    def export_batch(cls, rows: list[dict], processor) -> dict:
        """Rows of `export_rows` as one batch of model inputs (tensors): token ids right-padded, with the mask."""
        import torch

        pad_id = processor.pad_token_id if processor.pad_token_id is not None else 0
        width = max(len(r["input_ids"]) for r in rows)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        tt = np.zeros_like(ids)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n], mask[i, :n] = r["input_ids"], 1
            if "token_type_ids" in r:
                tt[i, :n] = r["token_type_ids"]
        out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if "token_type_ids" in rows[0]:
            out["token_type_ids"] = torch.from_numpy(tt)
        return out

    @staticmethod
    def output_rows(logits, batch: dict, rows: list[dict]) -> list:
        """Per-row outputs of one export batch: a sequence-level head's [outputs], or a LM's [positions, vocab]
        of each row's real tokens."""
        return [logits[k] if logits.ndim == 2 else logits[k, : len(r["input_ids"])] for k, r in enumerate(rows)]

    @classmethod
    def onnx_inputs(cls, processor) -> tuple[list[str], tuple, tuple]:
        """(input names, example tensors, dynamic shapes) for tracing the ONNX graph: token ids and mask (and
        token type ids where the tokenizer makes them), with dynamic batch and sequence axes."""
        import torch
        from torch.export import Dim

        names = [
            n
            for n in ("input_ids", "attention_mask", "token_type_ids")
            if n in getattr(processor, "model_input_names", ["input_ids", "attention_mask"])
        ]
        if "attention_mask" not in names:
            names.insert(1, "attention_mask")
        example = processor(
            ["an example input for tracing", "a second, longer example input for tracing"],
            padding=True,
            return_tensors="pt",
        )
        args = tuple(example[n] if n in example else torch.zeros_like(example["input_ids"]) for n in names)
        batch, seq = Dim("batch", min=1, max=1024), Dim("sequence", min=1, max=8192)
        return names, args, tuple({0: batch, 1: seq} for _ in names)

    @classmethod
    def export_parity(
        cls,
        reference: list[np.ndarray],
        exported: list[np.ndarray],
        rows: list[dict],
        split: str,
        meta: dict | None = None,
    ) -> dict:
        """How far an export's outputs are from the trained model's on the same rows of the run's split
        (`meta`: the run's model/tuneforge.json)."""
        diff = max(float(np.abs(a - b).max()) for a, b in zip(reference, exported))
        agree = np.concatenate([np.atleast_1d(a.argmax(-1) == b.argmax(-1)) for a, b in zip(reference, exported)])
        return {"split": split, "rows": len(rows), "max_abs_logit_diff": diff, "argmax_agreement": float(agree.mean())}


#: inputs of the merge equivalence check for text models
CHECK_TEXTS = [
    "A gripping, beautifully acted film.",
    "Dull, predictable and far too long.",
    "What is the capital of France?",
    "The quick brown fox jumps over the lazy dog.",
]


# ---- helpers the classifier tasks share -------------------------------------------------------------------------
def first_output(predictions) -> np.ndarray:
    """The logits among what the Trainer's evaluation returns (a tuple when the model returned more outputs)."""
    return np.asarray(predictions[0] if isinstance(predictions, tuple) else predictions)


def padding_collator(tokenizer) -> Callable:
    """Batches padded to their own longest row (the `length` column used for length grouping is dropped)."""
    from transformers import DataCollatorWithPadding

    pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=None)

    def collate(features):
        return pad([{k: v for k, v in f.items() if k != "length"} for f in features])

    return collate


def batched_logits(run, texts: list[str], pairs: list[str] | None, width: int, batch_size: int = 64) -> np.ndarray:
    """`run.model(**encodings).logits` for `texts` (and text pairs), `width` columns, batched by length so padding
    stays small; returned in input order."""
    import torch

    max_length = run.meta.get("max_length", 512)
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), width), dtype=np.float32)
    device = next(run.model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            enc = run.tokenizer(
                [texts[j] for j in idx],
                [pairs[j] for j in idx] if pairs else None,
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            out[idx] = run.model(**enc).logits.float().cpu().numpy()
    return out
