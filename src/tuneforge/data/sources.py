"""Reading tabular records: csv/tsv/json/jsonl/parquet/txt files, directories saved by `datasets`, and builtin
data sets (builtin_sets.py); every failure is one DataError line naming the file. Checking the columns and cells
of what was read is columns.py."""

from __future__ import annotations

import csv
import inspect
import json
from pathlib import Path

import pandas as pd

from tuneforge.data.builtin_sets import BUILTIN_DATA
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
        # generated sets take options after '?' (builtin:arithmetic?n=500&steps=2)
        name, ask, query = source.split(":", 1)[1].partition("?")
        if name not in BUILTIN_DATA:
            raise DataError(
                f"unknown builtin data '{source}'{closest(source, ['builtin:' + n for n in BUILTIN_DATA])}; "
                f"available: {', '.join('builtin:' + n for n in BUILTIN_DATA)}"
            )
        reader = BUILTIN_DATA[name][0]
        if not ask:
            return reader()
        if "options" not in inspect.signature(reader).parameters:
            raise DataError(f"builtin:{name} takes no options (after '?'): {source}")
        return reader(query)
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
