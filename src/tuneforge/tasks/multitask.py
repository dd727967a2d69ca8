"""Multi-task classification: one shared backbone, one head per named sub-task (`task.type: multitask`).

Each sub-task is a single- or multi-label classification with its own label column (and optionally its own data
file), weight and metric. The loss is the weighted sum of the sub-task losses, with fixed weights or learned
uncertainty weighting (tuneforge.kernels.multitask); rows without a label for a sub-task do not count in its
loss or metrics. The backbone and heads are `tuneforge.models.multitask.MultiTaskModel`, which every method
trains like any transformers model. Beside this module: multitask_config.py (its keys), multitask_data.py
(reading and splitting, label encoding), multitask_hooks.py (a finished run: predict, eval, export) and
multitask_report.py (the data report, metrics and evaluation reports)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from tuneforge.config.schema import RunConfig
from tuneforge.data.left_out import ReadLog
from tuneforge.data.splits import data_seed
from tuneforge.errors import ConfigError
from tuneforge.tasks.base import (
    TASKS,
    Prepared,
    Task,
    closest,
    ensure_pad_token,
    first_output,
    padding_collator,
    token_lengths,
)
from tuneforge.tasks.classification import check_text_pair
from tuneforge.tasks.multitask_config import MULTI_METRICS, SINGLE_METRICS, MultiTaskConfig, MultiTaskData, metric_names
from tuneforge.tasks.multitask_data import (
    LabelColumn,
    check_labels,
    label_names,
    label_vector,
    read_and_split,
    sources_of,
)
from tuneforge.tasks.multitask_hooks import MultiTaskExports, MultiTaskInference


@dataclass
class MultiTaskState:
    """What prepare() learned: the sub-tasks in head order, their label names and the rows' sources."""

    spec: dict  # the heads (name, num_labels, multi_label), weights, weighting and pooling: the model's layout
    labels: dict[str, list[str]]  # each sub-task's label names in id order
    sources: list[int]  # index of the data source of each training row (for mixing several files)
    metrics: dict[str, str]  # each sub-task's metric in the combined selection metric


@TASKS.register("multitask")
class MultiTaskTask(Task):
    name = "multitask"
    Config = MultiTaskConfig
    DataConfig = MultiTaskData
    auto_class_name = "MultiTaskModel"
    aliases = ("multi-task",)
    report_metrics = ("combined",)
    full_precision_modules = ("task_heads", "task_weighting")
    inference = MultiTaskInference()
    exports = MultiTaskExports()
    default_metric = "combined"
    default_max_length = 128
    metrics: ClassVar[dict[str, bool]] = {"combined": True, "loss": False}

    def __init__(self, cfg: RunConfig, force: bool = False):
        super().__init__(cfg, force)
        self.metrics = metric_names(cfg)

    @classmethod
    def auto_class(cls):
        from tuneforge.models.multitask import MultiTaskModel

        return MultiTaskModel

    @classmethod
    def fill_defaults(cls, cfg: RunConfig) -> None:
        super().fill_defaults(cfg)
        for name, s in cfg.task.tasks.items():
            if s.label_column is None:
                s.label_column = name
            if s.metric is None:
                s.metric = "f1_micro" if s.problem == "multi_label" else "accuracy"

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        if cfg.distill.teacher:
            raise ConfigError(
                "distill.teacher: the multitask task has no distillation (distil each sub-task as a classification run)"
            )
        check_text_pair(cfg.data)
        for name, s in cfg.task.tasks.items():
            allowed = MULTI_METRICS if s.problem == "multi_label" else SINGLE_METRICS
            if s.metric not in allowed:
                raise ConfigError(
                    f"task.tasks.{name}.metric: '{s.metric}' is not a {s.problem} metric"
                    f"{closest(s.metric, allowed)}; available: {', '.join(allowed)}"
                )
        metrics = metric_names(cfg)
        if cfg.eval.metric not in metrics:
            raise ConfigError(
                f"eval.metric: '{cfg.eval.metric}' is not a metric of this multi-task run"
                f"{closest(cfg.eval.metric, metrics)}; use combined (the mean of the sub-tasks' "
                f"metrics), loss, or <sub-task>_<metric> such as {next(iter(metrics.keys() - {'combined', 'loss'}))}"
            )
        sources_of(cfg)  # sub-tasks sharing a file must agree on its held-out files

    def _columns(self) -> list[str]:
        d = self.cfg.data
        return [c for c in (d.text_column, d.text_pair_column) if c] + [
            s.label_column for s in self.cfg.task.tasks.values()
        ]

    def _records(self, frames: list[pd.DataFrame]) -> list[dict]:
        """Held-out rows as JSON records: the text column(s) and every sub-task's label column (null where the
        row has no label for it; multi-label as a list) — the format `tuneforge eval` reads."""
        out = []
        for df in frames:
            for _, row in df.iterrows():
                rec = {}
                for c in self._columns():
                    v = row.get(c) if c in row.index else None
                    if isinstance(v, float) and v != v:  # pandas' missing value: JSON null
                        v = None
                    rec[c] = list(v) if isinstance(v, tuple) else v
                out.append(rec)
        return out

    def prepare(self, tokenizer) -> Prepared[MultiTaskState]:
        """Read and split every source, check each sub-task's labels, encode. Raises DataError, ConfigError."""
        from tuneforge.tasks.multitask_report import data_report

        cfg, tasks = self.cfg, self.cfg.task.tasks
        ensure_pad_token(tokenizer, cfg.model.name)  # the heads pool by the attention mask, never reading padding
        sources = sources_of(cfg)
        read_log = ReadLog()
        parts = [read_and_split(cfg, src, data_seed(cfg) + 10 * k, read_log) for k, src in enumerate(sources)]
        split_frames = {
            split: [getattr(p, split) for p in parts if getattr(p, split) is not None and len(getattr(p, split))]
            for split in ("train", "validation", "test")
        }
        labels: dict[str, list[str]] = {}
        for name, s in tasks.items():
            col = s.label_column
            values = {
                split: [v for df in frames if col in df.columns for v in df[col]]
                for split, frames in split_frames.items()
            }
            labels[name] = label_names(cfg, name, values["train"])
            check_labels(cfg, name, labels[name], values)
        spec = {
            "heads": [
                {"name": n, "num_labels": len(labels[n]), "multi_label": s.problem == "multi_label"}
                for n, s in tasks.items()
            ],
            "weights": [float(s.weight) for s in tasks.values()],
            "weighting": cfg.task.weighting,
            "pooling": cfg.task.pooling,
        }
        train_sources = [k for k, p in enumerate(parts) for _ in range(len(p.train))]
        state = MultiTaskState(spec, labels, train_sources, {n: s.metric for n, s in tasks.items()})

        def enc(frames):
            return self._encode(pd.concat(frames), tokenizer, labels) if frames else None

        train = enc(split_frames["train"])
        val, test = enc(split_frames["validation"]), enc(split_frames["test"])
        sizes = {split: sum(len(f) for f in frames) for split, frames in split_frames.items()}
        return Prepared(
            train=train,
            validation=val,
            test=test,
            sizes=sizes,
            state=state,
            report={**data_report(parts, labels, tasks), **read_log.report()},
            held_out={
                "validation": self._records(split_frames["validation"]),
                "test": self._records(split_frames["test"]),
            },
            # row ids of the source file; with several sources they would be ambiguous
            train_ids=[int(i) for i in parts[0].train.index] if len(parts) == 1 else None,
            lengths=token_lengths({"train": train, "validation": val, "test": test}),
        )

    def _heads(self, labels: dict[str, list[str]]) -> list[LabelColumn]:
        """Each head's label column, in the order of `labels` (the run's saved order; a config read back may list
        the sub-tasks in another order)."""
        tasks = self.cfg.task.tasks
        return [
            LabelColumn(n, tasks[n].label_column, labels[n], tasks[n].label_separator)
            if tasks[n].problem == "multi_label"
            else LabelColumn(n, tasks[n].label_column, labels[n])
            for n in labels
        ]

    def _encode(self, df: pd.DataFrame, tokenizer, labels: dict[str, list[str]]):
        import datasets

        d = self.cfg.data
        texts = df[d.text_column].astype(str).tolist()
        pairs = df[d.text_pair_column].astype(str).tolist() if d.text_pair_column else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=d.max_length)
        cols = dict(enc.items())
        heads = self._heads(labels)
        cols["labels"] = [label_vector(row, heads, "the run's data") for _, row in df.iterrows()]
        cols["length"] = [len(x) for x in enc["input_ids"]]
        return datasets.Dataset.from_dict(cols)

    def write_data_report(self, prepared: Prepared, out_dir: str) -> None:
        """data/report.md: the sources and their splits, each sub-task's labels, and the rows left out."""
        from tuneforge.tasks.multitask_report import write_data_report

        write_data_report(prepared, out_dir, self.cfg.data.max_length)

    def held_out(self, run_dir, tokenizer):
        from tuneforge.data.splits import load_split, saved_split
        from tuneforge.models.loader import read_run_metadata

        labels = read_run_metadata(Path(run_dir) / "model")["labels"]
        for name in ("test", "validation"):
            records = load_split(run_dir, name)
            if records:
                return self._encode(pd.DataFrame.from_records(records), tokenizer, labels), name
        if saved_split(run_dir):
            return None, "test"
        print(f"tuneforge: {run_dir} has no saved split: re-creating it from config.yaml", file=sys.stderr, flush=True)
        prepared = self.prepare(tokenizer)
        return (prepared.test, "test") if prepared.test is not None else (prepared.validation, "validation")

    def train_sampler(self, prepared: Prepared[MultiTaskState]):
        sources = prepared.state.sources
        if len(set(sources)) <= 1:
            return None  # one data file: the Trainer's own shuffling (and length grouping)
        from tuneforge.data.mixing import SourceMixSampler

        t = self.cfg.task
        return SourceMixSampler(sources, t.sampling, self.cfg.train.seed, t.sampling_temperature)

    def model_kwargs(self, prepared: Prepared[MultiTaskState]) -> dict:
        return {"multitask": prepared.state.spec}

    def head_modules(self, model) -> list[str]:
        return [n for n in ("task_heads", "task_weighting") if getattr(model, n, None) is not None]

    def collator(self, tokenizer):
        return padding_collator(tokenizer)

    def compute_metrics(self, prepared: Prepared[MultiTaskState]):
        from tuneforge.tasks.multitask_report import subtask_metrics

        spec, metrics = prepared.state.spec, prepared.state.metrics

        def fn(eval_pred):
            logits = first_output(eval_pred.predictions)
            return subtask_metrics(logits, np.asarray(eval_pred.label_ids), spec, metrics)

        return fn

    def final_evaluation(
        self, trainer, prepared: Prepared[MultiTaskState], eval_dir: str, val_metrics: dict, without_adapters=None
    ) -> dict:
        from tuneforge.tasks.multitask_report import learned_weights, write_reports

        outputs = self.test_outputs(trainer, prepared)
        if outputs is None:
            return {"validation": val_metrics}
        st = prepared.state
        test = write_reports(
            *outputs,
            st.spec,
            st.labels,
            st.metrics,
            Path(eval_dir),
            f"Test split ({len(prepared.test)} rows)",
            val_metrics,
        )
        result = {"validation": val_metrics, "test": test}
        weights = learned_weights(trainer.model, st.spec)
        if weights:
            result["learned_task_weights"] = weights
        return result

    def metadata(self, prepared: Prepared[MultiTaskState]) -> dict:
        d, tasks = self.cfg.data, self.cfg.task.tasks
        return {
            "labels": prepared.state.labels,
            "multitask": prepared.state.spec,
            "metrics": prepared.state.metrics,
            "text_column": d.text_column,
            "text_pair_column": d.text_pair_column,
            "label_columns": {n: s.label_column for n, s in tasks.items()},
            "label_separators": {n: s.label_separator for n, s in tasks.items() if s.problem == "multi_label"},
            "max_length": d.max_length,
        }
