"""Reading and splitting the data of a multi-task run: one or more sources (data.train for the sub-tasks without
a file of their own, and each sub-task file), each split on its own, every row labelled for the sub-tasks its
source feeds and has a label for (partially labelled rows are normal: a missing label is left out of that
sub-task's loss and metrics). `label_vector` encodes a row's labels for the heads, in training and in eval."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tuneforge.data.columns import check_cells, require_columns
from tuneforge.data.left_out import ReadLog, drop_empty, drop_rows
from tuneforge.data.prepare import label_strings
from tuneforge.data.sources import read_table
from tuneforge.errors import ConfigError, DataError
from tuneforge.kernels.multitask import IGNORE

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig

log = logging.getLogger("tuneforge")


@dataclass
class Source:
    key: str  # the config key naming the file (data.train, task.tasks.<name>.train)
    path: str
    subtasks: list[str]
    validation: str | None = None
    test: str | None = None


@dataclass
class SourceSplit:
    source: Source
    train: pd.DataFrame
    validation: pd.DataFrame | None
    test: pd.DataFrame | None


def sources_of(cfg: RunConfig) -> list[Source]:
    """The data sources of a multi-task config, in a fixed order (data.train first).
    Raises ConfigError when sub-tasks sharing a file disagree about its validation/test files."""
    d, tasks = cfg.data, cfg.task.tasks
    out: list[Source] = []
    main = [n for n, s in tasks.items() if s.train is None]
    if main:
        out.append(Source("data.train", d.train, main, d.validation, d.test))
    own: dict[str, Source] = {}
    for name, s in tasks.items():
        if s.train is None:
            continue
        src = own.get(s.train)
        if src is None:
            own[s.train] = Source(f"task.tasks.{name}.train", s.train, [name], s.validation, s.test)
            continue
        for split in ("validation", "test"):
            mine, theirs = getattr(s, split), getattr(src, split)
            if mine is not None and theirs is not None and mine != theirs:
                raise ConfigError(
                    f"task.tasks.{name}.{split}: differs from task.tasks.{src.subtasks[0]}.{split} "
                    f"although both sub-tasks read {s.train}"
                )
            if theirs is None:
                setattr(src, split, mine)
        src.subtasks.append(name)
    return out + list(own.values())


def single_label(v) -> str | None:
    """A single-label cell as its label string, or None when missing (NaN, None, empty)."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    return label_strings([v])[0].strip() or None


def multi_label(v, separator: str) -> tuple[str, ...] | None:
    """A multi-label cell (a list, or a string joined with `separator`) as a tuple of labels; None when missing.
    An empty list is a row labelled with no class (which multi-label data may have)."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return tuple(sorted({single_label(x) for x in v if single_label(x) is not None}))
    s = str(v).strip()
    if not s:
        return None
    return tuple(sorted({p.strip() for p in s.split(separator) if p.strip()}))


def read_source(cfg: RunConfig, src: Source, path: str, key: str, read_log: ReadLog) -> pd.DataFrame:
    """The usable rows of one file of a source: text present, labels normalised (None when missing), rows with no
    label for any of the source's sub-tasks left out. Indexed by row number in the file. The rows the file held
    and those left out (data.bad_records=skip, no text, no label) go into `read_log` for the data report."""
    d, tasks = cfg.data, cfg.task.tasks
    df = read_table(path, key)
    cols = {"data.text_column": d.text_column, "data.text_pair_column": d.text_pair_column}
    cols.update({f"task.tasks.{n}.label_column": tasks[n].label_column for n in src.subtasks})
    require_columns(df, cols, path)
    read_log.read[path] = len(df)
    cells = {d.text_column: ("data.text_column", "text")}
    if d.text_pair_column:
        cells[d.text_pair_column] = ("data.text_pair_column", "text")
    skipped: list | None = [] if d.bad_records == "skip" else None
    df = check_cells(df, cells, path, skipped)
    read_log.skip(path, skipped or [])
    texts = {d.text_column: "text", **({d.text_pair_column: "text pair"} if d.text_pair_column else {})}
    df, left_out = drop_empty(df, texts, path)
    out = df[list(texts)].copy()
    group = d.split.group_column
    if group and not (src.validation and src.test):  # only needed where this source is split
        require_columns(df, {"data.split.group_column": group}, path)
        out["__group__"] = df[group]
    any_label = np.zeros(len(df), dtype=bool)
    for n in src.subtasks:
        s = tasks[n]
        values = [
            multi_label(v, s.label_separator) if s.problem == "multi_label" else single_label(v)
            for v in df[s.label_column]
        ]
        out[s.label_column] = pd.Series(values, index=df.index, dtype=object)
        any_label |= np.array([v is not None for v in values], dtype=bool)
    columns = ", ".join(f"'{tasks[n].label_column}'" for n in src.subtasks)
    out, unlabelled = drop_rows(out, ~any_label, f"no label for any of its sub-tasks (columns {columns})", path)
    read_log.left_out.extend(left_out + unlabelled)
    if len(out) == 0:
        raise DataError(f"{path}: no rows with a text and a label for {', '.join(src.subtasks)}")
    return out


@dataclass(frozen=True)
class LabelColumn:
    """Where one head's labels come from: its sub-task's name, column and label names (in id order), and the
    separator of a multi-label cell (None: the sub-task is single-label)."""

    name: str
    column: str
    names: list[str]
    separator: str | None = None


def label_vector(cells: Any, heads: list[LabelColumn], source: str) -> list[float]:
    """A row's labels side by side in the heads' order (the layout of tuneforge.kernels.multitask): a single-label
    head's class id, a multi-label head's 0/1 per class, IGNORE where the row has no label for the head. `cells`
    is the row (a pandas row or a dict; a missing column is no label); its cells are normalised as `read_source`
    does. Raises DataError for a label not among the head's names."""
    out: list[float] = []
    for h in heads:
        if h.separator is None:
            label = single_label(cells.get(h.column))
            _known(h, [] if label is None else [label], source)
            out.append(IGNORE if label is None else float(h.names.index(label)))
        else:
            labels = multi_label(cells.get(h.column), h.separator)
            _known(h, labels or (), source)
            out += [IGNORE] * len(h.names) if labels is None else [1.0 if n in labels else 0.0 for n in h.names]
    return out


def _known(head: LabelColumn, labels, source: str) -> None:
    unknown = [x for x in labels if x not in head.names]
    if unknown:
        raise DataError(
            f"{source}: sub-task {head.name}: label '{unknown[0]}' was never seen in training "
            f"(known labels: {', '.join(head.names)})"
        )


def strata(df: pd.DataFrame, cfg: RunConfig, src: Source) -> pd.Series:
    """A stratification key per row: its single-label sub-task labels (or a mark for none), joined."""
    parts = []
    for n in src.subtasks:
        s = cfg.task.tasks[n]
        if s.problem == "single_label":
            parts.append(df[s.label_column].map(lambda v: "\u2205" if v is None else v))
    if not parts:
        return pd.Series(["all"] * len(df), index=df.index)
    key = parts[0].astype(str)
    for p in parts[1:]:
        key = key + "\u241f" + p.astype(str)
    return key


def split_off(df: pd.DataFrame, frac: float | int, seed: int, what: str, cfg: RunConfig, src: Source):
    """(rest, part) with `frac` of the rows (a fraction, or a count when int) in `part`, stratified by labels
    (or grouped by data.split.group_column)."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    if frac <= 0:
        return df, None
    sp = cfg.data.split
    if sp.group_column:
        gss = GroupShuffleSplit(n_splits=1, test_size=frac, random_state=seed)
        a, b = next(gss.split(df, groups=df["__group__"].astype(str)))
        return df.iloc[a], df.iloc[b]
    key = strata(df, cfg, src) if sp.stratify else None
    if key is not None and key.value_counts().min() < 2:
        key = None  # a label combination with one row cannot be stratified
    try:
        a, b = train_test_split(df, test_size=frac, random_state=seed, stratify=key)
    except ValueError as exc:
        raise DataError(f"{src.path}: cannot split off the {what} set: {exc}") from None
    return a, b


def read_and_split(cfg: RunConfig, src: Source, seed: int, read_log: ReadLog) -> SourceSplit:
    """The source's files read (what they held and left out into `read_log`) and split: the held-out splits from
    its own files, else split off its training file (test first, then validation), then data.max_train_samples."""
    d = cfg.data
    train = read_source(cfg, src, src.path, src.key, read_log)
    val = (
        read_source(cfg, src, src.validation, src.key.replace(".train", ".validation"), read_log)
        if src.validation
        else None
    )
    test = read_source(cfg, src, src.test, src.key.replace(".train", ".test"), read_log) if src.test else None
    if test is None:
        train, test = split_off(train, d.split.test, seed, "test", cfg, src)
    if val is None and d.split.validation > 0:
        train, val = split_off(
            train,
            d.split.validation / (1.0 - (d.split.test if not src.test else 0.0)),
            seed + 1,
            "validation",
            cfg,
            src,
        )
    if d.max_train_samples and d.max_train_samples < len(train):
        _, train = split_off(train, d.max_train_samples, seed + 2, "sample", cfg, src)
    if len(train) == 0:
        raise DataError(f"{src.path}: no training rows left after splitting")
    return SourceSplit(src, train, val, test)


def label_names(cfg: RunConfig, name: str, train: list) -> list[str]:
    """A sub-task's label names in id order: task.tasks.<name>.labels, else sorted (numbers numerically)."""
    s = cfg.task.tasks[name]
    if s.labels:
        return list(s.labels)
    if s.problem == "multi_label":
        values = sorted({x for v in train if v is not None for x in v})
    else:
        values = sorted({v for v in train if v is not None})
    if values and all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return values


def check_labels(cfg: RunConfig, name: str, names: list[str], splits: dict[str, list]) -> None:
    """Raises DataError for a sub-task without labelled training rows, a single-label sub-task with one class, or
    labels that training never saw."""
    s = cfg.task.tasks[name]
    train = [v for v in splits["train"] if v is not None]
    if not train:
        raise DataError(f"task.tasks.{name}: no training row has a label in column '{s.label_column}'")
    seen = {x for v in train for x in (v if s.problem == "multi_label" else [v])}
    if s.problem == "single_label" and len(seen) < 2:
        raise DataError(
            f"task.tasks.{name}: the training rows have a single class ('{next(iter(seen))}'); "
            f"a classification sub-task needs at least two"
        )
    unknown = sorted(seen - set(names))
    if unknown:
        raise DataError(f"task.tasks.{name}.labels does not list the training labels {unknown[:5]}")
    for split in ("validation", "test"):
        extra = sorted(
            {x for v in splits.get(split) or [] if v is not None for x in (v if s.problem == "multi_label" else [v])}
            - set(names)
        )
        if extra:
            raise DataError(
                f"task.tasks.{name}: the {split} split has labels never seen in training: {extra[:5]} "
                f"(training labels: {names[:10]}); add training examples of them or leave them out"
            )
