"""Chinese where a user looks (issue 37, item 5): `data inspect` of classification data reports characters per token
for Chinese text, the SFT data report counts Chinese characters beside tokens, and continued pre-training on long
texts (`data.overflow: split`) keeps every token, counted in the report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sft_common import write_jsonl
from tuneforge.data.text import count_han

from conftest import run_cli

ZH = ["这部电影非常好看", "剧情无聊，演员也很差", "故事感人，值得一看", "浪费时间的电影"]


@pytest.mark.unit
def test_data_inspect_reports_tokens_per_chinese_character(tiny_bert, tmp_path, write_yaml):
    # no deduplication: the near-duplicate texts here would be dropped before the report counts them
    rows = [{"text": f"{ZH[i % 4]}{i}" + (" good film" if i % 3 == 0 else ""), "label": i % 4 % 2} for i in range(60)]
    rows += [{"text": f"an english review {i}", "label": i % 2} for i in range(20)]
    pd.DataFrame(rows).to_csv(tmp_path / "zh.csv", index=False)
    data = {"train": str(tmp_path / "zh.csv"), "split": {"test": 0.0}, "clean": {"dedup": "none"}}
    cfg = {"model": {"name": tiny_bert}, "data": data}
    r = run_cli("data", "inspect", write_yaml(cfg), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "rep/report.json").read_text())
    zh = report["chinese_text"]
    assert set(zh) == {"train", "validation"}
    total = sum(zh[s]["chinese_characters"] for s in zh)
    assert total == sum(count_han(r["text"]) for r in rows)
    assert sum(zh[s]["texts"] for s in zh) == 60  # the English rows hold no Han character
    # tiny BERT's vocabulary has no Chinese: every character is one [UNK] token, plus the English words' pieces
    assert all(z["tokens"] >= z["chinese_characters"] for z in zh.values())
    md = (tmp_path / "rep/report.md").read_text()
    assert "## Chinese text" in md and "tokens per Chinese character" in md


@pytest.mark.unit
def test_the_sft_report_counts_chinese_characters(tiny_llama, tmp_path, write_yaml):
    chats = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in [("你好", "你好，我是模型。"), ("hello", "hi there")] * 10
    ]
    cfg = {
        "model": {"name": tiny_llama},
        "data": {"train": write_jsonl(tmp_path / "c.jsonl", chats), "split": {"validation": 0.0, "test": 0.0}},
        "task": {"type": "causal_lm"},
    }
    r = run_cli("data", "inspect", write_yaml(cfg), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr[-2000:]
    train = json.loads((tmp_path / "rep/report.json").read_text())["conversations"]["train"]
    assert train["chinese_characters"] == 10 * (count_han("你好") + count_han("你好，我是模型。"))
    assert train["tokens_per_chinese_character"] > 0
    assert "Chinese characters" in (tmp_path / "rep/report.md").read_text()


@pytest.mark.unit
def test_overflow_split_cuts_long_texts_into_pieces_and_keeps_every_token(tiny_llama, tmp_path, write_yaml):
    from transformers import AutoTokenizer

    from tuneforge.config import validate_config
    from tuneforge.errors import ConfigError

    texts = [{"text": "模型训练数据 " * (5 + 20 * (i % 2))} for i in range(10)]
    cfg = {
        "model": {"name": tiny_llama},
        "data": {
            "train": write_jsonl(tmp_path / "t.jsonl", texts),
            "format": "text",
            "max_length": 32,
            "overflow": "split",
            "split": {"validation": 0.0, "test": 0.0},
        },
        "task": {"type": "causal_lm"},
    }
    r = run_cli("data", "inspect", write_yaml(cfg), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "texts longer than data.max_length=32 split into pieces" in r.stderr
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    lengths = [len(tok(t["text"])["input_ids"]) + 1 for t in texts]  # + the eos each text ends with
    report = json.loads((tmp_path / "rep/report.json").read_text())
    assert report["conversations"]["train"]["split"] == sum(n > 32 for n in lengths) > 0
    pieces = sum(-(-n // 32) for n in lengths)
    assert report["after"]["rows"] == pieces

    cfg["data"]["format"] = "messages"
    with pytest.raises(ConfigError, match="'split' cuts plain text"):
        validate_config(cfg)


@pytest.mark.integration
def test_a_classification_run_reports_its_chinese_text(tiny_bert, tmp_path, write_yaml):
    rows = [{"text": f"{ZH[i % 4]}{i}", "label": i % 4 % 2} for i in range(60)]
    pd.DataFrame(rows).to_csv(tmp_path / "zh.csv", index=False)
    data = {"train": str(tmp_path / "zh.csv"), "clean": {"dedup": "none"}}
    cfg = {
        "model": {"name": tiny_bert},
        "data": data,
        "train": {"max_steps": 1, "report_to": "none"},
        "output": {"dir": str(tmp_path / "run")},
    }
    r = run_cli("train", write_yaml(cfg))
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "run/data/report.json").read_text())
    assert sum(s["chinese_characters"] for s in report["chinese_text"].values()) == sum(
        count_han(r["text"]) for r in rows
    )
    assert "## Chinese text" in (tmp_path / "run/data/report.md").read_text()
