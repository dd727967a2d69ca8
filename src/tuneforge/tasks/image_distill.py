"""Distillation for image classification: a teacher image classifier (a finished run or a model directory with
the same classes) teaches on the very batches the student sees (augmented, CutMix/MixUp-mixed), converted to its
own input size and normalisation; the loss is Hinton's (the soft term from kernels/distill.py), and the final
evaluation adds the teacher-vs-student table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tuneforge.errors import DataError

if TYPE_CHECKING:
    import torch

    from tuneforge.tasks.base import Prepared
    from tuneforge.tasks.image_classification import ImageState


def distill(prepared: Prepared[ImageState], teacher) -> Prepared[ImageState]:
    """Attach `teacher` (tuneforge.training.distill.Teacher): function matching on the student's own batches, so
    nothing is cached. Raises DataError when the teacher predicts other classes."""
    labels = prepared.state.labels
    if set(teacher.labels) != set(labels):
        raise DataError(
            f"distill.teacher: its labels {teacher.labels[:10]} differ from the data's "
            f"{labels[:10]} (a teacher must predict the same classes)"
        )
    prepared.state.teacher_order = [teacher.labels.index(n) for n in labels]
    prepared.teacher = teacher
    teacher.model.eval()
    return prepared


def teacher_logits(prepared: Prepared[ImageState], pixels: torch.Tensor) -> torch.Tensor:
    """The teacher's logits (in the student's label order) for a batch of the student's pixel values."""
    import torch
    import torch.nn.functional as F

    teacher, mine = prepared.teacher, prepared.state.preprocessing
    theirs = teacher.tokenizer
    first = next(teacher.model.parameters())
    x = pixels.to(first.device, torch.float32)
    if tuple(mine.mean) != tuple(theirs.mean) or tuple(mine.std) != tuple(theirs.std):
        m0, s0 = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (mine.mean, mine.std))
        m1, s1 = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (theirs.mean, theirs.std))
        x = (x * s0 + m0 - m1) / s1
    if (x.shape[-2], x.shape[-1]) != (theirs.height, theirs.width):
        x = F.interpolate(x, size=(theirs.height, theirs.width), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        out = teacher.model(pixel_values=x.to(first.dtype)).logits.float()
    return out[:, prepared.state.teacher_order]


def hinton_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, hard_loss: torch.Tensor, t: float, alpha: float
) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * hard_loss. The hard term is
    the batch's own loss (soft cross-entropy against CutMix/MixUp or smoothed targets), which the kernel's
    cross-entropy on class ids cannot stand for; so the kernel gives the soft term alone (its alpha = 1)."""
    from tuneforge.kernels.distill import classification_kd_loss

    soft = classification_kd_loss(student, teacher.to(student.device), labels.to(student.device), t, alpha=1.0)
    return alpha * soft + (1.0 - alpha) * hard_loss


def teacher_vs_student(
    trainer, prepared: Prepared[ImageState], student_metrics: dict, student_logits: np.ndarray, eval_dir: str
) -> dict:
    """The teacher-vs-student table on the test images (quality, size, CPU speed, agreement)."""
    from tuneforge.data.images import eval_transform
    from tuneforge.evaluation.classification import classification_metrics
    from tuneforge.tasks import distill_report as dr
    from tuneforge.tasks.image_classification import ImageRows, stack_batch

    teacher, test = prepared.teacher, prepared.test
    t_logits = teacher.logits(test.refs)[:, prepared.state.teacher_order]
    t_metrics = classification_metrics(t_logits, np.asarray(test.labels))
    t_rows = ImageRows(test.refs, test.labels, eval_transform(teacher.tokenizer))
    rows = dr.classifier_rows(
        teacher,
        t_metrics,
        t_rows,
        stack_batch,
        trainer.model,
        student_metrics,
        test,
        stack_batch,
        Path(eval_dir).parent / "model",
    )
    return dr.write_section(eval_dir, *rows, dr.agreement(student_logits, t_logits), "test", dr.KEYS)
