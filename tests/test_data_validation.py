"""Reading and validating data: malformed files and cells become one-line DataErrors naming the file, line or
row and column; data.bad_records=skip; column guessing for `tuneforge data inspect FILE`."""

import json

import pandas as pd
import pytest

from tuneforge.data.columns import check_cells, guess_columns
from tuneforge.data.sft_formats import parse_records
from tuneforge.data.sources import read_table
from tuneforge.errors import DataError

from conftest import make_sentiment_rows

pytestmark = pytest.mark.unit


def test_empty_source_names_the_key():
    with pytest.raises(DataError, match=r"^data.train is empty"):
        read_table("", "data.train")
    with pytest.raises(DataError, match=r"^data.validation is empty"):
        read_table("  ", "data.validation")


def test_ragged_csv_names_the_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('text,label\n"a, quoted comma",pos\nplain,neg\nan unquoted, comma,pos\n')
    with pytest.raises(DataError, match=r"d.csv: malformed csv: line 4 has 3 fields, the header has 2"):
        read_table(str(p))


def test_quoted_multiline_and_blank_lines_are_fine(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('text,label\n"two\nlines",pos\n\nplain,neg\n')
    assert read_table(str(p))["label"].tolist() == ["pos", "neg"]


def test_not_utf8_names_the_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(b"text,label\n" + b"good film,pos\n" * 2000 + b"caf\xe9,neg\n")
    with pytest.raises(DataError, match=r"d.csv: cannot be read as UTF-8 \(line 2002, byte 28014\)"):
        read_table(str(p))


def test_utf8_bom_is_not_part_of_the_first_column(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes("text,label\ngood,pos\n".encode("utf-8-sig"))
    assert list(read_table(str(p)).columns) == ["text", "label"]


def test_jsonl_invalid_line_is_named(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": }\n')
    with pytest.raises(DataError, match=r"d.jsonl: line 3 is not valid JSON"):
        read_table(str(p))


def test_parquet_list_labels_and_bytes_texts(tmp_path):
    p = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["a b", "c d"], "label": [["x"], ["y", "z"]]}).to_parquet(p)
    df = read_table(str(p))
    with pytest.raises(
        DataError,
        match=r"d.parquet: row 1: column 'label' \(data.label_column\) holds a list.*"
        r"data.bad_records=skip",
    ):
        check_cells(df, {"label": ("data.label_column", "label")}, str(p))
    p2 = tmp_path / "b.parquet"
    pd.DataFrame({"text": [b"caf\xc3\xa9", b"\xff bad"], "label": ["x", "y"]}).to_parquet(p2)
    df = read_table(str(p2))
    with pytest.raises(
        DataError,
        match=r"b.parquet: row 2: column 'text' \(data.text_column\) holds bytes that are "
        r"not UTF-8",
    ):
        check_cells(df, {"text": ("data.text_column", "text")}, str(p2))
    skipped = []
    out = check_cells(df, {"text": ("data.text_column", "text")}, str(p2), skipped)
    assert out["text"].tolist() == ["caf\u00e9"]  # UTF-8 bytes are decoded
    assert [n for n, _ in skipped] == [2]


def test_sft_numbers_become_text_and_are_reported():
    rows = [
        {"messages": [{"role": "user", "content": "two plus three"}, {"role": "assistant", "content": 5}]},
        {
            "instruction_is_absent": 1,
            "messages": [{"role": "user", "content": "pi"}, {"role": "assistant", "content": 3.0}],
        },
    ]
    numbers = []
    _, recs = parse_records(pd.DataFrame(rows), "messages", "d.jsonl", numbers=numbers)
    assert [r[1]["content"] for r in recs] == ["5", "3"]
    assert numbers == [
        "d.jsonl: record 1: field 'messages'[1].content",
        "d.jsonl: record 2: field 'messages'[1].content",
    ]


def test_sft_bad_records_error_names_the_option_and_skip_lists_them():
    rows = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}] * 3
    rows.insert(1, {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": ""}]})
    df = pd.DataFrame(rows)
    with pytest.raises(
        DataError,
        match=r"record 2: field 'conversations'\[1\].value is empty "
        r"\(or set data.bad_records=skip",
    ):
        parse_records(df, "auto", "d.jsonl")
    skipped = []
    fmt, recs = parse_records(df, "auto", "d.jsonl", skipped=skipped)
    assert fmt == "sharegpt" and len(recs) == 3
    assert skipped == [(2, "d.jsonl: record 2: field 'conversations'[1].value is empty")]


def test_guess_columns():
    rows = make_sentiment_rows(40)
    df = pd.DataFrame(
        {
            "id": range(40),
            "review": [r["text"] + " and more words" for r in rows],
            "title": ["film"] * 40,
            "stars": [i % 5 for i in range(40)],
            "sentiment": [r["label"] for r in rows],
        }
    )
    got = guess_columns(df, "text", "label")
    assert got["data.text_column"][0] == "review"
    assert got["data.label_column"][0] == "sentiment"
    assert guess_columns(df, "review", "stars") == {}  # configured columns that exist are kept


def test_inspect_file_guesses_and_says_so(tmp_path, tiny_bert, capsys):
    from tuneforge.cli.app import main

    rows = make_sentiment_rows(60)
    p = tmp_path / "reviews.csv"
    pd.DataFrame(
        {
            "movie_id": [i // 3 for i in range(60)],
            "body": [r["text"] for r in rows],
            "verdict": [r["label"] for r in rows],
        }
    ).to_csv(p, index=False)
    code = main(
        [
            "data",
            "inspect",
            str(p),
            f"model.name={tiny_bert}",
            "data.clean.label_noise=none",
            "--out",
            str(tmp_path / "rep"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "using 'body' as data.text_column" in out and "set data.text_column=<column>" in out
    assert "using 'verdict' as data.label_column" in out and "set data.label_column=<column>" in out
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "## Columns (guessed)" in report and "'verdict'" in report
    assert set(json.loads((tmp_path / "rep" / "report.json").read_text())["before"]["classes"]) == {
        "negative",
        "positive",
    }
    # an explicit column is never overridden by a guess; the other one is still guessed
    code = main(
        [
            "data",
            "inspect",
            str(p),
            f"model.name={tiny_bert}",
            "data.text_column=body",
            "data.clean.label_noise=none",
            "--out",
            str(tmp_path / "rep2"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "as data.text_column" not in out and "using 'verdict' as data.label_column" in out
