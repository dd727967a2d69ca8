"""Using a trained run: load it back, predict, evaluate on new labelled data."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from tuneforge.errors import DataError, ModelError
from tuneforge.methods import METHODS
from tuneforge.models.loader import load_model, load_tokenizer, read_run_metadata, resolve_model
from tuneforge.tasks import TASKS


@dataclass
class LoadedRun:
    model: Any
    tokenizer: Any
    meta: dict
    model_dir: Path


def model_dir_of(path: str | Path) -> Path:
    """Accept a run directory or its model/ directory."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"run directory not found: {path}")
    if (p / "model" / "tuneforge.json").is_file():
        return p / "model"
    if (p / "tuneforge.json").is_file():
        return p
    status = p / "status.json"
    if status.is_file():
        state = json.loads(status.read_text()).get("state")
        raise ModelError(f"{path} has no trained model (run state: {state})")
    raise ModelError(f"{path} is not a tuneforge run directory (no model/tuneforge.json)")


def load_run(path: str | Path, device: str | None = None) -> LoadedRun:
    from tuneforge.export.load import is_export, load_export

    if is_export(path):  # `tuneforge export` output: merged, int8 or ONNX
        return load_export(path, device)
    model_dir = model_dir_of(path)
    meta = read_run_metadata(model_dir)
    task_cls = TASKS.get(meta["task"])
    method_cls = METHODS.get(meta["method"])
    names = meta.get("labels")
    kwargs = {}
    if names:
        kwargs = {"num_labels": len(names), "id2label": dict(enumerate(names)),
                  "label2id": {n: i for i, n in enumerate(names)}}

    def build_base(name_or_dir: str):
        path = name_or_dir if Path(name_or_dir).is_dir() else resolve_model(name_or_dir)
        return load_model(path, getattr(__import__("transformers"), task_cls.auto_class_name),
                          meta.get("dtype", "auto"), **kwargs, **method.load_kwargs())

    # defined before use by build_base: the method decides how its base loads (for example 4-bit for QLoRA)
    method = method_cls(method_cls.Config.model_validate(meta.get("method_config") or {}))
    model = method.load(str(model_dir), build_base)
    model.eval()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    return LoadedRun(model=model, tokenizer=load_tokenizer(str(model_dir)), meta=meta, model_dir=model_dir)


@torch.no_grad()
def classify_logits(run: LoadedRun, texts: list[str], pairs: list[str] | None = None,
                    batch_size: int = 64) -> np.ndarray:
    """Logits for `texts`, batched by length so padding stays small; returned in input order."""
    max_length = run.meta.get("max_length", 512)
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), len(run.meta["labels"])), dtype=np.float32)
    device = next(run.model.parameters()).device
    for i in range(0, len(texts), batch_size):
        idx = order[i:i + batch_size]
        a = [texts[j] for j in idx]
        b = [pairs[j] for j in idx] if pairs else None
        enc = run.tokenizer(a, b, truncation=True, max_length=max_length, padding=True, return_tensors="pt").to(device)
        out[idx] = run.model(**enc).logits.float().cpu().numpy()
    return out


def predict(run_dir: str | Path | LoadedRun, texts: Iterable[str], batch_size: int = 64) -> list[dict]:
    """Label and per-class probabilities for each text."""
    from tuneforge.evaluation.classification import softmax

    run = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir)
    if run.meta["task"] != "classification":
        raise ModelError(f"predict works on classification runs; this run's task is '{run.meta['task']}' "
                         f"(use `tuneforge chat` / `tuneforge generate`)")
    texts = list(texts)
    if not texts:
        raise DataError("no texts to predict")
    probs = softmax(classify_logits(run, texts, batch_size=batch_size))
    names = run.meta["labels"]
    return [{"text": t, "label": names[int(p.argmax())],
             "probabilities": {n: round(float(x), 6) for n, x in zip(names, p)}} for t, p in zip(texts, probs)]


def evaluate(run_dir: str | Path, data: str, out_dir: str | Path | None = None, text_column: str | None = None,
             label_column: str | None = None) -> dict:
    """Evaluate a trained classification run on labelled data; writes metrics.json, report.md and the
    confusion matrix into out_dir (default RUN/eval/<data file stem>)."""
    from tuneforge.data.sources import check_cells, read_table, require_columns
    from tuneforge.evaluation.classification import write_classification_report

    run = load_run(run_dir)
    meta = run.meta
    if meta["task"] != "classification":
        raise ModelError(f"eval --data works on classification runs; this run's task is '{meta['task']}'")
    tcol, lcol = text_column or meta["text_column"], label_column or meta["label_column"]
    pcol = meta.get("text_pair_column")
    df = read_table(data)
    require_columns(df, {"text column": tcol, "label column": lcol, "text pair column": pcol}, data)
    cells = {tcol: ("--text-column", "text"), lcol: ("--label-column", "label")}
    df = check_cells(df, {**cells, **({pcol: ("text pair column", "text")} if pcol else {})}, data)
    df = df.dropna(subset=[tcol, lcol])
    if len(df) == 0:
        raise DataError(f"{data}: no rows with both a text and a label")
    names = meta["labels"]
    label_ids = []
    for v in df[lcol]:
        s = str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v)
        if s not in names:
            raise DataError(f"{data}: label '{s}' was never seen in training (known labels: {', '.join(names)})")
        label_ids.append(names.index(s))
    logits = classify_logits(run, df[tcol].astype(str).tolist(),
                             df[pcol].astype(str).tolist() if pcol else None)
    run_root = run.model_dir.parent
    out = Path(out_dir) if out_dir else run_root / "eval" / Path(data).stem.replace(":", "-")
    return write_classification_report(logits, np.asarray(label_ids), names, out, title=f"{data} ({len(df)} rows)")
