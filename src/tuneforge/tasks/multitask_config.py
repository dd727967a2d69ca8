"""The configuration keys of multi-task runs: the sub-tasks (`task.tasks`: label column, single- or multi-label,
weight, metric, own data files), how their losses are weighted and their sources mixed, the pooling, and the
metrics each kind of sub-task reports."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tuneforge.config.schema import DataSection, RunConfig, Section, TaskConfig

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


def metric_names(cfg: RunConfig) -> dict[str, bool]:
    """Every validation metric of a multi-task run (`combined`, `loss`, `<sub-task>_<metric>`), and whether larger
    is better."""
    out = {"combined": True, "loss": False}
    for name, s in cfg.task.tasks.items():
        for m, greater in (MULTI_METRICS if s.problem == "multi_label" else SINGLE_METRICS).items():
            out[f"{name}_{m}"] = greater
    return out
