"""A finished text classification run: its head rebuilt from the saved label names, predict and evaluate on
texts (and text pairs), its export formats and the parity report (label agreement, accuracy on both sides)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tuneforge.data.columns import check_cells, require_columns
from tuneforge.data.sources import read_table
from tuneforge.errors import DataError
from tuneforge.tasks.hooks import ExportHooks, InferenceHooks, batched_logits


class ClassifierInference(InferenceHooks):
    """Single-label classification: label and per-class probabilities for each input."""

    def head_kwargs(self, meta: dict) -> dict:
        names = meta.get("labels") or []
        if not names:
            return {}
        kwargs = {
            "num_labels": len(names),
            "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)},
        }
        if meta.get("pad_token_id") is not None:  # a decoder's head reads the last token that is not padding
            kwargs["pad_token_id"] = int(meta["pad_token_id"])
        return kwargs

    def logits(self, run: Any, texts: list, pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        """Logits for `texts`, batched by length so padding stays small; returned in input order."""
        return batched_logits(run, texts, pairs, len(run.meta["labels"]), batch_size)

    def predict(self, run: Any, texts: list, batch_size: int = 64) -> list[dict]:
        """Label and per-class probabilities for each text."""
        from tuneforge.evaluation.classification import softmax

        if not texts:
            raise DataError("no texts to predict")
        probs = softmax(self.logits(run, list(texts), batch_size=batch_size))
        names = run.meta["labels"]
        return [
            {
                "text": t,
                "label": names[int(p.argmax())],
                "probabilities": {n: round(float(x), 6) for n, x in zip(names, p)},
            }
            for t, p in zip(texts, probs)
        ]

    def evaluate(
        self, run: Any, source: str, out_dir, text_column: str | None = None, label_column: str | None = None
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
        logits = self.logits(run, df[tcol].astype(str).tolist(), df[pcol].astype(str).tolist() if pcol else None)
        return write_classification_report(
            logits, np.asarray(label_ids), names, out_dir, title=f"{source} ({len(df)} rows)"
        )


class ClassifierExports(ExportHooks):
    """A classifier exports to every format, its ONNX graph serves predict / serve, and parity compares labels."""

    formats = ("merged", "onnx", "int8", "onnx-int8")
    onnx_usable = True

    def parity(
        self,
        reference: list[np.ndarray],
        exported: list[np.ndarray],
        rows: list[dict],
        split: str,
        meta: dict | None = None,
    ) -> dict:
        """Largest logit difference, how often both pick the same label, and both accuracies on the rows."""
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
