"""Rows that never reach training (an empty or whitespace-only text, a missing label) are counted with their reason
and listed in data/report.md and report.json, in the files a user keeps, for the training, validation and test
files alike: a run's data report and `tuneforge data inspect`'s (issue 33: they used to leave one console line)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_sentiment_rows, tiny_config

pytestmark = pytest.mark.integration


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    """A training file with 2 empty texts, 1 whitespace-only text and 2 missing labels among 60 rows, and a
    validation file with 1 missing label among 12."""
    train = make_sentiment_rows(60)
    for i in (3, 41):
        train[i]["text"] = ""
    train[10]["text"] = "   "
    for i in (17, 52):
        train[i]["label"] = None
    val = make_sentiment_rows(12, seed=1)
    val[4]["label"] = None
    out = {}
    for name, rows in (("train", train), ("validation", val)):
        out[name] = str(tmp_path / f"{name}.csv")
        pd.DataFrame(rows).to_csv(out[name], index=False)
    return out


def _check(md: str, report: dict, files: dict[str, str]) -> None:
    train, val = files["train"], files["validation"]
    assert f"Read: {train}: 60 rows (5 left out, see below); {val}: 12 rows (1 left out, see below)" in md, md
    assert "## Rows left out" in md and "6 rows had nothing to learn from" in md, md
    assert "| empty text (column 'text') | 3 |" in md, md
    assert "| empty label (column 'label') | 3 |" in md, md
    # rows are numbered from 1 in the file, as the bad records of data.bad_records=skip are
    for source, record, problem in (
        (train, 4, "text"),
        (train, 11, "text"),
        (train, 42, "text"),
        (train, 18, "label"),
        (train, 53, "label"),
        (val, 5, "label"),
    ):
        assert f"| {source} | {record} | empty {problem} (column '{problem}') |" in md, md
    assert report["read"] == {train: 60, val: 12}
    listed = {(r["source"], r["record"], r["problem"]) for r in report["left_out"]}
    assert listed == {
        (train, 4, "empty text (column 'text')"),
        (train, 11, "empty text (column 'text')"),
        (train, 42, "empty text (column 'text')"),
        (train, 18, "empty label (column 'label')"),
        (train, 53, "empty label (column 'label')"),
        (val, 5, "empty label (column 'label')"),
    }


def test_a_run_lists_the_rows_it_left_out(files, tiny_bert, tmp_path, caplog):
    import tuneforge
    from tuneforge.config import load_config

    raw = tiny_config(tiny_bert, files["train"], str(tmp_path / "run"), method="full")
    raw["data"].update(validation=files["validation"], clean={"label_noise": "none"})
    raw["train"].update({"max_steps": 1, "eval_strategy": "no"})
    res = tuneforge.train(load_config(raw=raw))
    data = Path(res.run_dir) / "data"
    report = json.loads((data / "report.json").read_text())
    _check((data / "report.md").read_text(), report, files)
    assert report["before"]["rows"] + report["test"]["rows"] == 55  # the splits count the rows that remained
    assert f"{files['train']}: left out 5 of 60 rows with an empty text or label" in caplog.text


def test_data_inspect_lists_the_rows_it_left_out(files, tiny_bert, tmp_path):
    from tuneforge.cli.app import main

    out = tmp_path / "rep"
    args = [f"data.validation={files['validation']}", f"model.name={tiny_bert}", "data.clean.label_noise=none"]
    assert main(["data", "inspect", files["train"], *args, "--out", str(out)]) == 0
    _check((out / "report.md").read_text(), json.loads((out / "report.json").read_text()), files)
