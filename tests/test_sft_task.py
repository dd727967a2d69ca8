"""The causal_lm task's data preparation without training: text format, overflow policy, label masks,
packing info, and what is saved for chat."""

import pytest

from sft_common import chat_rows, make_tokenizer, write_jsonl
from tuneforge.config import load_config
from tuneforge.data.templates import IGNORE
from tuneforge.errors import DataError
from tuneforge.tasks.causal_lm import CausalLMTask

pytestmark = pytest.mark.unit


def prepare(model, data, **data_keys):
    cfg = load_config(
        raw={
            "model": {"name": model},
            "task": {"type": "causal_lm"},
            "data": {"train": data, "split": {"validation": 0.0, "test": 0.0}, **data_keys},
        }
    )
    task = CausalLMTask(cfg)
    tok = make_tokenizer()
    return task, task.prepare(tok), tok


def test_text_format_trains_on_every_token_and_ends_with_eos(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", [{"text": "hello who are you"}, {"text": "good morning friend"}])
    task, p, tok = prepare(tiny_llama, data)
    assert p.info["format"] == "text"
    row = p.train[0]
    assert row["input_ids"][-1] == tok.eos_token_id
    assert row["labels"] == [IGNORE] + row["input_ids"][1:]


def test_overflow_truncate_and_drop_are_counted(tiny_llama, tmp_path):
    long_answer = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok " * 40}]}
    long_prompt = {"messages": [{"role": "user", "content": "hello " * 40}, {"role": "assistant", "content": "ok"}]}
    data = write_jsonl(tmp_path / "c.jsonl", chat_rows(4) + [long_answer, long_prompt])
    _, p, _ = prepare(tiny_llama, data, max_length=60)
    o = p.info["overflow"]
    # the long answer is cut and kept; the long prompt leaves no answer token, so it cannot teach anything
    assert (o["train_truncated"], o["train_no_target_left"], len(p.train)) == (2, 1, 5)
    assert max(p.train["length"]) == 60
    _, p, _ = prepare(tiny_llama, data, max_length=60, overflow="drop")
    assert p.info["overflow"]["train_dropped"] == 2 and len(p.train) == 4


def test_alpaca_with_system_prompt_and_train_on_prompt(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "who are you", "input": "", "output": "i am {{name}}"}])
    task, p, tok = prepare(tiny_llama, data, system_prompt="you are {{name}}", variables={"name": "Tiny"})
    row = p.train[0]
    text = tok.decode(row["input_ids"])
    assert text.startswith("<|im_start|>system\nyou are Tiny<|im_end|>") and "i am Tiny<|im_end|>" in text
    trained = [t for t, l in zip(row["input_ids"], row["labels"]) if l != IGNORE]
    assert tok.decode(trained) == "i am Tiny<|im_end|>"
    assert task.metadata(p)["system_prompt"] == "you are Tiny"
    _, p, _ = prepare(tiny_llama, data, train_on_prompt=True, variables={"name": "Tiny"})
    assert p.train[0]["labels"][1:] == p.train[0]["input_ids"][1:]
    # without data.variables the placeholder would be trained as literal text: an error naming it
    with pytest.raises(
        DataError,
        match=r"a.jsonl: record 1: placeholder \{\{name\}\} has no value; "
        r"set data.variables.name \(data.variables is empty",
    ):
        prepare(tiny_llama, data)


def test_packing_info(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "c.jsonl", chat_rows(30))
    _, p, _ = prepare(tiny_llama, data, packing=True, max_length=256)
    info = p.info["packing"]
    assert info["examples"] == 30 and info["rows"] == len(p.train) < 30
    assert "position_ids" in p.train.column_names
    assert set(p.info["efficiency"]) == {"packing_rows", "padding_fraction_unpacked", "padding_fraction_packed"}
