"""A table's columns and cells: the configured columns must exist (require_columns), every cell must be usable
as a text or a label (check_cells), and a table without the configured columns gets a guess (guess_columns)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tuneforge.errors import DataError
from tuneforge.registry import closest


def require_columns(df: pd.DataFrame, columns: dict[str, str | None], source: str) -> None:
    """`columns` maps config key -> column name; a missing column names the key and lists what exists."""
    for key, col in columns.items():
        if col is not None and col not in df.columns:
            available = ", ".join(map(str, df.columns))
            raise DataError(
                f"{source}: no column '{col}' (set by {key}){closest(col, df.columns)}; available columns: {available}"
            )


def skip_hint() -> str:
    """What a record-level DataError adds: the option that leaves such records out."""
    return "(or set data.bad_records=skip to leave such records out)"


def _describe(v) -> str:
    text = repr(v.tolist() if hasattr(v, "tolist") and not isinstance(v, (str, bytes)) else v)
    return text if len(text) <= 32 else text[:31] + "\u2026"


def _bad_cell(v, kind: str) -> tuple[object, str | None]:
    """(value to use, None) or (None, why the cell cannot be used). `kind`: text or label."""
    if v is None or isinstance(v, str):
        return v, None
    if isinstance(v, (bytes, bytearray)):
        try:
            return bytes(v).decode("utf-8"), None
        except UnicodeDecodeError as exc:
            return None, f"holds bytes that are not UTF-8 text (byte {exc.start})"
    if isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating)):
        return v, None
    name = "list" if isinstance(v, (list, tuple, np.ndarray)) else type(v).__name__
    if kind == "label":
        extra = " (multi-label classification is not supported)" if name == "list" else ""
        return None, f"holds a {name} {_describe(v)}, not one label{extra}"
    return None, f"holds a {name} {_describe(v)}, not a text"


def check_cells(
    df: pd.DataFrame, columns: dict[str, tuple[str, str]], source: str, skipped: list | None = None
) -> pd.DataFrame:
    """Make the cells of the given columns usable: `columns` maps column -> (config key, `text`|`label`).

    Bytes (a parquet binary column) are decoded as UTF-8; numbers stay numbers. A cell that cannot be used (a
    list or mapping, bytes that are not UTF-8) is a DataError naming the file, row, column and config key, or,
    when `skipped` is a list (data.bad_records=skip), its row is left out and `(row, message)` appended."""
    bad_rows: dict[int, str] = {}
    for col, (key, kind) in columns.items():
        values = df[col].tolist()
        if all(v is None or isinstance(v, str) or (isinstance(v, float) and v != v) for v in values):
            continue  # the common case: plain strings and missing values
        fixed = []
        for i, v in enumerate(values):
            value, why = _bad_cell(v, kind)
            if why is not None:
                msg = f"{source}: row {i + 1}: column '{col}' ({key}) {why}"
                if skipped is None:
                    raise DataError(f"{msg} {skip_hint()}")
                bad_rows.setdefault(i, msg)
            fixed.append(value)
        df = _assign(df, col, fixed)
    if bad_rows:
        skipped.extend((i + 1, msg) for i, msg in sorted(bad_rows.items()))
        df = df.drop(index=df.index[sorted(bad_rows)])
    return df


def _assign(df: pd.DataFrame, col, values) -> pd.DataFrame:
    df = df.copy()
    df[col] = pd.Series(values, index=df.index, dtype=object)
    return df


TEXT_NAMES = (
    "text",
    "sentence",
    "review",
    "content",
    "body",
    "comment",
    "document",
    "utterance",
    "message",
    "question",
    "tweet",
    "description",
    "title",
)
LABEL_NAMES = (
    "label",
    "labels",
    "class",
    "category",
    "sentiment",
    "target",
    "y",
    "intent",
    "tag",
    "topic",
    "rating",
    "stars",
    "polarity",
    "emotion",
)


def _hint(name, names) -> bool:
    n = str(name).lower().replace("-", "_")
    return n in names or any(n.startswith(h + "_") or n.endswith("_" + h) for h in names)


def guess_columns(df: pd.DataFrame, text_column: str | None, label_column: str | None) -> dict[str, tuple[str, str]]:
    """For a table without the configured text/label columns, guess them: the text column is the string column
    with the longest texts (names such as review/sentence/content first), the label column a low-cardinality
    column (2 to min(50, rows/2) distinct values; names such as label/class/sentiment first).

    Returns {"data.text_column": (column, why), "data.label_column": (column, why)} for what it could guess;
    a configured column that exists is kept (not returned)."""
    out: dict[str, tuple[str, str]] = {}
    n = len(df)
    stats = {}
    for c in df.columns:
        values = df[c].dropna()
        if len(values) == 0:
            continue
        sample = values.iloc[: min(len(values), 2000)]
        hashable = all(not isinstance(v, (list, dict, np.ndarray, bytes, bytearray)) for v in sample)
        strings = sum(isinstance(v, str) for v in sample) / len(sample)
        mean_len = float(sample.map(lambda v: len(v) if isinstance(v, str) else 0).mean())
        words = float(sample.map(lambda v: len(v.split()) if isinstance(v, str) else 0).mean())
        nunique = int(values.nunique()) if hashable else -1
        stats[c] = {"strings": strings, "mean_len": mean_len, "words": words, "nunique": nunique}
    text = text_column if text_column in df.columns else None
    if text is None:
        cands = [c for c, s in stats.items() if s["strings"] >= 0.9 and s["words"] >= 2]
        if cands:
            text = max(cands, key=lambda c: (_hint(c, TEXT_NAMES), stats[c]["mean_len"]))
            s = stats[text]
            out["data.text_column"] = (
                text,
                f"free text, {s['mean_len']:.0f} characters / {s['words']:.1f} words on average",
            )
    if label_column not in df.columns:
        limit = max(2, min(50, n // 2))
        cands = [
            c
            for c, s in stats.items()
            if c != text and 2 <= s["nunique"] <= limit and (s["strings"] < 0.9 or s["words"] <= 3)
        ]
        if cands:
            label = max(cands, key=lambda c: (_hint(c, LABEL_NAMES), -stats[c]["nunique"]))
            out["data.label_column"] = (label, f"{stats[label]['nunique']} distinct values in {n} rows")
    return out
