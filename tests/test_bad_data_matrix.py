"""The bad-data matrix: many kinds of broken training files, each through `tuneforge train` in-process.

Every case either fails with exactly one stderr line `error: ...` (exit code 3, a DataError, never the generic
`error: <ExceptionType>: ...` fallback) before any training starts, or is a documented successful treatment
(bytes decoded as UTF-8, numbers as message content, data.bad_records=skip, ...) trained for one step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sft_common import chat_rows, make_tiny_llama

from conftest import make_sentiment_rows, tiny_config

pytestmark = pytest.mark.integration

GENERIC = re.compile(r"^error: [A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Interrupt|Warning)?: ")


# ---- writers -------------------------------------------------------------------------------------------------
def rows(n: int = 40) -> list[dict]:
    return make_sentiment_rows(n)


def write(path: Path, data, kind: str | None = None) -> str:
    """Write `data` (a list of dicts, a DataFrame, str or bytes) as the file type of `path`'s suffix."""
    kind = kind or path.suffix.lstrip(".")
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), encoding="utf-8")
    elif kind == "json":
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    else:
        df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        if kind == "parquet":
            df.to_parquet(path, index=False)
        else:
            df.to_csv(path, index=False, sep="\t" if kind == "tsv" else ",")
    return str(path)


def dup_parquet(path: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    r = rows()
    pq.write_table(
        pa.table(
            [pa.array([x["text"] for x in r]), pa.array([x["label"] for x in r]), pa.array([x["label"] for x in r])],
            names=["text", "label", "label"],
        ),
        path,
    )
    return str(path)


def bytes_parquet(path: Path, utf8: bool) -> str:
    r = rows()
    texts = [x["text"].encode("utf-8") for x in r]
    if not utf8:
        texts[5] = b"caf\xe9 film good"  # latin-1, not UTF-8
    pd.DataFrame({"text": texts, "label": [x["label"] for x in r]}).to_parquet(path, index=False)
    return str(path)


def list_labels(r: list[dict], every: int = 1) -> list[dict]:
    return [{**x, "label": [x["label"], "other"]} if i % every == 0 else x for i, x in enumerate(r)]


def ragged_csv(path: Path, first: bool) -> str:
    lines = ["text,label"] + [f"{x['text']},{x['label']}" for x in rows()]
    i = 1 if first else 7
    lines[i] = "a good, brilliant film,positive"  # an unquoted comma inside the text
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def csv_text(r: list[dict], sep: str = ",") -> str:
    return "\n".join([f"text{sep}label"] + [f"{x['text']}{sep}{x['label']}" for x in r]) + "\n"


# (id, build(tmp) -> data path, extra config, expectation): "ok" or a list of substrings of the error line
CLS_CASES = [
    ("missing-file", lambda t: str(t / "nope.csv"), {}, ["data file not found", "nope.csv"]),
    ("empty-csv", lambda t: write(t / "d.csv", ""), {}, ["the file is empty"]),
    ("empty-tsv", lambda t: write(t / "d.tsv", ""), {}, ["the file is empty"]),
    ("empty-json", lambda t: write(t / "d.json", ""), {}, ["the file is empty"]),
    ("empty-jsonl", lambda t: write(t / "d.jsonl", ""), {}, ["the file is empty"]),
    ("empty-parquet", lambda t: write(t / "d.parquet", b""), {}, ["the file is empty"]),
    ("blank-lines-jsonl", lambda t: write(t / "d.jsonl", "\n\n  \n"), {}, ["contains no rows"]),
    ("header-only-csv", lambda t: write(t / "d.csv", "text,label\n"), {}, ["contains no rows"]),
    ("header-only-tsv", lambda t: write(t / "d.tsv", "text\tlabel\n"), {}, ["contains no rows"]),
    ("empty-json-list", lambda t: write(t / "d.json", "[]"), {}, ["contains no rows"]),
    ("empty-train-key", lambda t: "", {}, ["data.train is empty"]),
    (
        "not-a-datasets-dir",
        lambda t: (t / "somedir").mkdir() or str(t / "somedir"),
        {},
        ["not a directory saved by `datasets`"],
    ),
    ("unsupported-suffix", lambda t: write(t / "d.xlsx", b"PK\x03\x04"), {}, ["unsupported file type '.xlsx'"]),
    (
        "wrong-text-column-csv",
        lambda t: write(t / "d.csv", pd.DataFrame(rows()).rename(columns={"text": "review"})),
        {},
        ["no column 'text'", "data.text_column", "review"],
    ),
    (
        "wrong-label-column-jsonl",
        lambda t: write(t / "d.jsonl", [{"text": x["text"], "y": x["label"]} for x in rows()]),
        {},
        ["no column 'label'", "data.label_column"],
    ),
    (
        "wrong-label-column-parquet",
        lambda t: write(t / "d.parquet", rows()),
        {"data__label_column": "sentiment"},
        ["no column 'sentiment'", "data.label_column"],
    ),
    (
        "one-class-csv",
        lambda t: write(t / "d.csv", [{**x, "label": "positive"} for x in rows()]),
        {},
        ["single class", "positive"],
    ),
    ("one-class-parquet", lambda t: write(t / "d.parquet", [{**x, "label": 1} for x in rows()]), {}, ["single class"]),
    (
        "all-empty-texts-jsonl",
        lambda t: write(t / "d.jsonl", [{**x, "text": "  "} for x in rows()]),
        {},
        ["no rows with both a text and a label", "empty texts"],
    ),
    (
        "all-empty-texts-csv",
        lambda t: write(t / "d.csv", [{**x, "text": ""} for x in rows()]),
        {},
        ["no rows with both a text and a label", "empty texts"],
    ),
    (
        "nan-labels-csv",
        lambda t: write(t / "d.csv", csv_text([{**x, "label": ""} for x in rows()])),
        {},
        ["no rows with both a text and a label", "missing labels"],
    ),
    (
        "nan-labels-parquet",
        lambda t: write(t / "d.parquet", [{**x, "label": None} for x in rows()]),
        {},
        ["no rows with both"],
    ),
    (
        "ragged-csv",
        lambda t: ragged_csv(t / "d.csv", first=False),
        {},
        ["malformed csv: line 8 has 3 fields, the header has 2"],
    ),
    ("ragged-csv-first-row", lambda t: ragged_csv(t / "d.csv", first=True), {}, ["malformed csv: line 2 has 3 fields"]),
    (
        "ragged-tsv-short-row",
        lambda t: write(t / "d.tsv", csv_text(rows(), "\t") + "just a text\n"),
        {},
        ["malformed tsv: line 42 has 1 fields, the header has 2"],
    ),
    (
        "latin1-csv",
        lambda t: write(t / "d.csv", csv_text(rows()).replace("good", "caf\u00e9").encode("latin-1")),
        {},
        ["cannot be read as UTF-8"],
    ),
    (
        "latin1-jsonl",
        lambda t: write(t / "d.jsonl", '{"text": "caf\u00e9", "label": "a"}\n'.encode("latin-1")),
        {},
        ["cannot be read as UTF-8"],
    ),
    ("garbage-csv", lambda t: write(t / "d.csv", bytes(range(256)) * 8), {}, ["d.csv"]),
    (
        "garbage-parquet",
        lambda t: write(t / "d.parquet", bytes(range(256)) * 8),
        {},
        ["d.parquet: could not be parsed"],
    ),
    ("garbage-json", lambda t: write(t / "d.json", bytes(range(1, 128)) * 8), {}, ["d.json"]),
    (
        "invalid-json-line",
        lambda t: write(
            t / "d.jsonl", "".join(json.dumps(x) + "\n" for x in rows()[:3]) + '{"text": "good film", "label": }\n'
        ),
        {},
        ["line 4 is not valid JSON"],
    ),
    (
        "jsonl-line-not-object",
        lambda t: write(t / "d.jsonl", '{"text": "a", "label": "b"}\n[1, 2]\n'),
        {},
        ["line 2 is a JSON list"],
    ),
    ("json-scalar", lambda t: write(t / "d.json", "42"), {}, ["single JSON int"]),
    ("json-list-of-strings", lambda t: write(t / "d.json", ["good film", "bad film"]), {}, ["item 1", "str"]),
    (
        "list-labels-parquet",
        lambda t: write(t / "d.parquet", list_labels(rows())),
        {},
        ["d.parquet: row 1: column 'label' (data.label_column) holds a list", "data.bad_records=skip"],
    ),
    (
        "list-labels-jsonl",
        lambda t: write(t / "d.jsonl", list_labels(rows(), every=7)),
        {},
        ["d.jsonl: row 1: column 'label'", "multi-label"],
    ),
    (
        "list-texts-jsonl",
        lambda t: write(t / "d.jsonl", [{**x, "text": x["text"].split()} for x in rows()]),
        {},
        ["column 'text' (data.text_column) holds a list"],
    ),
    (
        "bytes-text-parquet-not-utf8",
        lambda t: bytes_parquet(t / "d.parquet", utf8=False),
        {},
        ["d.parquet: row 6: column 'text' (data.text_column) holds bytes that are not UTF-8"],
    ),
    (
        "duplicated-columns-csv",
        lambda t: write(
            t / "d.csv", "text,label,label\n" + "".join(f"{x['text']},{x['label']},{x['label']}\n" for x in rows())
        ),
        {},
        ["'label' appears more than once"],
    ),
    ("duplicated-columns-parquet", lambda t: dup_parquet(t / "d.parquet"), {}, ["'label' appears more than once"]),
    (
        "label-only-in-held-out-split",
        lambda t: write(t / "d.csv", rows() + [{"text": "odd film", "label": "rare"}]),
        {"data__split": {"validation": 0.5, "test": 0.0, "seed": 3}},  # seed 3: the row is held out
        [
            "the label 'rare' has so few rows",
            "held out of data.train (data.split.validation)",
            "none is left to train on",
        ],
    ),
    (
        "validation-file-unseen-label",
        None,
        {},
        ["dev.csv (data.validation): the validation data has labels never seen in training: ['neutral']"],
    ),
    # documented successful treatments
    ("bytes-text-parquet-utf8", lambda t: bytes_parquet(t / "d.parquet", utf8=True), {}, "ok"),
    (
        "huge-single-row",
        lambda t: write(t / "d.jsonl", rows() + [{"text": "good film " * 100_000, "label": "positive"}]),
        {},
        "ok",
    ),
    (
        "some-nan-labels",
        lambda t: write(t / "d.csv", rows()[:36] + [{**x, "label": None} for x in rows()[36:]]),
        {},
        "ok",
    ),
    (
        "list-labels-skipped",
        lambda t: write(t / "d.jsonl", list_labels(rows(), every=10)),
        {"data__bad_records": "skip"},
        "ok",
    ),
]


def msgs(*turns, key="messages"):
    return {key: [{"role": a, "content": b} for a, b in turns]}


def good_messages(n: int = 20) -> list[dict]:
    return chat_rows(n)


def as_sharegpt(rows_):
    names = {"user": "human", "assistant": "gpt", "system": "system"}
    return [
        {"conversations": [{"from": names.get(m["role"], m["role"]), "value": m["content"]} for m in r["messages"]]}
        for r in rows_
    ]


def as_alpaca(rows_):
    return [
        {"instruction": r["messages"][0]["content"], "input": "", "output": r["messages"][1]["content"]} for r in rows_
    ]


def as_text(rows_):
    return [{"text": " ".join(m["content"] for m in r["messages"])} for r in rows_]


def with_bad(good, bad, at: int = 7):
    out = list(good)
    out.insert(at, bad)
    return out


SFT_CASES = [
    (
        "messages-empty-conversation",
        lambda: with_bad(good_messages(), {"messages": []}),
        {},
        [
            "record 8: field 'messages' must be a non-empty list of turns",
            "(or set data.bad_records=skip to leave such records out)",
        ],
    ),
    (
        "sharegpt-empty-conversation",
        lambda: with_bad(as_sharegpt(good_messages()), {"conversations": []}),
        {},
        ["record 8: field 'conversations' must be a non-empty list"],
    ),
    (
        "messages-no-assistant",
        lambda: with_bad(good_messages(), msgs(("user", "hi"))),
        {},
        ["record 8: no assistant turn"],
    ),
    (
        "sharegpt-no-assistant",
        lambda: with_bad(as_sharegpt(good_messages()), {"conversations": [{"from": "human", "value": "hi"}]}),
        {},
        ["record 8: no assistant turn"],
    ),
    (
        "alpaca-missing-output",
        lambda: with_bad(as_alpaca(good_messages()), {"instruction": "hi", "input": ""}),
        {},
        ["record 8: field 'output' is missing"],
    ),
    (
        "messages-empty-assistant",
        lambda: with_bad(good_messages(), msgs(("user", "hi"), ("assistant", " "))),
        {},
        ["record 8: field 'messages'[1].content is empty", "data.bad_records=skip"],
    ),
    (
        "sharegpt-empty-assistant",
        lambda: with_bad(
            as_sharegpt(good_messages(40)),
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": ""}]},
            at=30,
        ),
        {},
        ["record 31: field 'conversations'[1].value is empty", "data.bad_records=skip"],
    ),
    (
        "alpaca-empty-output",
        lambda: with_bad(as_alpaca(good_messages()), {"instruction": "hi", "output": ""}),
        {},
        ["record 8: field 'output' is empty"],
    ),
    (
        "text-empty-text",
        lambda: with_bad(as_text(good_messages()), {"text": ""}),
        {},
        ["record 8: field 'text' is empty"],
    ),
    (
        "messages-wrong-role",
        lambda: with_bad(good_messages(), msgs(("customer", "hi"), ("assistant", "yo"))),
        {},
        ["unknown role 'customer'", "data.roles", "data.bad_records=skip"],
    ),
    (
        "sharegpt-wrong-role",
        lambda: with_bad(
            as_sharegpt(good_messages()),
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "agent", "value": "yo"}]},
        ),
        {},
        ["unknown role 'agent'"],
    ),
    (
        "messages-dict-content",
        lambda: with_bad(good_messages(), msgs(("user", {"x": 1}), ("assistant", "yo"))),
        {},
        ["record 8: field 'messages'[0].content must be text, got dict"],
    ),
    (
        "sharegpt-bool-content",
        lambda: with_bad(
            as_sharegpt(good_messages()),
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": True}]},
        ),
        {},
        ["record 8: field 'conversations'[1].value must be text, got bool"],
    ),
    (
        "alpaca-list-instruction",
        lambda: with_bad(as_alpaca(good_messages()), {"instruction": [1, 2], "output": "x"}),
        {},
        ["record 8: field 'instruction' must be text, got a list"],
    ),
    (
        "text-list-text",
        lambda: with_bad(as_text(good_messages()), {"text": [1, 2]}),
        {},
        ["record 8: field 'text' must be text, got a list"],
    ),
    (
        "messages-system-not-first",
        lambda: with_bad(good_messages(), msgs(("user", "hi"), ("system", "s"), ("assistant", "yo"))),
        {},
        ["a system message is allowed only first"],
    ),
    (
        "messages-assistant-first",
        lambda: with_bad(good_messages(), msgs(("assistant", "yo"), ("user", "hi"))),
        {},
        ["has no user turn before it"],
    ),
    (
        "messages-placeholder-no-variables",
        lambda: with_bad(good_messages(), msgs(("user", "who are you"), ("assistant", "i am {{name}}"))),
        {},
        ["record 8: placeholder {{name}} has no value; set data.variables.name (data.variables is empty"],
    ),
    (
        "alpaca-placeholder-unknown",
        lambda: with_bad(as_alpaca(good_messages()), {"instruction": "who made you", "output": "{{ author }}"}),
        {"data__variables": {"name": "Forge"}},
        ["placeholder {{author}} has no value; set data.variables.author (data.variables sets only name"],
    ),
    (
        "text-placeholder",
        lambda: with_bad(as_text(good_messages()), {"text": "hello {{name}}"}),
        {},
        ["placeholder {{name}}"],
    ),
    (
        "messages-invalid-json-line",
        "invalid-json",
        {},
        ["chat.jsonl: line 3 is not valid JSON (Expecting ',' delimiter at column 48)"],
    ),
    ("sft-empty-file", "empty", {}, ["the file is empty"]),
    (
        "format-mismatch",
        lambda: good_messages(),
        {"data__format": "alpaca"},
        ["format 'alpaca' needs a column 'instruction'"],
    ),
    (
        "format-undetectable",
        lambda: [{"prompt": "a", "answer": "b"}] * 10,
        {},
        ["chat.jsonl: cannot tell the data format"],
    ),
    # documented successful treatments
    (
        "messages-integer-content",
        lambda: with_bad(good_messages(), msgs(("user", "two plus three"), ("assistant", 5))),
        {},
        "ok",
    ),
    (
        "sharegpt-empty-assistant-skipped",
        lambda: with_bad(
            as_sharegpt(good_messages(40)),
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": ""}]},
            at=30,
        ),
        {"data__bad_records": "skip"},
        "skip:31",
    ),
]


# ---- running -------------------------------------------------------------------------------------------------
def run_train(cfg: dict, tmp_path: Path, capsys) -> tuple[int, str, str]:
    from tuneforge.cli.app import main

    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    code = main(["train", str(p)])
    out, err = capsys.readouterr()
    return code, out, err


def check(code: int, err: str, expect, run: Path) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    if expect == "ok" or str(expect).startswith("skip"):
        assert code == 0, err[-3000:]
        assert not lines, err[-3000:]
        assert (run / "data" / "report.md").exists()
        return
    assert code == 3, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    line = lines[0]
    assert not GENERIC.match(line), line
    assert "--debug for the traceback" not in line, line
    assert "Traceback" not in err
    for needle in expect:
        assert needle in line, line
    # data errors fire before the model trains: nothing was saved
    assert not (run / "model").exists()
    assert not list(run.glob("checkpoint-*"))


@pytest.mark.parametrize("case", CLS_CASES, ids=[c[0] for c in CLS_CASES])
def test_classification_bad_data(case, tiny_bert, tmp_path, capsys, caplog):
    name, build, extra, expect = case
    run = tmp_path / "run"
    if build is None:  # a validation file with a label the training file lacks
        data = write(tmp_path / "train.csv", rows())
        val = write(tmp_path / "dev.csv", rows(10) + [{"text": "film", "label": "neutral"}])
        extra = {"data__validation": val}
    else:
        data = build(tmp_path)
    cfg = tiny_config(tiny_bert, data, str(run), method="full", **extra)
    cfg["train"].update({"max_steps": 1, "eval_strategy": "no"})
    cfg["data"]["clean"] = {"label_noise": "none", "dedup": "exact"}
    code, _, err = run_train(cfg, tmp_path, capsys)
    check(code, err, expect, run)
    if name == "list-labels-skipped":
        report = (run / "data" / "report.md").read_text()
        assert "Bad records left out" in report and "4 records" in report, report
        assert "data.bad_records=skip: left out 4 rows" in caplog.text


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.mark.parametrize("case", SFT_CASES, ids=[c[0] for c in SFT_CASES])
def test_sft_bad_data(case, tiny_llama, tmp_path, capsys, caplog):
    name, build, extra, expect = case
    run = tmp_path / "run"
    path = tmp_path / "chat.jsonl"
    if build == "invalid-json":
        good = "".join(json.dumps(r) + "\n" for r in good_messages())
        lines = good.splitlines(keepends=True)
        write(path, "".join(lines[:2]) + '{"messages": [{"role": "user", "content": "hi"}\n' + "".join(lines[2:]))
    elif build == "empty":
        write(path, "")
    else:
        write(path, build())
    cfg = {
        "model": {"name": tiny_llama},
        "data": {"train": str(path), "max_length": 64, "split": {"validation": 0.2, "test": 0.0}},
        "task": {"type": "causal_lm", "report_prompts": 0, "compare_base": False},
        "method": {"name": "lora"},
        "train": {"max_steps": 1, "batch_size": 8, "report_to": "none", "eval_strategy": "no"},
        "output": {"dir": str(run)},
    }
    for key, value in extra.items():
        section, field = key.split("__", 1)
        cfg[section][field] = value
    code, _, err = run_train(cfg, tmp_path, capsys)
    check(code, err, expect, run)
    if str(expect).startswith("skip:"):
        record = expect.split(":")[1]
        report = (run / "data" / "report.md").read_text()
        assert "Bad records left out (data.bad_records=skip)" in report, report
        assert f"| {record} |" in report and "value is empty" in report, report
        assert "data.bad_records=skip: left out 1 of 41 records" in err, err[-2000:]
    if name == "messages-integer-content":
        assert "1 fields held a number instead of text and were trained as its text" in caplog.text
