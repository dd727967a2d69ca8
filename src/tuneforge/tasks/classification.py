"""Single-label text classification on AutoModelForSequenceClassification.

One concern in about 470 lines: the training side of one task, as one class, with its config and data keys.
Half of it is how rows are read, checked and split (stratified or grouped, label checks across splits), which
the image classifier reuses by subclassing; moving that half elsewhere would split one class over two modules.
How a finished run predicts, evaluates and exports is in tasks/classification_hooks.py, distillation in
classification_distill.py, and the data pipeline it calls (cleaning, augmentation, balancing) in data/."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from tuneforge.config.schema import AugmentSection, BalanceSection, CleanSection, DataSection, RunConfig, TaskConfig
from tuneforge.data.builtin_sets import BUILTIN_LABEL_ORDER
from tuneforge.data.columns import check_cells, require_columns
from tuneforge.data.left_out import ReadLog, drop_empty
from tuneforge.data.sources import read_table
from tuneforge.data.splits import data_seed
from tuneforge.errors import ConfigError, DataError
from tuneforge.tasks.base import TASKS, Prepared, Task, ensure_pad_token, first_output, padding_collator, token_lengths
from tuneforge.tasks.classification_hooks import ClassifierExports, ClassifierInference

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
    read_log: ReadLog = field(default_factory=ReadLog)  # rows read per file, and those that did not reach training

    @property
    def label2id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.labels)}

    @property
    def sizes(self) -> dict[str, int]:
        """Rows per split (0 for a split the run has none of)."""
        splits = {"train": self.train, "validation": self.validation, "test": self.test}
        return {name: 0 if df is None else len(df) for name, df in splits.items()}


@dataclass
class ClassificationState:
    """What preparation decided, for the later hooks: the label names and the final training split's texts."""

    labels: list[str]  # label names in id order
    label2id: dict[str, int]
    class_counts: dict[str, int]  # of the final training split
    train_texts: list[str] = field(default_factory=list)  # the final training split's texts (and pairs),
    train_pairs: list[str] | None = None  # row by row as in the encoded dataset
    pad_token_id: int | None = None  # what marks padding: a decoder's head reads the last token that is not it


class ClassificationConfig(TaskConfig):
    type: Literal["classification"] = "classification"
    labels: list[str] | None = Field(
        None,
        description=(
            "The label names in id order. Default: inferred from the training data (sorted; numbers numerically)."
        ),
    )


def check_text_pair(data: DataSection) -> None:
    """A text pair column must be another column than the text column (pandas cannot hold a row with the same
    column twice): a ConfigError naming both keys."""
    pair = getattr(data, "text_pair_column", None)
    if pair is not None and pair == data.text_column:
        raise ConfigError(
            f"data.text_pair_column: '{pair}' is also data.text_column; a text pair needs a "
            f"second column (or remove data.text_pair_column)"
        )


@TASKS.register("classification")
class ClassificationTask(Task):
    name = "classification"
    Config = ClassificationConfig
    DataConfig = ClassificationData
    auto_class_name = "AutoModelForSequenceClassification"
    default_distill_temperature = 4.0
    distill_keys = ("unlabeled", "hidden_weight")
    prepares_tables = True
    report_metrics = ("accuracy", "f1_macro", "auc_roc")
    full_precision_modules = ("classifier", "score", "qa_outputs", "pre_classifier")
    inference = ClassifierInference()
    exports = ClassifierExports()
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
    def check_config(cls, cfg: RunConfig) -> None:
        super().check_config(cfg)
        check_text_pair(cfg.data)
        if cfg.distill.teacher and cfg.data.balance.class_weights != "none":
            raise ConfigError(
                "data.balance.class_weights: not applied by the distillation loss; set it to none "
                "with distill.teacher (or resample with data.balance.sampling)"
            )

    # ---- data -------------------------------------------------------------------------------------------
    def _read(self, source: str, key: str = "data.train", read_log: ReadLog | None = None) -> pd.DataFrame:
        """The usable rows of `source`, indexed by their row number in the source (the ids saved with the
        split). The rows it held, and those left out (data.bad_records=skip; an empty text or label), go into
        `read_log` for the data report."""
        d = self.cfg.data
        read_log = read_log if read_log is not None else ReadLog()
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
        read_log.read[source] = len(df)
        skipped: list | None = [] if d.bad_records == "skip" else None
        cells = {d.text_column: ("data.text_column", "text"), d.label_column: ("data.label_column", "label")}
        if d.text_pair_column:
            cells[d.text_pair_column] = ("data.text_pair_column", "text")
        df = check_cells(df, cells, source, skipped)
        read_log.skip(source, skipped or [])
        needed = {d.text_column: "text", **({d.text_pair_column: "text pair"} if d.text_pair_column else {})}
        df, left_out = drop_empty(df, {**needed, d.label_column: "label"}, source)
        read_log.left_out.extend(left_out)
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
        frames, report = self.read_clean()
        label2id = frames.label2id
        pad_id = ensure_pad_token(tokenizer, self.cfg.model.name)

        def enc(df):
            return None if df is None or len(df) == 0 else self._encode(df, tokenizer, label2id)

        train, val, test = frames.train, frames.validation, frames.test
        d = self.cfg.data
        state = ClassificationState(
            frames.labels,
            label2id,
            {str(k): int(v) for k, v in pd.Series(self._label_strings(train)).value_counts().items()},
            train[d.text_column].astype(str).tolist(),
            train[d.text_pair_column].astype(str).tolist() if d.text_pair_column else None,
            pad_id,
        )
        encoded = {"train": enc(train), "validation": enc(val), "test": enc(test)}
        chinese = self._chinese(tokenizer, {"train": train, "validation": val, "test": test})
        if chinese:
            report["chinese_text"] = chinese
        return Prepared(
            **encoded,
            sizes=frames.sizes,
            state=state,
            report=report,
            held_out={"validation": self._records(val), "test": self._records(test)},
            train_ids=frames.train_ids,
            lengths=token_lengths(encoded),
        )

    def _chinese(self, tokenizer, frames: dict) -> dict:
        """Per split with Chinese text: its Chinese characters and what they cost the tokenizer (the data report's
        "Chinese text" table); the texts' own tokens, without the special tokens the tokenizer adds."""
        from tuneforge.data.text import chinese_stats, has_han

        d, out = self.cfg.data, {}
        for name, df in frames.items():
            if df is None or len(df) == 0:
                continue
            texts = df[d.text_column].astype(str).tolist()
            if d.text_pair_column:
                texts = [t + p for t, p in zip(texts, df[d.text_pair_column].astype(str))]
            if not any(has_han(t) for t in texts):
                continue
            stats = chinese_stats(texts, [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]])
            if stats:
                out[name] = stats
        return out

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
        d, seed = self.cfg.data, data_seed(self.cfg)
        read_log = ReadLog()
        train = self._read(d.train, read_log=read_log)
        val = self._read(d.validation, "data.validation", read_log) if d.validation else None
        test = self._read(d.test, "data.test", read_log) if d.test else None
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
        return Frames(train, val, test, names, [int(i) for i in train.index], read_log)

    def clean(self, frames: Frames) -> tuple[pd.DataFrame, dict]:
        """Deduplication, label noise, augmentation and resampling of the training split (never validation or
        test). Returns the new training frame and the data report (with the rows read and those left out)."""
        from tuneforge.data.prepare import improve_training_data

        train, report = improve_training_data(
            self.cfg, frames.train, frames.validation, frames.test, data_seed(self.cfg), frames.labels
        )
        report.update(frames.read_log.report())
        return train, report

    def read_clean(self) -> tuple[Frames, dict]:
        """How `prepare` starts: `read_split`, then `clean` the training split. Returns the frames with the
        cleaned training split (`train_ids` still name the rows before cleaning) and the data report."""
        frames = self.read_split()
        train, report = self.clean(frames)
        return replace(frames, train=train), report

    def prepare_frames(self):
        """Read, split, clean and augment without tokenizing, for `tuneforge data inspect|prepare`.

        Returns (train, validation, test, report, labels). Raises DataError, ConfigError."""
        frames, report = self.read_clean()
        return frames.train, frames.validation, frames.test, report, frames.labels

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

    def loss_function(self, prepared: Prepared[ClassificationState]):
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

    def training_loss(self, prepared: Prepared, without_adapters=None):
        from tuneforge.tasks.classification_distill import training_loss

        return training_loss(self.cfg, prepared)

    # ---- model ------------------------------------------------------------------------------------------
    def model_kwargs(self, prepared: Prepared[ClassificationState]) -> dict:
        meta = {"labels": prepared.state.labels, "pad_token_id": prepared.state.pad_token_id}
        return {**self.inference.head_kwargs(meta), "problem_type": "single_label_classification"}

    def collator(self, tokenizer):
        return padding_collator(tokenizer)

    def compute_metrics(self, prepared: Prepared):
        from tuneforge.evaluation.classification import classification_metrics

        def fn(eval_pred):
            logits = first_output(eval_pred.predictions)
            return classification_metrics(logits, np.asarray(eval_pred.label_ids))

        return fn

    def final_evaluation(
        self, trainer, prepared: Prepared[ClassificationState], eval_dir: str, val_metrics: dict, without_adapters=None
    ) -> dict:
        from tuneforge.evaluation.classification import write_classification_report

        outputs = self.test_outputs(trainer, prepared)
        if outputs is None:
            return {"validation": val_metrics}
        test = write_classification_report(
            *outputs,
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

    def metadata(self, prepared: Prepared[ClassificationState]) -> dict:
        d = self.cfg.data
        return {
            "labels": prepared.state.labels,
            "pad_token_id": prepared.state.pad_token_id,
            "text_column": d.text_column,
            "text_pair_column": d.text_pair_column,
            "label_column": d.label_column,
            "max_length": d.max_length,
        }
