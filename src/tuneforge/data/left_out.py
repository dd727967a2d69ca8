"""Rows that never reach training, each with its reason, for the run's data report. Nothing is dropped silently:
a row without a text or a label is left out (it has nothing to learn from), counted in the log and listed in
data/report.md and data/report.json, the record a user keeps; so is a record data.bad_records=skip leaves out."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

log = logging.getLogger("tuneforge")


def _empty(value) -> bool:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return True
    try:
        if pd.isna(value):
            return True
    except (TypeError, ValueError):  # list-like cells: pd.isna answers element-wise
        pass
    return isinstance(value, str) and not value.strip()


def _records(df: pd.DataFrame, problems: dict[int, str], source: str) -> list[dict]:
    """One record per row position in `problems`, in row order, named by its row number in the source counted from 1
    (the row's index + 1), as `data.columns.check_cells` names the records data.bad_records=skip leaves out."""
    return [
        {"source": source, "record": int(idx) + 1 if isinstance(idx, (int, np.integer)) else str(idx), "problem": p}
        for pos, p in sorted(problems.items())
        for idx in [df.index[pos]]
    ]


def drop_empty(df: pd.DataFrame, columns: dict[str, str], source: str) -> tuple[pd.DataFrame, list[dict]]:
    """`df` without the rows whose cell in any of `columns` ({column: what it holds, e.g. "text"}) is missing or only
    whitespace, and one record per row left out: {"source", "record" (its row number in the source, from 1),
    "problem" ("empty text (column 'review')")}. Logs one line with the count when any is left out."""
    keep = np.ones(len(df), dtype=bool)
    problems: dict[int, str] = {}
    for column, what in columns.items():
        empty = np.fromiter((_empty(v) for v in df[column]), dtype=bool, count=len(df))
        for pos in np.flatnonzero(empty & keep):
            problems[int(pos)] = f"empty {what} (column '{column}')"
        keep &= ~empty
    left_out = _records(df, problems, source)
    if left_out:
        log.warning(
            "%s: left out %d of %d rows with an empty %s (listed in the run's data/report.md)",
            source,
            len(left_out),
            len(df),
            " or ".join(dict.fromkeys(columns.values())),
        )
    return df[keep], left_out


def drop_rows(df: pd.DataFrame, drop: np.ndarray, problem: str, source: str) -> tuple[pd.DataFrame, list[dict]]:
    """`df` without the rows where `drop` is True, and one record per row left out with `problem` as its reason
    (records as `drop_empty` makes them). Logs one line with the count when any is left out."""
    left_out = _records(df, {int(pos): problem for pos in np.flatnonzero(drop)}, source)
    if left_out:
        log.warning(
            "%s: left out %d of %d rows: %s (listed in the run's data/report.md)",
            source,
            len(left_out),
            len(df),
            problem,
        )
    return df[~drop], left_out


def reasons(records: list[dict]) -> dict[str, int]:
    """How many records each problem left out, most frequent first."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r["problem"]] = counts.get(r["problem"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


@dataclass
class ReadLog:
    """What reading a run's data files did, file by file, for its data report (`report()`): the rows each file
    held, the records data.bad_records=skip left out and the rows left out with nothing to learn from (each record
    {"source", "record", "problem"})."""

    read: dict[str, int] = field(default_factory=dict)  # rows read per file, before anything is left out
    skipped: list[dict] = field(default_factory=list)  # data.bad_records=skip
    left_out: list[dict] = field(default_factory=list)  # an empty text or label

    def skip(self, source: str, skipped: list[tuple[int, str]]) -> None:
        """Keep the `(record, message)` pairs `data.columns.check_cells` left out of `source`; logs one line."""
        if not skipped:
            return
        log.warning(
            "%s: data.bad_records=skip: left out %d rows that cannot be used (first: %s)",
            source,
            len(skipped),
            skipped[0][1],
        )
        self.skipped.extend({"source": source, "record": n, "problem": msg} for n, msg in skipped)

    def report(self) -> dict:
        """The data report's entries: `read`, `left_out` and, when records were skipped, `bad_records`."""
        out: dict = {"read": dict(self.read), "left_out": list(self.left_out)}
        if self.skipped:
            out["bad_records"] = {"policy": "skip", "records": list(self.skipped)}
        return out
