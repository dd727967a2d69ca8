"""How a finished multi-task run is used: `MultiTaskInference` (every sub-task's answer for a text, from the heads'
logits side by side; `tuneforge eval` per sub-task) and `MultiTaskExports` (every export format; the ONNX graph
has one output per head and serves predict / serve; parity per sub-task)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.errors import DataError
from tuneforge.tasks.hooks import ExportHooks, InferenceHooks, batched_logits


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
        from tuneforge.tasks.multitask_data import LabelColumn, label_vector
        from tuneforge.tasks.multitask_report import write_reports

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
        heads = [
            LabelColumn(
                h["name"],
                meta["label_columns"][h["name"]],
                meta["labels"][h["name"]],
                meta.get("label_separators", {}).get(h["name"], "|") if h.get("multi_label") else None,
            )
            for h in spec["heads"]
        ]
        rows = [label_vector(r, heads, source) for _, r in df.iterrows()]
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
        from tuneforge.tasks.multitask_report import parts

        ref, exp = np.stack(reference), np.stack(exported)
        labels = np.asarray([r["label"] for r in rows], dtype=np.float32)
        spec = meta["multitask"]
        out = {"split": split, "rows": len(rows), "max_abs_logit_diff": float(np.abs(ref - exp).max()), "tasks": {}}
        for (h, a, y), (_, b, _) in zip(parts(ref, labels, spec), parts(exp, labels, spec)):
            some = len(y) > 0
            if h.multi_label:
                pa, pb, t = a >= 0, b >= 0, y > 0.5
                task = {
                    "label_agreement": float((pa == pb).all(axis=1).mean()) if some else None,
                    "reference_subset_accuracy": float((pa == t).all(axis=1).mean()) if some else None,
                    "export_subset_accuracy": float((pb == t).all(axis=1).mean()) if some else None,
                }
            else:
                ra, ea = a.argmax(-1), b.argmax(-1)
                task = {
                    "label_agreement": float((ra == ea).mean()) if some else None,
                    "reference_accuracy": float((ra == y).mean()) if some else None,
                    "export_accuracy": float((ea == y).mean()) if some else None,
                }
                if some:
                    task["accuracy_delta_points"] = (task["export_accuracy"] - task["reference_accuracy"]) * 100
            out["tasks"][h.name] = {
                "rows": len(y),
                "max_abs_logit_diff": float(np.abs(a - b).max()) if some else None,
                **task,
            }
        return out
