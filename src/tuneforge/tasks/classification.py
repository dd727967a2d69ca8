"""Single-label text classification on AutoModelForSequenceClassification."""
from __future__ import annotations

import logging
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from tuneforge.config.schema import RunConfig, TaskConfig
from tuneforge.data.sources import BUILTIN_LABEL_ORDER, check_cells, read_table, require_columns
from tuneforge.errors import DataError
from tuneforge.tasks.base import TASKS, Prepared, Task

log = logging.getLogger("tuneforge")


class ClassificationConfig(TaskConfig):
    type: Literal["classification"] = "classification"
    labels: list[str] | None = Field(None, description=(
        "The label names in id order. Default: inferred from the training data (sorted; numbers numerically)."))


@TASKS.register("classification")
class ClassificationTask(Task):
    name = "classification"
    Config = ClassificationConfig
    auto_class_name = "AutoModelForSequenceClassification"
    default_metric = "accuracy"
    default_max_length = 128
    metrics: ClassVar[dict[str, bool]] = {
        "accuracy": True, "f1_macro": True, "f1_weighted": True, "precision_macro": True, "recall_macro": True,
        "precision_weighted": True, "recall_weighted": True, "auc_roc": True, "loss": False}

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        super().check_config(cfg)
        from tuneforge.tasks.causal_lm import SFT_DATA_KEYS, reject_foreign_data_keys
        reject_foreign_data_keys(cfg, SFT_DATA_KEYS, "classification", "causal_lm")

    # ---- data -------------------------------------------------------------------------------------------
    def _read(self, source: str, key: str = "data.train") -> pd.DataFrame:
        d = self.cfg.data
        df = read_table(source, key)
        require_columns(df, {"data.text_column": d.text_column, "data.text_pair_column": d.text_pair_column,
                             "data.label_column": d.label_column}, source)
        skipped: list | None = [] if d.bad_records == "skip" else None
        cells = {d.text_column: ("data.text_column", "text"), d.label_column: ("data.label_column", "label")}
        if d.text_pair_column:
            cells[d.text_pair_column] = ("data.text_pair_column", "text")
        df = check_cells(df, cells, source, skipped)
        if skipped:
            log.warning("%s: data.bad_records=skip: left out %d rows that cannot be used (first: %s)", source,
                        len(skipped), skipped[0][1])
            self.skipped_records = getattr(self, "skipped_records", []) + [
                {"source": source, "record": n, "problem": msg} for n, msg in skipped]
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
            raise DataError(f"{source}: no rows with both a text and a label (columns '{d.text_column}' and "
                            f"'{d.label_column}'; empty texts and missing labels are left out)")
        return df.reset_index(drop=True)

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
        train, val, test, info = self.prepare_frames()
        enc = lambda df: None if df is None or len(df) == 0 else self._encode(df, tokenizer, info["label2id"])
        return Prepared(train=enc(train), validation=enc(val), test=enc(test), info=info)

    def prepare_frames(self):
        """Read, split, clean and augment (training split only) without tokenizing.

        Returns (train, validation, test, info) DataFrames (validation/test may be None). Raises DataError,
        ConfigError."""
        d, seed = self.cfg.data, self.cfg.data.split.seed if self.cfg.data.split.seed is not None else self.cfg.train.seed
        train = self._read(d.train)
        val = self._read(d.validation, "data.validation") if d.validation else None
        test = self._read(d.test, "data.test") if d.test else None
        # hold out test first, then validation from what is left, so sizes are fractions of the whole
        if test is None:
            train, test = self._split(train, d.split.test, seed, "test")
        if val is None and d.split.validation > 0:
            train, val = self._split(train, d.split.validation / (1.0 - (d.split.test if not d.test else 0.0)),
                                     seed + 1, "validation")
        if d.max_train_samples and d.max_train_samples < len(train):
            _, train = self._split(train, d.max_train_samples, seed + 2, "sample")
        if len(train) == 0:
            raise DataError(f"{d.train}: no training rows left after splitting")

        names = self._label_names(train)
        label2id = {n: i for i, n in enumerate(names)}
        train_classes = set(self._label_strings(train))
        if len(train_classes) < 2:
            only = next(iter(train_classes))
            raise DataError(f"{d.train}: the training data has a single class ('{only}'); "
                            f"classification needs at least two")
        unknown = train_classes - set(names)
        if unknown:
            raise DataError(f"task.labels does not list the training labels {sorted(unknown)[:5]}")
        for split_name, df in (("validation", val), ("test", test)):
            if df is None:
                continue
            extra = sorted(set(self._label_strings(df)) - train_classes)
            if extra and getattr(d, split_name):
                raise DataError(f"{getattr(d, split_name)} (data.{split_name}): the {split_name} data has labels "
                                f"never seen in training: {extra[:5]} (training labels: {sorted(train_classes)[:10]})")
            if extra:
                raise DataError(f"{d.train}: the label{'s' if len(extra) > 1 else ''} "
                                f"{', '.join(repr(x) for x in extra[:5])} "
                                f"{'have' if len(extra) > 1 else 'has'} so few rows that the {split_name} split "
                                f"held out of data.train (data.split.{split_name}) took all of them and none is left "
                                f"to train on; add examples of {'them' if len(extra) > 1 else 'it'}, remove "
                                f"{'them' if len(extra) > 1 else 'it'}, or give a data.{split_name} file")
        # deduplication, label noise, augmentation and resampling: the training split only, never val/test
        from tuneforge.data.prepare import improve_training_data
        train, data_report = improve_training_data(self.cfg, train, val, test, seed, names)
        if getattr(self, "skipped_records", None):
            data_report["bad_records"] = {"policy": "skip", "records": self.skipped_records}
        info = {"labels": names, "label2id": label2id, "data_report": data_report,
                "sizes": {"train": len(train), "validation": 0 if val is None else len(val),
                          "test": 0 if test is None else len(test)},
                "class_counts": {str(k): int(v) for k, v in pd.Series(self._label_strings(train)).value_counts().items()}}
        return train, val, test, info

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
        lengths = {name: list(ds["length"]) for name, ds in (("train", prepared.train), ("validation", prepared.validation),
                                                            ("test", prepared.test)) if ds is not None}
        write_report(out_dir, prepared.info["data_report"], lengths, m,
                     truncated={k: sum(x >= m for x in v) for k, v in lengths.items()}, title="Data used by this run")

    def loss_function(self, prepared: Prepared):
        weights = prepared.info["data_report"].get("class_weights")
        if not weights:
            return None
        from tuneforge.data.balance import weighted_cross_entropy

        return weighted_cross_entropy([weights[n] for n in prepared.info["labels"]])

    # ---- model ------------------------------------------------------------------------------------------
    def model_kwargs(self, prepared: Prepared) -> dict:
        names = prepared.info["labels"]
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {n: i for i, n in enumerate(names)}, "problem_type": "single_label_classification"}

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=None)

        def collate(features):
            return pad([{k: v for k, v in f.items() if k != "length"} for f in features])
        return collate

    def compute_metrics(self, prepared: Prepared):
        from tuneforge.evaluation.classification import classification_metrics

        def fn(eval_pred):
            logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
            return classification_metrics(np.asarray(logits), np.asarray(eval_pred.label_ids))
        return fn

    def final_evaluation(self, trainer, prepared: Prepared, eval_dir: str, val_metrics: dict) -> dict:
        from tuneforge.evaluation.classification import write_classification_report

        if prepared.test is None:
            log.warning("no test split: final metrics are the validation metrics")
            return {"validation": val_metrics}
        out = trainer.predict(prepared.test, metric_key_prefix="test")
        logits = out.predictions[0] if isinstance(out.predictions, tuple) else out.predictions
        test = write_classification_report(np.asarray(logits), np.asarray(out.label_ids), prepared.info["labels"],
                                           eval_dir, title=f"Test split ({len(prepared.test)} rows)",
                                           extra={"validation": val_metrics})
        return {"validation": val_metrics, "test": test}

    def metadata(self, prepared: Prepared) -> dict:
        d = self.cfg.data
        return {"labels": prepared.info["labels"], "text_column": d.text_column,
                "text_pair_column": d.text_pair_column, "label_column": d.label_column, "max_length": d.max_length}
