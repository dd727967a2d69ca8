"""Rows that never reach training, each with its reason, for the run's data report. Nothing is dropped silently:
a row without a text or a label is left out (it has nothing to learn from), counted in the log and listed in
data/report.md and data/report.json, the record a user keeps."""

from __future__ import annotations

import logging

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


def drop_empty(df: pd.DataFrame, columns: dict[str, str], source: str) -> tuple[pd.DataFrame, list[dict]]:
    """`df` without the rows whose cell in any of `columns` ({column: what it holds, e.g. "text"}) is missing or only
    whitespace, and one record per row left out: {"source", "record" (the row's index, its number in the source),
    "problem" ("empty text (column 'review')")}. Logs one line with the count when any is left out."""
    keep = np.ones(len(df), dtype=bool)
    problems: dict[int, str] = {}
    for column, what in columns.items():
        empty = np.fromiter((_empty(v) for v in df[column]), dtype=bool, count=len(df))
        for pos in np.flatnonzero(empty & keep):
            problems[int(pos)] = f"empty {what} (column '{column}')"
        keep &= ~empty
    left_out = [
        {"source": source, "record": int(idx) if isinstance(idx, (int, np.integer)) else str(idx), "problem": p}
        for pos, p in sorted(problems.items())
        for idx in [df.index[pos]]
    ]
    if left_out:
        log.warning(
            "%s: left out %d of %d rows with an empty %s (listed in the run's data/report.md)",
            source,
            len(left_out),
            len(df),
            " or ".join(dict.fromkeys(columns.values())),
        )
    return df[keep], left_out


def reasons(records: list[dict]) -> dict[str, int]:
    """How many records each problem left out, most frequent first."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r["problem"]] = counts.get(r["problem"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
