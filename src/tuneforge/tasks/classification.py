"""Single-label text classification on AutoModelForSequenceClassification.

About 450 lines on purpose: a task is one module (its config and data keys, preparation, training hooks and
how a finished run predicts, evaluates and exports), so adding a task is adding one module; the data
pipeline it calls (cleaning, augmentation, balancing) lives in data/."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from tuneforge.config.schema import AugmentSection, BalanceSection, CleanSection, DataSection, TaskConfig
from tuneforge.data.sources import BUILTIN_LABEL_ORDER, check_cells, read_table, require_columns
from tuneforge.errors import ConfigError, DataError
from tuneforge.tasks.base import TASKS, Prepared, Task, batched_logits, first_output, padding_collator

log = logging.getLogger("tuneforge")


class ClassificationData(DataSection):
    """`data:` keys of classification runs: the columns, and cleaning, augmentation and balancing of the
    training split."""

    text_pair_column: str | None = Field(None, description="Optional second text column (sentence pairs).")
    label_column: str = Field("label", description="Column holding the label (strings or integers).")
    clean: CleanSection = Field(
        default_factory=CleanSection,
        description=("Cleaning of the training split: duplicates, leakage across splits, label noise."),
    )
    augment: AugmentSection = Field(default_factory=AugmentSection, description="Augmentation of the training split.")
    balance: BalanceSection = Field(
        default_factory=BalanceSection, description="Class imbalance: weighted loss and resampling."
    )


@dataclass
class Frames:
    """Read and split, before encoding: pandas frames of the source rows (validation/test may be None)."""

    train: pd.DataFrame
    validation: pd.DataFrame | None
    test: pd.DataFrame | None
    labels: list[str]
    train_ids: list[int]  # source row ids of the training split, before cleaning
    skipped: list[dict] = field(default_factory=list)  # records left out by data.bad_records=skip


@dataclass
class ClassificationState:
    labels: list[str]  # label names in id order
    label2id: dict[str, int]
    class_counts: dict[str, int]  # of the final training split
    train_texts: list[str] = field(default_factory=list)  # the final training split's texts (and pairs),
    train_pairs: list[str] | None = None  # row by row as in the encoded dataset


class ClassificationConfig(TaskConfig):
    type: Literal["classification"] = "classification"
    labels: list[str] | None = Field(
        None,
        description=(
            "The label names in id order. Default: inferred from the training data (sorted; numbers numerically)."
        ),
    )


@TASKS.register("classification")
class ClassificationTask(Task):
    name = "classification"
    Config = ClassificationConfig
    DataConfig = ClassificationData
    auto_class_name = "AutoModelForSequenceClassification"
    interface = "classify"
    default_distill_temperature = 4.0
    distill_keys = ("unlabeled", "hidden_weight")
    prepares_tables = True
    report_metrics = ("accuracy", "f1_macro", "auc_roc")
    full_precision_modules = ("classifier", "score", "qa_outputs", "pre_classifier")
    export_formats = ("merged", "onnx", "int8", "onnx-int8")
    onnx_usable = True
    parity_batch_size = 32
    default_metric = "accuracy"
    default_max_length = 128
    metrics: ClassVar[dict[str, bool]] = {
        "accuracy": True,
        "f1_macro": True,
        "f1_weighted": True,
        "precision_macro": True,
        "recall_macro": True,
        "precision_weighted": True,
        "recall_weighted": True,
        "auc_roc": True,
        "loss": False,
    }

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        if cfg.distill.teacher and cfg.data.balance.class_weights != "none":
            raise ConfigError(
                "data.balance.class_weights: not applied by the distillation loss; set it to none "
                "with distill.teacher (or resample with data.balance.sampling)"
            )

    # ---- data -------------------------------------------------------------------------------------------
    def _read(self, source: str, key: str = "data.train", skipped_out: list | None = None) -> pd.DataFrame:
        """The usable rows of `source`, indexed by their row number in the source (the ids saved with the
        split). Rows left out by data.bad_records=skip are appended to `skipped_out`."""
        d = self.cfg.data
        df = read_table(source, key)
        require_columns(
            df,
            {
                "data.text_column": d.text_column,
                "data.text_pair_column": d.text_pair_column,
                "data.label_column": d.label_column,
            },
            source,
        )
        skipped: list | None = [] if d.bad_records == "skip" else None
        cells = {d.text_column: ("data.text_column", "text"), d.label_column: ("data.label_column", "label")}
        if d.text_pair_column:
            cells[d.text_pair_column] = ("data.text_pair_column", "text")
        df = check_cells(df, cells, source, skipped)
        if skipped:
            log.warning(
                "%s: data.bad_records=skip: left out %d rows that cannot be used (first: %s)",
                source,
                len(skipped),
                skipped[0][1],
            )
            if skipped_out is not None:
                skipped_out.extend({"source": source, "record": n, "problem": msg} for n, msg in skipped)
        cols = [c for c in (d.text_column, d.text_pair_column, d.label_column) if c]
        before = len(df)
        df = df.dropna(subset=cols)
        # a text of only whitespace carries nothing to learn from, like a missing one
        keep = np.ones(len(df), dtype=bool)
        for c in cols:
            keep &= np.array([not isinstance(v, str) or bool(v.strip()) for v in df[c]], dtype=bool)
        df = df[keep]
        if len(df) < before:
            log.warning("%s: dropped %d rows with an empty text or label", source, before - len(df))
        if len(df) == 0:
            raise DataError(
                f"{source}: no rows with both a text and a label (columns '{d.text_column}' and "
                f"'{d.label_column}'; empty texts and missing labels are left out)"
            )
        return df

    def _label_names(self, train: pd.DataFrame) -> list[str]:
        if self.cfg.task.labels:
            return list(self.cfg.task.labels)
        values = train[self.cfg.data.label_column]
        builtin = self.cfg.data.train.split(":", 1)[1] if self.cfg.data.train.startswith("builtin:") else None
        if builtin in BUILTIN_LABEL_ORDER:
            return BUILTIN_LABEL_ORDER[builtin]
        uniq = pd.unique(values)
        if all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and float(v).is_integer()) for v in uniq):
            return [str(int(v)) for v in sorted(uniq)]
        return sorted(str(v) for v in uniq)

    def _split(self, df: pd.DataFrame, frac: float | int, seed: int, what: str):
        """Split off `frac` (a fraction, or a row count when int) of `df`; returns (rest, part)."""
        from sklearn.model_selection import GroupShuffleSplit, train_test_split

        if frac <= 0:
            return df, None
        sp = self.cfg.data.split
        if sp.group_column:
            require_columns(df, {"data.split.group_column": sp.group_column}, self.cfg.data.train)
            gss = GroupShuffleSplit(n_splits=1, test_size=frac, random_state=seed)
            a, b = next(gss.split(df, groups=df[sp.group_column]))
            return df.iloc[a], df.iloc[b]
        labels = df[self.cfg.data.label_column].astype(str)
        stratify = labels if sp.stratify else None
        if stratify is not None and labels.value_counts().min() < 2:
            log.warning("a class has fewer than 2 rows: the %s split is not stratified", what)
            stratify = None
        try:
            a, b = train_test_split(df, test_size=frac, random_state=seed, stratify=stratify)
        except ValueError as exc:
            raise DataError(f"cannot split off the {what} set: {exc}") from None
        return a, b

    def prepare(self, tokenizer) -> Prepared:
        """Read and split, clean and augment the training split, encode. Raises DataError, ConfigError."""
        frames = self.read_split()
        train, report = self.clean(frames)
        labels = frames.labels
        label2id = {n: i for i, n in enumerate(labels)}

        def enc(df):
            return None if df is None or len(df) == 0 else self._encode(df, tokenizer, label2id)

        val, test = frames.validation, frames.test
        sizes = {
            "train": len(train),
            "validation": 0 if val is None else len(val),
            "test": 0 if test is None else len(test),
        }
        d = self.cfg.data
        state = ClassificationState(
            labels,
            label2id,
            {str(k): int(v) for k, v in pd.Series(self._label_strings(train)).value_counts().items()},
            train[d.text_column].astype(str).tolist(),
            train[d.text_pair_column].astype(str).tolist() if d.text_pair_column else None,
        )
        prepared = Prepared(
            train=enc(train),
            validation=enc(val),
            test=enc(test),
            sizes=sizes,
            state=state,
            report=report,
            held_out={"validation": self._records(val), "test": self._records(test)},
            train_ids=frames.train_ids,
        )
        prepared.lengths = {
            name: list(ds["length"])
            for name, ds in (("train", prepared.train), ("validation", prepared.validation), ("test", prepared.test))
            if ds is not None
        }
        return prepared

    def _columns(self) -> list[str]:
        d = self.cfg.data
        return [c for c in (d.text_column, d.text_pair_column, d.label_column) if c]

    def _records(self, df: pd.DataFrame | None) -> list[dict]:
        """Rows as JSON-able records of the columns the task reads (what data/split/ keeps)."""
        if df is None or len(df) == 0:
            return []
        import json

        return json.loads(df[self._columns()].to_json(orient="records", force_ascii=False))

    def read_split(self) -> Frames:
        """Read the data and split it (test first, then validation from the rest, then the training sample).

        Raises DataError for unusable data, a single class, or labels only a held-out split has."""
        d, seed = (
            self.cfg.data,
            self.cfg.data.split.seed if self.cfg.data.split.seed is not None else self.cfg.train.seed,
        )
        skipped: list[dict] = []
        train = self._read(d.train, skipped_out=skipped)
        val = self._read(d.validation, "data.validation", skipped) if d.validation else None
        test = self._read(d.test, "data.test", skipped) if d.test else None
        # hold out test first, then validation from what is left, so sizes are fractions of the whole
        if test is None:
            train, test = self._split(train, d.split.test, seed, "test")
        if val is None and d.split.validation > 0:
            train, val = self._split(
                train, d.split.validation / (1.0 - (d.split.test if not d.test else 0.0)), seed + 1, "validation"
            )
        if d.max_train_samples and d.max_train_samples < len(train):
            _, train = self._split(train, d.max_train_samples, seed + 2, "sample")
        if len(train) == 0:
            raise DataError(f"{d.train}: no training rows left after splitting")

        names = self._label_names(train)
        train_classes = set(self._label_strings(train))
        if len(train_classes) < 2:
            only = next(iter(train_classes))
            raise DataError(
                f"{d.train}: the training data has a single class ('{only}'); classification needs at least two"
            )
        unknown = train_classes - set(names)
        if unknown:
            raise DataError(f"task.labels does not list the training labels {sorted(unknown)[:5]}")
        for split_name, df in (("validation", val), ("test", test)):
            if df is None:
                continue
            extra = sorted(set(self._label_strings(df)) - train_classes)
            if extra and getattr(d, split_name):
                raise DataError(
                    f"{getattr(d, split_name)} (data.{split_name}): the {split_name} data has labels "
                    f"never seen in training: {extra[:5]} (training labels: {sorted(train_classes)[:10]})"
                )
            if extra:
                raise DataError(
                    f"{d.train}: the label{'s' if len(extra) > 1 else ''} "
                    f"{', '.join(repr(x) for x in extra[:5])} "
                    f"{'have' if len(extra) > 1 else 'has'} so few rows that the {split_name} split "
                    f"held out of data.train (data.split.{split_name}) took all of them and none is left "
                    f"to train on; add examples of {'them' if len(extra) > 1 else 'it'}, remove "
                    f"{'them' if len(extra) > 1 else 'it'}, or give a data.{split_name} file"
                )
        return Frames(train, val, test, names, [int(i) for i in train.index], skipped)

    def clean(self, frames: Frames) -> tuple[pd.DataFrame, dict]:
        """Deduplication, label noise, augmentation and resampling of the training split (never validation or
        test). Returns the new training frame and the data report."""
        from tuneforge.data.prepare import improve_training_data

        d = self.cfg.data
        seed = d.split.seed if d.split.seed is not None else self.cfg.train.seed
        train, report = improve_training_data(
            self.cfg, frames.train, frames.validation, frames.test, seed, frames.labels
        )
        if frames.skipped:
            report["bad_records"] = {"policy": "skip", "records": frames.skipped}
        return train, report

    def prepare_frames(self):
        """Read, split, clean and augment without tokenizing, for `tuneforge data inspect|prepare`.

        Returns (train, validation, test, report, labels). Raises DataError, ConfigError."""
        frames = self.read_split()
        train, report = self.clean(frames)
        return train, frames.validation, frames.test, report, frames.labels

    def held_out(self, run_dir, tokenizer):
        from tuneforge.data.splits import load_split, saved_split
        from tuneforge.models.loader import read_run_metadata

        labels = list(read_run_metadata(Path(run_dir) / "model").get("labels") or [])
        for name in ("test", "validation"):
            records = load_split(run_dir, name)
            if records:
                df = pd.DataFrame.from_records(records)
                return self._encode(df, tokenizer, {n: i for i, n in enumerate(labels)}), name
        if saved_split(run_dir):
            return None, "test"  # the run had no held-out split at all
        print(
            f"tuneforge: {run_dir} predates saved splits: re-creating its test split from config.yaml "
            f"(reading, splitting and cleaning run again)",
            file=sys.stderr,
            flush=True,
        )
        prepared = self.prepare(tokenizer)
        return (prepared.test, "test") if prepared.test is not None else (prepared.validation, "validation")

    def _label_strings(self, df: pd.DataFrame) -> list[str]:
        col = df[self.cfg.data.label_column]
        return [str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v) for v in col]

    def _encode(self, df: pd.DataFrame, tokenizer, label2id: dict):
        import datasets

        d = self.cfg.data
        texts = df[d.text_column].astype(str).tolist()
        pairs = df[d.text_pair_column].astype(str).tolist() if d.text_pair_column else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=d.max_length)
        cols = {k: v for k, v in enc.items()}
        cols["labels"] = [label2id[s] for s in self._label_strings(df)]
        cols["length"] = [len(x) for x in enc["input_ids"]]
        return datasets.Dataset.from_dict(cols)

    def write_data_report(self, prepared: Prepared, out_dir: str) -> None:
        from tuneforge.data.report import write_report

        # lengths are after truncation, so a row at exactly max_length is counted as cut
        m = self.cfg.data.max_length
        lengths = prepared.lengths or {}
        write_report(
            out_dir,
            prepared.report,
            lengths,
            m,
            truncated={k: sum(x >= m for x in v) for k, v in lengths.items()},
            title="Data used by this run",
        )

    def loss_function(self, prepared: Prepared):
        weights = prepared.report.get("class_weights")
        if not weights:
            return None
        from tuneforge.data.balance import weighted_cross_entropy

        return weighted_cross_entropy([weights[n] for n in prepared.state.labels])

    # ---- distillation (tasks/classification_distill.py) ------------------------------------------------
    def distill(self, prepared: Prepared, tokenizer, teacher, cache_dir) -> Prepared:
        """Soft targets: the teacher's logits over every training text (and `distill.unlabeled` texts, which
        join the training set with no label), computed once with the teacher's own tokenizer and cached."""
        from tuneforge.tasks.classification_distill import distill

        return distill(self, prepared, tokenizer, teacher, cache_dir)

    def training_loss(self, prepared: Prepared):
        from tuneforge.tasks.classification_distill import training_loss

        return training_loss(self.cfg, prepared)

    # ---- model ------------------------------------------------------------------------------------------
    def model_kwargs(self, prepared: Prepared) -> dict:
        return {**self.head_kwargs({"labels": prepared.state.labels}), "problem_type": "single_label_classification"}

    def collator(self, tokenizer):
        return padding_collator(tokenizer)

    def compute_metrics(self, prepared: Prepared):
        from tuneforge.evaluation.classification import classification_metrics

        def fn(eval_pred):
            logits = first_output(eval_pred.predictions)
            return classification_metrics(logits, np.asarray(eval_pred.label_ids))

        return fn

    def final_evaluation(
        self, trainer, prepared: Prepared, eval_dir: str, val_metrics: dict, without_adapters=None
    ) -> dict:
        from tuneforge.evaluation.classification import write_classification_report

        if prepared.test is None:
            log.warning("no test split: final metrics are the validation metrics")
            return {"validation": val_metrics}
        out = trainer.predict(prepared.test, metric_key_prefix="test")
        logits = first_output(out.predictions)
        test = write_classification_report(
            logits,
            np.asarray(out.label_ids),
            prepared.state.labels,
            eval_dir,
            title=f"Test split ({len(prepared.test)} rows)",
            extra={"validation": val_metrics},
        )
        result = {"validation": val_metrics, "test": test}
        if prepared.teacher is not None:
            from tuneforge.tasks.classification_distill import teacher_vs_student

            result["distill"] = teacher_vs_student(self, trainer, prepared, test, eval_dir)
        return result

    def metadata(self, prepared: Prepared) -> dict:
        d = self.cfg.data
        return {
            "labels": prepared.state.labels,
            "text_column": d.text_column,
            "text_pair_column": d.text_pair_column,
            "label_column": d.label_column,
            "max_length": d.max_length,
        }

    # ---- a finished run ---------------------------------------------------------------------------------
    @classmethod
    def head_kwargs(cls, meta: dict) -> dict:
        names = meta.get("labels") or []
        if not names:
            return {}
        return {
            "num_labels": len(names),
            "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)},
        }

    @classmethod
    def logits(cls, run, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        """Logits for `texts`, batched by length so padding stays small; returned in input order."""
        return batched_logits(run, texts, pairs, len(run.meta["labels"]), batch_size)

    @classmethod
    def predict(cls, run, texts: list[str], batch_size: int = 64) -> list[dict]:
        """Label and per-class probabilities for each text."""
        from tuneforge.evaluation.classification import softmax

        if not texts:
            raise DataError("no texts to predict")
        probs = softmax(cls.logits(run, list(texts), batch_size=batch_size))
        names = run.meta["labels"]
        return [
            {
                "text": t,
                "label": names[int(p.argmax())],
                "probabilities": {n: round(float(x), 6) for n, x in zip(names, p)},
            }
            for t, p in zip(texts, probs)
        ]

    @classmethod
    def evaluate(
        cls, run, source: str, out_dir, text_column: str | None = None, label_column: str | None = None
    ) -> dict:
        """Metrics, per-class report and confusion matrix of the run on labelled data (`source`)."""
        from tuneforge.evaluation.classification import write_classification_report

        meta = run.meta
        tcol, lcol = text_column or meta["text_column"], label_column or meta["label_column"]
        pcol = meta.get("text_pair_column")
        df = read_table(source)
        require_columns(df, {"text column": tcol, "label column": lcol, "text pair column": pcol}, source)
        cells = {tcol: ("--text-column", "text"), lcol: ("--label-column", "label")}
        df = check_cells(df, {**cells, **({pcol: ("text pair column", "text")} if pcol else {})}, source)
        df = df.dropna(subset=[tcol, lcol])
        if len(df) == 0:
            raise DataError(f"{source}: no rows with both a text and a label")
        names = meta["labels"]
        label_ids = []
        for v in df[lcol]:
            s = str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v)
            if s not in names:
                raise DataError(f"{source}: label '{s}' was never seen in training (known labels: {', '.join(names)})")
            label_ids.append(names.index(s))
        logits = cls.logits(run, df[tcol].astype(str).tolist(), df[pcol].astype(str).tolist() if pcol else None)
        return write_classification_report(
            logits, np.asarray(label_ids), names, out_dir, title=f"{source} ({len(df)} rows)"
        )

    @classmethod
    def export_parity(cls, reference, exported, rows, split, meta=None) -> dict:
        diff = max(float(np.abs(a - b).max()) for a, b in zip(reference, exported))
        labels = np.asarray([r["label"] for r in rows])
        rp, ep = np.asarray([a.argmax() for a in reference]), np.asarray([b.argmax() for b in exported])
        return {
            "split": split,
            "rows": len(rows),
            "max_abs_logit_diff": diff,
            "label_agreement": float((rp == ep).mean()),
            "reference_accuracy": float((rp == labels).mean()),
            "export_accuracy": float((ep == labels).mean()),
            "accuracy_delta_points": float(((ep == labels).mean() - (rp == labels).mean()) * 100),
        }
