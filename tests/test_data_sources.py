import json

import pandas as pd
import pytest

from tuneforge.data.columns import require_columns
from tuneforge.data.sources import read_table
from tuneforge.errors import DataError

from conftest import make_sentiment_rows

pytestmark = pytest.mark.unit


@pytest.fixture
def frame():
    return pd.DataFrame(make_sentiment_rows(20))


@pytest.mark.parametrize("suffix", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_every_file_format_reads(tmp_path, frame, suffix):
    p = tmp_path / f"d.{suffix}"
    if suffix == "csv":
        frame.to_csv(p, index=False)
    elif suffix == "tsv":
        frame.to_csv(p, sep="\t", index=False)
    elif suffix == "json":
        p.write_text(json.dumps(frame.to_dict(orient="records")))
    elif suffix == "jsonl":
        frame.to_json(p, orient="records", lines=True)
    else:
        frame.to_parquet(p)
    got = read_table(str(p))
    assert got[["text", "label"]].to_dict(orient="records") == frame.to_dict(orient="records")


def test_datasets_directory(tmp_path, frame):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_pandas(frame)}).save_to_disk(str(tmp_path / "dd"))
    assert len(read_table(str(tmp_path / "dd"))) == 20


def test_builtin_rotten_tomatoes():
    df = read_table("builtin:rotten-tomatoes")
    counts = df["label"].value_counts().to_dict()
    assert counts == {"positive": 7403, "negative": 5405}  # `plot` rows dropped
    assert {"text", "label", "movie_name"} <= set(df.columns)


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "data file not found"),
        (b"", "the file is empty"),
        (b"text,label\n", "contains no rows"),
        ("text,label\ncaf\xe9 bien,1\n".encode("latin-1"), "cannot be read as UTF-8"),
    ],
)
def test_unreadable_files(tmp_path, content, expected):
    p = tmp_path / "x.csv"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(DataError, match=expected):
        read_table(str(p))


def test_unknown_builtin_and_suffix(tmp_path):
    with pytest.raises(DataError, match="did you mean 'builtin:rotten-tomatoes'"):
        read_table("builtin:rotten-tomato")
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        read_table(str(tmp_path / "x.xlsx"))


def test_missing_column_lists_available(frame):
    with pytest.raises(DataError) as exc:
        require_columns(frame, {"data.text_column": "txt"}, "d.csv")
    assert "no column 'txt' (set by data.text_column) (did you mean 'text'?)" in str(exc.value)
    assert "available columns: text, label" in str(exc.value)
