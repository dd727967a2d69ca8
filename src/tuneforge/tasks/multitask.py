"""Multi-task classification: one shared backbone, one head per named sub-task (`task.type: multitask`).

Each sub-task is a single- or multi-label classification with its own label column (and optionally its own data
file), weight and metric. The loss is the weighted sum of the sub-task losses, with fixed weights or learned
uncertainty weighting (tuneforge.kernels.multitask); rows without a label for a sub-task do not count in its
loss or metrics. The backbone and heads are `tuneforge.models.multitask.MultiTaskModel`, which every method
trains like any transformers model. Data reading and splitting: tasks/multitask_data.py."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from tuneforge.config.schema import DataSection, RunConfig, Section, TaskConfig
from tuneforge.data.splits import data_seed
from tuneforge.errors import ConfigError, DataError
from tuneforge.tasks.base import TASKS, Prepared, Task, closest, first_output, padding_collator, token_lengths
from tuneforge.tasks.hooks import ExportHooks, InferenceHooks, batched_logits

IGNORE = -100.0
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")

#: metrics of a single-label sub-task (classification's, without the loss: sub-task metrics are averaged)
SINGLE_METRICS = {
    "accuracy": True,
    "f1_macro": True,
    "f1_weighted": True,
    "precision_macro": True,
    "recall_macro": True,
    "precision_weighted": True,
    "recall_weighted": True,
    "auc_roc": True,
}
MULTI_METRICS = {
    "subset_accuracy": True,
    "accuracy": True,
    "f1_micro": True,
    "f1_macro": True,
    "precision_micro": True,
    "recall_micro": True,
    "auc_roc": True,
}


class SubTaskConfig(Section):
    """One sub-task of a multi-task run: a classification on the shared backbone with a head of its own."""

    label_column: str | None = Field(
        None, description="Column holding this sub-task's label; default: the sub-task's name."
    )
    problem: Literal["single_label", "multi_label"] = Field(
        "single_label",
        description=(
            "`single_label`: one class per row; `multi_label`: any number of classes per row (a list, or a string "
            "joined with `label_separator`)."
        ),
    )
    labels: list[str] | None = Field(
        None, description="Label names in id order; default: from the training rows (sorted)."
    )
    label_separator: str = Field("|", min_length=1, description="multi_label: separator of labels in a text cell.")
    weight: float = Field(1.0, gt=0.0, le=1000.0, description="Weight of this sub-task's loss in the sum.")
    metric: str | None = Field(
        None,
        description=(
            "This sub-task's metric in the combined selection metric; default accuracy (single_label) or f1_micro "
            "(multi_label)."
        ),
    )
    train: str | None = Field(
        None,
        description=(
            "This sub-task's own training file (its rows train this sub-task only, unless another sub-task names the "
            "same file); default: it reads data.train."
        ),
    )
    validation: str | None = Field(None, description="Validation file of this sub-task's own data (with `train`).")
    test: str | None = Field(None, description="Test file of this sub-task's own data (with `train`).")

    @model_validator(mode="after")
    def _files(self):
        if self.train is None and (self.validation or self.test):
            raise ValueError(
                "validation/test files of a sub-task need its own `train` file (otherwise data.validation "
                "and data.test apply)"
            )
        return self


class MultiTaskConfig(TaskConfig):
    type: Literal["multitask"] = "multitask"
    tasks: dict[str, SubTaskConfig] = Field(
        description=(
            "The sub-tasks by name (letters, digits, underscores): each `{label_column, problem, labels, weight, "
            "metric, train, validation, test}`."
        )
    )
    weighting: Literal["fixed", "uncertainty"] = Field(
        "fixed",
        description=(
            "`fixed`: the loss is sum(weight_i * loss_i); `uncertainty`: learned per-task weights (Kendall et al. "
            "2018), sum(weight_i * (exp(-s_i) * loss_i + s_i / 2))."
        ),
    )
    sampling: Literal["proportional", "temperature", "round_robin"] = Field(
        "proportional",
        description=(
            "How batches mix rows of different data files (sub-tasks with their own `train`): `proportional` to "
            "their sizes, `temperature` (sizes^(1/sampling_temperature): small sources more often) or `round_robin` "
            "(equal shares). One file: a plain shuffle."
        ),
    )
    sampling_temperature: float = Field(2.0, ge=1.0, le=100.0, description="T of `sampling: temperature`.")
    pooling: Literal["auto", "mean", "first", "last"] = Field(
        "auto",
        description=(
            "The vector the heads read: `mean` of the real tokens, the `first` ([CLS]) or the `last` real token. "
            "`auto`: last for decoders, mean for encoders (with [CLS] an easy sub-task can leave the others at chance)."
        ),
    )

    @field_validator("tasks")
    @classmethod
    def _names(cls, v):
        if len(v) < 2:
            raise ValueError("a multi-task run needs at least two sub-tasks (one is `task.type: classification`)")
        for name in v:
            if not _NAME.match(str(name)):
                raise ValueError(
                    f"sub-task name '{name}': use letters, digits and underscores, starting with a "
                    f"letter (at most 40 characters)"
                )
        return v


class MultiTaskData(DataSection):
    """`data:` keys of multi-task runs (the label columns are per sub-task, under task.tasks)."""

    text_pair_column: str | None = Field(None, description="Optional second text column (sentence pairs).")


def _metric_names(cfg: RunConfig) -> dict[str, bool]:
    out = {"combined": True, "loss": False}
    for name, s in cfg.task.tasks.items():
        for m, greater in (MULTI_METRICS if s.problem == "multi_label" else SINGLE_METRICS).items():
            out[f"{name}_{m}"] = greater
    return out


@dataclass
class MultiTaskState:
    """What prepare() learned: the sub-tasks in head order, their label names and the rows' sources."""

    spec: dict  # the heads (name, num_labels, multi_label), weights, weighting and pooling: the model's layout
    labels: dict[str, list[str]]  # each sub-task's label names in id order
    sources: list[int]  # index of the data source of each training row (for mixing several files)
    metrics: dict[str, str]  # each sub-task's metric in the combined selection metric


class MultiTaskInference(InferenceHooks):
    """Every sub-task's answer for a text, from the heads' logits side by side."""

    def head_kwargs(self, meta: dict) -> dict:
        return {"multitask": meta["multitask"]} if meta.get("multitask") else {}

    def logits(self, run: Any, texts: list, pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        """Every head's logits side by side for `texts`, batched by length; in input order."""
        width = sum(int(h["num_labels"]) for h in run.meta["multitask"]["heads"])
        return batched_logits(run, texts, pairs, width, batch_size)

    def predict(self, run: Any, texts: list, batch_size: int = 64) -> list[dict]:
        """Every sub-task's answer for each text: {"text", "tasks": {name: {"label", "probabilities"}}} (a
        multi-label sub-task: "labels", the classes at probability >= 0.5)."""
        if not texts:
            raise DataError("no texts to predict")
        logits = self.logits(run, list(texts), batch_size=batch_size)
        return [{"text": t, "tasks": answers(row, run.meta)} for t, row in zip(texts, logits)]

    def evaluate(
        self, run: Any, source: str, out_dir, text_column: str | None = None, label_column: str | None = None
    ) -> dict:
        """Per-sub-task metrics, reports and confusion matrices of the run on labelled data (every sub-task whose
        label column the file has; rows without a label for a sub-task do not count for it)."""
        from tuneforge.data.columns import check_cells, require_columns
        from tuneforge.data.sources import read_table
        from tuneforge.tasks.multitask_data import multi_label, single_label

        meta = run.meta
        if label_column:
            raise DataError(
                f"--label-column does not apply to a multi-task run: each sub-task reads its own column "
                f"({', '.join(f'{n}: {c}' for n, c in meta['label_columns'].items())})"
            )
        tcol, pcol = text_column or meta["text_column"], meta.get("text_pair_column")
        df = read_table(source)
        require_columns(df, {"text column": tcol, "text pair column": pcol}, source)
        present = {n: c for n, c in meta["label_columns"].items() if c in df.columns}
        if not present:
            raise DataError(
                f"{source}: none of the sub-tasks' label columns is there "
                f"({', '.join(meta['label_columns'].values())}); columns: {', '.join(map(str, df.columns))}"
            )
        df = check_cells(
            df, {tcol: ("--text-column", "text"), **({pcol: ("text pair column", "text")} if pcol else {})}, source
        )
        df = df[[isinstance(v, str) and bool(v.strip()) for v in df[tcol]]]
        spec = meta["multitask"]
        rows = []
        for _, r in df.iterrows():
            vec = []
            for h in spec["heads"]:
                n, names = h["name"], meta["labels"][h["name"]]
                col = meta["label_columns"][n]
                v = r.get(col) if n in present else None
                if h.get("multi_label"):
                    v = multi_label(v, meta.get("label_separators", {}).get(n, "|"))
                    vec += [IGNORE] * len(names) if v is None else [1.0 if x in v else 0.0 for x in names]
                    unknown = [] if v is None else [x for x in v if x not in names]
                else:
                    v = single_label(v)
                    vec.append(IGNORE if v is None or v not in names else float(names.index(v)))
                    unknown = [] if v is None or v in names else [v]
                if unknown:
                    raise DataError(
                        f"{source}: sub-task {n}: label '{unknown[0]}' was never seen in training "
                        f"(known labels: {', '.join(names)})"
                    )
            rows.append(vec)
        if not rows:
            raise DataError(f"{source}: no rows with a text")
        logits = self.logits(run, df[tcol].astype(str).tolist(), df[pcol].astype(str).tolist() if pcol else None)
        return write_reports(
            logits,
            np.asarray(rows, dtype=np.float32),
            spec,
            meta["labels"],
            meta.get("metrics") or {},
            Path(out_dir),
            f"{source} ({len(rows)} rows)",
        )


class MultiTaskExports(ExportHooks):
    """Every export format; the ONNX graph has one output per head and serves predict / serve."""

    formats = ("merged", "onnx", "int8", "onnx-int8")
    onnx_usable = True

    def onnx_outputs(self, meta: dict) -> list[tuple[str, int]]:
        return [(h["name"], int(h["num_labels"])) for h in meta["multitask"]["heads"]]

    def parity(
        self,
        reference: list[np.ndarray],
        exported: list[np.ndarray],
        rows: list[dict],
        split: str,
        meta: dict | None = None,
    ) -> dict:
        """Per sub-task (its labelled rows only): logit difference, label agreement and both accuracies."""
        from tuneforge.kernels.multitask import offsets
        from tuneforge.models.multitask import layouts

        lay = layouts(meta["multitask"])
        ref, exp = np.stack(reference), np.stack(exported)
        labels = np.asarray([r["label"] for r in rows], dtype=np.float32)
        out = {"split": split, "rows": len(rows), "max_abs_logit_diff": float(np.abs(ref - exp).max()), "tasks": {}}
        for h, (lc, yc) in zip(lay, offsets(lay)):
            y = labels[:, yc]
            keep = y[:, 0] != IGNORE
            a, b = ref[keep][:, lc], exp[keep][:, lc]
            if h.multi_label:
                pa, pb, t = a >= 0, b >= 0, y[keep] > 0.5
                task = {
                    "label_agreement": float((pa == pb).all(axis=1).mean()) if keep.any() else None,
                    "reference_subset_accuracy": float((pa == t).all(axis=1).mean()) if keep.any() else None,
                    "export_subset_accuracy": float((pb == t).all(axis=1).mean()) if keep.any() else None,
                }
            else:
                ra, ea, t = a.argmax(-1), b.argmax(-1), y[keep][:, 0].astype(int)
                task = {
                    "label_agreement": float((ra == ea).mean()) if keep.any() else None,
                    "reference_accuracy": float((ra == t).mean()) if keep.any() else None,
                    "export_accuracy": float((ea == t).mean()) if keep.any() else None,
                }
                if keep.any():
                    task["accuracy_delta_points"] = (task["export_accuracy"] - task["reference_accuracy"]) * 100
            out["tasks"][h.name] = {
                "rows": int(keep.sum()),
                "max_abs_logit_diff": float(np.abs(a - b).max()) if keep.any() else None,
                **task,
            }
        return out


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
        self.metrics = _metric_names(cfg)

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
        for name, s in cfg.task.tasks.items():
            allowed = MULTI_METRICS if s.problem == "multi_label" else SINGLE_METRICS
            if s.metric not in allowed:
                raise ConfigError(
                    f"task.tasks.{name}.metric: '{s.metric}' is not a {s.problem} metric"
                    f"{closest(s.metric, allowed)}; available: {', '.join(allowed)}"
                )
        metrics = _metric_names(cfg)
        if cfg.eval.metric not in metrics:
            raise ConfigError(
                f"eval.metric: '{cfg.eval.metric}' is not a metric of this multi-task run"
                f"{closest(cfg.eval.metric, metrics)}; use combined (the mean of the sub-tasks' "
                f"metrics), loss, or <sub-task>_<metric> such as {next(iter(metrics.keys() - {'combined', 'loss'}))}"
            )
        from tuneforge.tasks.multitask_data import sources_of

        sources_of(cfg)  # sub-tasks sharing a file must agree on its held-out files

    # ---- data -------------------------------------------------------------------------------------------
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
        from tuneforge.tasks.multitask_data import check_labels, label_names, read_and_split, sources_of

        cfg, tasks = self.cfg, self.cfg.task.tasks
        sources = sources_of(cfg)
        parts = [read_and_split(cfg, src, data_seed(cfg) + 10 * k) for k, src in enumerate(sources)]
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
        report = self._report(parts, labels)
        skipped = [r for p in parts for r in p.skipped]
        if skipped:
            report["bad_records"] = {"policy": "skip", "records": skipped}
        return Prepared(
            train=train,
            validation=val,
            test=test,
            sizes=sizes,
            state=state,
            report=report,
            held_out={
                "validation": self._records(split_frames["validation"]),
                "test": self._records(split_frames["test"]),
            },
            # row ids of the source file; with several sources they would be ambiguous
            train_ids=[int(i) for i in parts[0].train.index] if len(parts) == 1 else None,
            lengths=token_lengths({"train": train, "validation": val, "test": test}),
        )

    def label_vector(self, row, labels: dict[str, list[str]]) -> list[float]:
        """A row's labels side by side (tuneforge.kernels.multitask layout), in the heads' order: the order of
        `labels` (the run's saved order; a config read back may list the sub-tasks in another order)."""
        out: list[float] = []
        for name in labels:
            s = self.cfg.task.tasks[name]
            v = row.get(s.label_column) if s.label_column in row.index else None
            names = labels[name]
            if s.problem == "multi_label":
                if v is None or (isinstance(v, float) and v != v):
                    out += [IGNORE] * len(names)
                else:
                    have = set(v)
                    out += [1.0 if n in have else 0.0 for n in names]
            else:
                out.append(IGNORE if v is None or (isinstance(v, float) and v != v) else float(names.index(v)))
        return out

    def _encode(self, df: pd.DataFrame, tokenizer, labels: dict[str, list[str]]):
        import datasets

        d = self.cfg.data
        texts = df[d.text_column].astype(str).tolist()
        pairs = df[d.text_pair_column].astype(str).tolist() if d.text_pair_column else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=d.max_length)
        cols = dict(enc.items())
        cols["labels"] = [self.label_vector(row, labels) for _, row in df.iterrows()]
        cols["length"] = [len(x) for x in enc["input_ids"]]
        return datasets.Dataset.from_dict(cols)

    def _report(self, parts, labels) -> dict:
        tasks = self.cfg.task.tasks
        report: dict = {"sources": [], "subtasks": {}}
        for p in parts:
            report["sources"].append(
                {
                    "file": p.source.path,
                    "key": p.source.key,
                    "subtasks": p.source.subtasks,
                    **{
                        split: 0 if getattr(p, split) is None else len(getattr(p, split))
                        for split in ("train", "validation", "test")
                    },
                }
            )
        for name, s in tasks.items():
            per = {}
            for split in ("train", "validation", "test"):
                counts: dict[str, int] = {n: 0 for n in labels[name]}
                n_rows = 0
                for p in parts:
                    df = getattr(p, split)
                    if df is None or s.label_column not in df.columns:
                        continue
                    for v in df[s.label_column]:
                        if v is None:
                            continue
                        n_rows += 1
                        for x in v if s.problem == "multi_label" else [v]:
                            counts[x] = counts.get(x, 0) + 1
                per[split] = {"labelled_rows": n_rows, "classes": counts}
            report["subtasks"][name] = {
                "problem": s.problem,
                "label_column": s.label_column,
                "weight": s.weight,
                "splits": per,
            }
        return report

    def write_data_report(self, prepared: Prepared, out_dir: str) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        r = prepared.report
        (out / "report.json").write_text(json.dumps(r, indent=2, ensure_ascii=False))
        md = [
            "# Data used by this run (multi-task)",
            "",
            "## Sources",
            "",
            "| file | config key | sub-tasks | train | validation | test |",
            "|---|---|---|---|---|---|",
        ]
        md += [
            f"| {s['file']} | {s['key']} | {', '.join(s['subtasks'])} | {s['train']} | {s['validation']} | "
            f"{s['test']} |"
            for s in r["sources"]
        ]
        for name, t in r["subtasks"].items():
            md += [
                "",
                f"## Sub-task `{name}` ({t['problem']}, column `{t['label_column']}`, weight {t['weight']:g})",
                "",
                "| split | labelled rows | classes |",
                "|---|---|---|",
            ]
            md += [
                f"| {split} | {v['labelled_rows']} | {', '.join(f'{k}: {n}' for k, n in v['classes'].items())} |"
                for split, v in t["splits"].items()
            ]
        m = self.cfg.data.max_length
        if prepared.lengths:
            md += ["", "## Token lengths", "", "| split | mean | max | cut at max_length |", "|---|---|---|---|"]
            md += [
                f"| {k} | {np.mean(v):.1f} | {max(v)} | {sum(x >= m for x in v)} |"
                for k, v in prepared.lengths.items()
                if v
            ]
        bad = r.get("bad_records") or {}
        if bad.get("records"):
            md += ["", f"## Bad records left out (data.bad_records=skip): {len(bad['records'])}"]
        (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")

    def held_out(self, run_dir, tokenizer):
        from tuneforge.data.splits import load_split, saved_split
        from tuneforge.models.loader import read_run_metadata

        labels = read_run_metadata(Path(run_dir) / "model")["labels"]
        for name in ("test", "validation"):
            records = load_split(run_dir, name)
            if records:
                df = pd.DataFrame.from_records(records)
                for s in self.cfg.task.tasks.values():  # lists back to the tuples prepare() uses
                    if s.problem == "multi_label" and s.label_column in df.columns:
                        df[s.label_column] = [None if v is None else tuple(v) for v in df[s.label_column]]
                    elif s.label_column in df.columns:
                        df[s.label_column] = [
                            None if v is None or (isinstance(v, float) and v != v) else v for v in df[s.label_column]
                        ]
                return self._encode(df, tokenizer, labels), name
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

    # ---- model ------------------------------------------------------------------------------------------
    def model_kwargs(self, prepared: Prepared[MultiTaskState]) -> dict:
        return {"multitask": prepared.state.spec}

    def head_modules(self, model) -> list[str]:
        return [n for n in ("task_heads", "task_weighting") if getattr(model, n, None) is not None]

    def collator(self, tokenizer):
        return padding_collator(tokenizer)

    def compute_metrics(self, prepared: Prepared[MultiTaskState]):
        spec, metrics = prepared.state.spec, prepared.state.metrics

        def fn(eval_pred):
            logits = first_output(eval_pred.predictions)
            return subtask_metrics(logits, np.asarray(eval_pred.label_ids), spec, metrics)

        return fn

    def final_evaluation(
        self, trainer, prepared: Prepared[MultiTaskState], eval_dir: str, val_metrics: dict, without_adapters=None
    ) -> dict:
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


def learned_weights(model, spec: dict) -> dict | None:
    """Uncertainty weighting's learned factor exp(-s_i) per sub-task (None with fixed weights)."""
    import torch

    found = [(n, m) for n, m in model.named_modules() if n.split(".")[-1] == "task_weighting"]
    if not found:
        return None
    with torch.no_grad():  # the outermost match: PEFT's wrapper answers with the trained copy
        s = min(found, key=lambda x: len(x[0]))[1]().float().cpu().numpy()
    return {h["name"]: round(float(np.exp(-v)), 6) for h, v in zip(spec["heads"], s)}


# ---- metrics shared by training, eval and export ------------------------------------------------------------
def _parts(logits: np.ndarray, labels: np.ndarray, spec: dict):
    """(layout, logits of its labelled rows, their labels) per sub-task."""
    from tuneforge.kernels.multitask import offsets
    from tuneforge.models.multitask import layouts

    lay = layouts(spec)
    for h, (lc, yc) in zip(lay, offsets(lay)):
        y = labels[:, yc]
        keep = y[:, 0] != IGNORE
        yield h, logits[keep][:, lc], (y[keep] if h.multi_label else y[keep][:, 0].astype(int))


def subtask_metrics(logits: np.ndarray, labels: np.ndarray, spec: dict, chosen: dict[str, str]) -> dict[str, float]:
    """Flat metrics `<sub-task>_<metric>` and `combined` (the mean of each sub-task's chosen metric over the
    sub-tasks with labelled rows)."""
    from tuneforge.evaluation.classification import classification_metrics
    from tuneforge.evaluation.multilabel import multilabel_metrics

    out: dict[str, float] = {}
    picked = []
    for h, z, y in _parts(logits, labels, spec):
        if len(y) == 0:
            continue
        m = multilabel_metrics(z, y) if h.multi_label else classification_metrics(z, y)
        out.update({f"{h.name}_{k}": v for k, v in m.items() if k != "loss"})
        if chosen.get(h.name) in m:
            picked.append(m[chosen[h.name]])
    first = {}
    if picked:
        first["combined"] = round(float(np.mean(picked)), 6)
    # the selection metric and each sub-task's own metric first (eval log lines show the first few)
    first.update({k: out[k] for k in (f"{n}_{m}" for n, m in chosen.items()) if k in out})
    return {**first, **out}


def answers(logits_row: np.ndarray, meta: dict) -> dict:
    """One text's answer per sub-task from its side-by-side logits."""
    from tuneforge.evaluation.classification import softmax
    from tuneforge.evaluation.multilabel import sigmoid

    out, at = {}, 0
    for h in meta["multitask"]["heads"]:
        names = meta["labels"][h["name"]]
        z = logits_row[at : at + len(names)]
        at += len(names)
        if h.get("multi_label"):
            p = sigmoid(z.astype(np.float64))
            out[h["name"]] = {
                "labels": [n for n, x in zip(names, p) if x >= 0.5],
                "probabilities": {n: round(float(x), 6) for n, x in zip(names, p)},
            }
        else:
            p = softmax(z.astype(np.float64))
            out[h["name"]] = {
                "label": names[int(p.argmax())],
                "probabilities": {n: round(float(x), 6) for n, x in zip(names, p)},
            }
    return out


def write_reports(
    logits: np.ndarray,
    labels: np.ndarray,
    spec: dict,
    label_names: dict[str, list[str]],
    chosen: dict[str, str],
    out_dir: Path,
    title: str,
    validation: dict | None = None,
) -> dict:
    """Each sub-task's report in out_dir/<name>/ (metrics.json, report.md, confusion_matrix.png), and the
    combined out_dir/metrics.json and report.md. Returns the flat metrics with `tasks` (each full report)."""
    from tuneforge.evaluation.classification import write_classification_report
    from tuneforge.evaluation.multilabel import write_multilabel_report

    out_dir.mkdir(parents=True, exist_ok=True)
    flat = subtask_metrics(logits, labels, spec, chosen)
    tasks = {}
    for h, z, y in _parts(logits, labels, spec):
        if len(y) == 0:
            continue
        write = write_multilabel_report if h.multi_label else write_classification_report
        tasks[h.name] = write(
            z, y, label_names[h.name], out_dir / h.name, title=f"{h.name}: {title}, {len(y)} labelled rows"
        )
    result = {**flat, "tasks": tasks}
    payload = {"test": result, **({"validation": validation} if validation is not None else {})}
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False))
    lines = [
        "# Evaluation report (multi-task)",
        "",
        title,
        "",
        f"combined (mean of each sub-task's {', '.join(f'{n}: {m}' for n, m in chosen.items())}): "
        f"**{flat.get('combined', float('nan')):.4f}**",
        "",
        "| sub-task | labelled rows | metric | value | report |",
        "|---|---|---|---|---|",
    ]
    for n, t in tasks.items():
        m = chosen.get(n, "accuracy")
        lines.append(f"| {n} | {t['n']} | {m} | {t.get(m, float('nan')):.4f} | [{n}/report.md]({n}/report.md) |")
    if validation:
        lines += ["", "## Best validation metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in validation.items() if isinstance(v, (int, float))]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return result
