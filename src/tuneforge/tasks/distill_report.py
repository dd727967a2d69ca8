"""The teacher-vs-student part of a distillation run's eval/report.md and metrics.json: quality, parameters,
size on disk, CPU inference latency and throughput, and how often the student agrees with the teacher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def count_parameters(model) -> int:
    """Every parameter of the model as it runs (a PEFT wrapper's base and adapters alike)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * (2 if getattr(p, "quant_state", None) is not None else 1)
    return total


def speed(model, dataset, collate) -> dict:
    """CPU inference latency (batch 1, p50/p95) and throughput (batch 32) on the held-out rows."""
    from tuneforge.evaluation.speed import inference_report

    r = inference_report(model, dataset, collate, batch_size=32)
    return {
        "latency_ms_p50": r.get("inference_latency_ms_p50"),
        "latency_ms_p95": r.get("inference_latency_ms_p95"),
        "throughput_rows_per_s_batch32": r.get("inference_samples_per_second"),
    }


KEYS = ("accuracy", "f1_macro", "auc_roc")


def classifier_rows(
    teacher,
    teacher_metrics: dict,
    teacher_data,
    teacher_collate,
    student,
    student_metrics: dict,
    student_data,
    student_collate,
    model_dir,
) -> tuple[dict, dict]:
    """The teacher's and the student's rows of a classifier's table: quality (KEYS), parameters, size on disk and
    CPU speed on the held-out rows (each model on its own encoding of them)."""
    from tuneforge.evaluation.speed import dir_size_mb

    teacher_row = {
        **{k: teacher_metrics.get(k) for k in KEYS},
        "parameters": teacher.parameters(),
        "size_mb": teacher.size_mb(),
        **speed(teacher.model, teacher_data, teacher_collate),
    }
    student_row = {
        **{k: student_metrics.get(k) for k in KEYS},
        "parameters": count_parameters(student),
        "size_mb": dir_size_mb(model_dir),
        **speed(student, student_data, student_collate),
    }
    return teacher_row, student_row


def write_section(
    eval_dir: str | Path, teacher: dict, student: dict, agreement: float | None, split: str, metrics: tuple[str, ...]
) -> dict:
    """Add the teacher-vs-student table to eval/report.md and a `distill` block to eval/metrics.json."""
    eval_dir = Path(eval_dir)
    block = {"split": split, "teacher": teacher, "student": student, "agreement_with_teacher": agreement}
    for key in ("latency_ms_p50", "throughput_rows_per_s_batch32"):
        t, s = teacher.get(key), student.get(key)
        if t and s:
            block["student_speedup_" + ("batch1_p50" if key.startswith("latency") else "batch32")] = round(
                t / s if key.startswith("latency") else s / t, 3
            )
    path = eval_dir / "metrics.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["distill"] = block
    path.write_text(json.dumps(data, indent=2))

    def cell(v):
        return (
            ""
            if v is None
            else (
                f"{v:.4f}"
                if isinstance(v, float) and abs(v) < 10
                else f"{v:,.1f}"
                if isinstance(v, float)
                else f"{v:,}"
            )
        )

    rows = [*metrics, "parameters", "size_mb", "latency_ms_p50", "latency_ms_p95", "throughput_rows_per_s_batch32"]
    lines = ["", f"## Teacher and student ({split} split)", "", "| | teacher | student |", "|---|---|---|"]
    lines += [f"| {r} | {cell(teacher.get(r))} | {cell(student.get(r))} |" for r in rows]
    if agreement is not None:
        lines += [
            "",
            f"The student agrees with the teacher on {100 * agreement:.1f}% of the {split} "
            f"{'tokens' if 'perplexity' in metrics else 'rows'}.",
        ]
    else:
        lines += [
            "",
            "Teacher and student have different vocabularies: quality and agreement are not compared token by token.",
        ]
    if "student_speedup_batch32" in block:
        lines.append(
            f"Student throughput at batch 32: {block['student_speedup_batch32']:.2f}x the teacher's "
            f"(CPU, this machine)."
        )
    report = eval_dir / "report.md"
    report.write_text((report.read_text() if report.is_file() else "") + "\n".join(lines) + "\n")
    return block


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.asarray(a).argmax(-1) == np.asarray(b).argmax(-1)).mean()) if len(a) else 0.0
