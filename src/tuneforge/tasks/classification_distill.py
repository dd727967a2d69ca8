"""Distillation for classification: the teacher's logits over the training texts (and unlabelled ones) as soft
targets, cached in the run; the loss `alpha * T^2 * KL + (1 - alpha) * CE` (kernels/distill.py), optionally with
block-output matching for students cut from the teacher; and the teacher-vs-student report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tuneforge.data.columns import check_cells, require_columns
from tuneforge.data.sources import read_table
from tuneforge.errors import ConfigError, DataError

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig


def distill(task, prepared, tokenizer, teacher, cache_dir):
    """Soft targets: the teacher's logits over every training text (and `distill.unlabeled` texts, which
    join the training set with no label), computed once with the teacher's own tokenizer and cached."""
    import datasets

    labels = prepared.state.labels
    if set(teacher.labels) != set(labels):
        raise DataError(
            f"distill.teacher: its labels {teacher.labels[:10]} differ from the data's "
            f"{labels[:10]} (a teacher must predict the same classes)"
        )
    if task.cfg.distill.hidden_weight > 0 and teacher.tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(
            "distill.hidden_weight: the teacher's tokenizer differs from the student's; block "
            "outputs are matched token by token, so the student must be cut from the teacher "
            "(model.name: the teacher's model directory, with model.keep_layers)"
        )
    order = [teacher.labels.index(n) for n in labels]
    st = prepared.state
    texts, pairs = list(st.train_texts), list(st.train_pairs) if st.train_pairs is not None else None
    extra = unlabeled(task.cfg)
    if extra is not None:
        texts += extra[0]
        if pairs is not None:
            pairs += extra[1]
    key = {"teacher": teacher.fingerprint(), "texts": texts, "pairs": pairs}
    from tuneforge.data.outputs_cache import cached_outputs

    logits = cached_outputs(Path(cache_dir), key, lambda: teacher.logits(texts, pairs))[:, order]
    n = len(st.train_texts)
    train = prepared.train.add_column("teacher_logits", logits[:n].tolist())
    if extra is not None:
        d = task.cfg.data
        enc = tokenizer(extra[0], extra[1] if d.text_pair_column else None, truncation=True, max_length=d.max_length)
        rows = {k: v for k, v in enc.items()}
        rows["labels"] = [-100] * len(extra[0])
        rows["length"] = [len(x) for x in enc["input_ids"]]
        rows["teacher_logits"] = logits[n:].tolist()
        train = datasets.concatenate_datasets([train, datasets.Dataset.from_dict(rows).cast(train.features)])
        prepared.sizes = {**prepared.sizes, "unlabeled": len(extra[0])}
        print(
            f"tuneforge: distillation: {len(extra[0])} unlabelled texts labelled by the teacher join the "
            f"{n} training rows",
            file=sys.stderr,
            flush=True,
        )
    prepared.train = train
    prepared.teacher = teacher
    return prepared


def unlabeled(cfg: RunConfig) -> tuple[list[str], list[str]] | None:
    src = cfg.distill.unlabeled
    if src is None:
        return None
    d = cfg.data
    df = read_table(src, "distill.unlabeled")
    require_columns(df, {"data.text_column": d.text_column, "data.text_pair_column": d.text_pair_column}, src)
    cols = {d.text_column: ("data.text_column", "text")}
    if d.text_pair_column:
        cols[d.text_pair_column] = ("data.text_pair_column", "text")
    df = check_cells(df, cols, src).dropna(subset=list(cols))
    keep = [bool(str(t).strip()) for t in df[d.text_column]]
    df = df[keep]
    if len(df) == 0:
        raise DataError(f"{src} (distill.unlabeled): no texts in column '{d.text_column}'")
    return (
        df[d.text_column].astype(str).tolist(),
        df[d.text_pair_column].astype(str).tolist() if d.text_pair_column else [],
    )


def training_loss(cfg: RunConfig, prepared):
    if prepared.teacher is None:
        return None
    import torch.nn.functional as F

    from tuneforge.kernels.distill import classification_kd_loss

    T, alpha, hw = cfg.distill.temperature, cfg.distill.alpha, cfg.distill.hidden_weight
    teacher = prepared.teacher.model

    def loss(model, inputs):
        teacher_logits = inputs.pop("teacher_logits", None)
        labels = inputs.pop("labels")
        match = hw > 0 and teacher_logits is not None
        outputs = model(**inputs, output_hidden_states=match)
        if teacher_logits is None:  # evaluation rows: the ordinary loss on the true labels
            return F.cross_entropy(outputs.logits.float(), labels), outputs
        value = classification_kd_loss(outputs.logits, teacher_logits, labels, T, alpha)
        if match:
            value = value + hw * hidden_match_loss(model, outputs.hidden_states, teacher, inputs)
        return value, outputs

    return loss


def teacher_vs_student(task, trainer, prepared, student_metrics, eval_dir) -> dict:
    """The teacher-vs-student table on the test split (tasks/distill_report.py writes it)."""
    import datasets
    import torch
    from transformers import DataCollatorWithPadding

    from tuneforge.evaluation.classification import classification_metrics
    from tuneforge.tasks import distill_report as dr

    teacher, d = prepared.teacher, task.cfg.data
    rows = pd.DataFrame.from_records(prepared.held_out["test"])
    texts = rows[d.text_column].astype(str).tolist()
    pairs = rows[d.text_pair_column].astype(str).tolist() if d.text_pair_column else None
    order = [teacher.labels.index(n) for n in prepared.state.labels]
    t_logits = teacher.logits(texts, pairs)[:, order]
    # the student's logits in the split's row order (the Trainer's evaluation order is grouped by length)
    model, collate = trainer.model, task.collator(trainer.processing_class)
    device = next(model.parameters()).device
    chunks = []
    with torch.no_grad():
        for i in range(0, len(prepared.test), 64):
            batch = collate([prepared.test[j] for j in range(i, min(i + 64, len(prepared.test)))])
            batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            chunks.append(model(**batch).logits.float().cpu().numpy())
    student_logits = np.concatenate(chunks)
    label_ids = np.asarray(prepared.test["labels"])
    t_metrics = classification_metrics(t_logits, label_ids)
    enc = teacher.tokenizer(texts, pairs, truncation=True, max_length=teacher.run.meta.get("max_length", 512))
    t_data = datasets.Dataset.from_dict(dict(enc))
    rows = dr.classifier_rows(
        teacher,
        t_metrics,
        t_data,
        DataCollatorWithPadding(teacher.tokenizer),
        trainer.model,
        student_metrics,
        prepared.test,
        task.collator(trainer.processing_class),
        Path(eval_dir).parent / "model",
    )
    return dr.write_section(eval_dir, *rows, dr.agreement(student_logits, t_logits), "test", dr.KEYS)


def hidden_match_loss(student, student_hidden, teacher, inputs):
    """Mean squared error between each student block's output and the output of the teacher block it was cut
    from (`config.tuneforge_kept_layers`; a student of the teacher's depth maps block to block), over the real
    tokens. Raises ConfigError when the depths or hidden sizes do not line up."""
    import torch

    with torch.no_grad():
        device = next(teacher.parameters()).device
        t_hidden = teacher(**{k: v.to(device) for k, v in inputs.items()}, output_hidden_states=True).hidden_states
    n_student = len(student_hidden) - 1
    kept = list(getattr(student.config, "tuneforge_kept_layers", None) or range(n_student))
    if (
        len(kept) != n_student
        or max(kept) >= len(t_hidden) - 1
        or student_hidden[-1].shape[-1] != t_hidden[-1].shape[-1]
    ):
        raise ConfigError(
            f"distill.hidden_weight: the student's {n_student} blocks do not line up with the "
            f"teacher's {len(t_hidden) - 1} (cut the student from the teacher's model directory with "
            f"model.keep_layers)"
        )
    mask = inputs["attention_mask"].unsqueeze(-1).to(student_hidden[-1].dtype)
    total = student_hidden[-1].new_zeros(())
    for k, j in enumerate(kept):
        diff = (student_hidden[k + 1] - t_hidden[j + 1].to(student_hidden[k + 1].device)) ** 2
        total = total + (diff * mask).sum() / (mask.sum() * diff.shape[-1]).clamp(min=1)
    return total / len(kept)
