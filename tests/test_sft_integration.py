"""Tiny end-to-end SFT through the real CLI on a 2-layer random Llama: the run-directory contract, the saved
template and stop tokens, chat and generate, config cross-checks, and the template check with --force."""

import json
import subprocess
import sys

import pytest
import yaml

from sft_common import chat_rows, make_tiny_llama, make_tokenizer, write_jsonl

from conftest import run_cli

CONTRACT = [
    "config.yaml",
    "status.json",
    "metrics.jsonl",
    "efficiency.json",
    "eval/metrics.json",
    "eval/report.md",
    "model/tuneforge.json",
    "model/chat_template.jinja",
    "model/generation_config.json",
    "model/tokenizer.json",
]


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "chat.jsonl", chat_rows(40))


def sft_config(model, data, out, method="lora", **data_extra):
    return {
        "model": {"name": model},
        "data": {
            "train": data,
            "max_length": 160,
            "system_prompt": "You are {{name}}.",
            "variables": {"name": "Tiny"},
            "split": {"validation": 0.2, "test": 0.0},
            **data_extra,
        },
        "task": {"type": "causal_lm", "report_prompts": 2, "report_max_new_tokens": 8},
        "method": {"name": method},
        "train": {"epochs": 2, "batch_size": 4, "learning_rate": 5e-3, "logging_steps": 2, "report_to": "none"},
        "output": {"dir": out},
    }


def api_train(cfg, *overrides, force=False):
    from tuneforge.config import load_config
    from tuneforge.training.engine import train

    return train(load_config(raw=cfg, overrides=list(overrides)), force=force)


def write(tmp_path, cfg):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


@pytest.mark.integration
@pytest.mark.parametrize(
    "method, packing, weights, via_cli",
    [
        ("lora", True, ["adapter_config.json", "adapter_model.safetensors"], True),
        ("full", False, ["config.json", "model.safetensors"], False),
    ],
)
def test_sft_run_contract_chat_and_generate(tiny_llama, chat_data, tmp_path, method, packing, weights, via_cli):
    out = tmp_path / "run"
    cfg = sft_config(tiny_llama, chat_data, str(out), method, packing=packing)
    if via_cli:
        proc = run_cli("train", write(tmp_path, cfg))
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        api_train(cfg)
    for rel in CONTRACT + [f"model/{w}" for w in weights]:
        assert (out / rel).is_file(), rel
    assert json.loads((out / "status.json").read_text())["state"] == "completed"
    meta = json.loads((out / "model/tuneforge.json").read_text())
    tok = make_tokenizer()
    assert meta["task"] == "causal_lm" and meta["system_prompt"] == "You are Tiny."
    assert meta["stop_token_ids"] == [tok.eos_token_id] and meta["end_of_turn_token"] == "<|im_end|>"
    assert (out / "model/chat_template.jinja").read_text() == tok.chat_template
    gen = json.loads((out / "model/generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.eos_token_id
    metrics = json.loads((out / "eval/metrics.json").read_text())
    val = metrics["validation"]
    for k in ("loss", "perplexity", "base_loss", "base_perplexity"):
        assert val[k] > 0, k
    assert abs(val["perplexity"] - 2.718281828 ** val["loss"]) / val["perplexity"] < 1e-3
    assert val["loss"] < val["base_loss"]  # it learned something about its own data
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_perplexity" in r for r in rows)
    report = (out / "eval/report.md").read_text()
    assert "| prompt | reference | base model | tuned |" in report and "[[" in report
    eff = json.loads((out / "efficiency.json").read_text())
    assert eff["train_tokens_per_second"] > 0
    data_md = (out / "data/report.md").read_text()  # every SFT run describes its data too
    assert "## Conversations" in data_md and "## Length in tokens" in data_md
    if packing:
        assert eff["packing_rows"] < 32 and 0 <= eff["padding_fraction_packed"] < 1
        assert metrics["data"]["packing"]["examples"] == 32
        # samples/s counts examples, not packed rows
        assert eff["train_samples"] == round(metrics["data"]["sizes"]["train"] * eff["epochs"])
    else:
        assert "padding_fraction" in eff
    if method == "lora":
        assert eff["trainable_percent"] < 50  # lm_head (tied) is not trained in full

    if not via_cli:
        import tuneforge

        assert isinstance(tuneforge.chat(out, "who are you", temperature=0, max_new_tokens=5), str)
        return
    proc = run_cli("chat", str(out), "--message", "who are you", "--temperature", "0", "--max-new-tokens", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(
        prompts,
        [
            {"prompt": "who are you"},
            {"messages": [{"role": "user", "content": "what is your name"}]},
            {"instruction": "two plus three", "input": ""},
        ],
    )
    proc = run_cli("generate", str(out), "--file", str(prompts), "--temperature", "0", "--max-new-tokens", "4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(l) for l in proc.stdout.splitlines()]
    assert len(lines) == 3 and lines[0]["prompt"] == "who are you"
    assert all(r["finish_reason"] in ("stop", "length") and isinstance(r["response"], str) for r in lines)
    assert all(r["tokens"] <= 4 for r in lines)


@pytest.mark.integration
def test_interactive_chat_reset_and_exit(tiny_llama, chat_data, tmp_path):
    out = tmp_path / "run"
    api_train(sft_config(tiny_llama, chat_data, str(out)), "train.epochs=1", "task.compare_base=false")
    proc = subprocess.run(
        [sys.executable, "-m", "tuneforge", "chat", str(out), "--max-new-tokens", "3"],
        input="who are you\n/reset\nhello\n/exit\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("assistant> ") == 2 and "conversation cleared" in proc.stderr


@pytest.mark.unit
def test_chat_with_a_base_model_dir(tiny_llama):
    proc = run_cli("chat", tiny_llama, "--message", "hello", "--temperature", "0", "--max-new-tokens", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.integration
def test_template_check_fails_then_force_trains(tmp_path, chat_data, capfd):
    from tuneforge.errors import ConfigError

    bad = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    model = make_tiny_llama(tmp_path / "bad-template", make_tokenizer(chat_template=bad))
    cfg = sft_config(model, chat_data, str(tmp_path / "run"))
    cfg["task"]["compare_base"] = False
    with pytest.raises(ConfigError, match="chat template check failed: .*never learns to stop.*--force"):
        api_train(cfg, "train.epochs=1")
    # a named template that fits the tokenizer fixes it
    api_train(cfg, "train.epochs=1", "data.template=chatml", "output.overwrite=true")
    api_train(cfg, "train.epochs=1", "output.overwrite=true", force=True)
    assert "warning: chat template check failed" in capfd.readouterr().err


@pytest.mark.unit
@pytest.mark.parametrize(
    "task, override, match",
    [
        ("classification", "data.packing=true", "data.packing: only used by the causal_lm task"),
        (
            "classification",
            "data.format=alpaca",
            "data.format: only used by the causal_lm, grpo, preference and reward tasks",
        ),
        (
            "causal_lm",
            "data.text_pair_column=b",
            "data.text_pair_column: only used by the classification and multitask tasks",
        ),
        ("causal_lm", "data.overflow=cut", "data.overflow"),
        ("causal_lm", "eval.metric=accuracy", "eval.metric: 'accuracy' is not a causal_lm metric"),
    ],
)
def test_task_specific_keys_are_rejected(tmp_path, task, override, match):
    from tuneforge.config import load_config
    from tuneforge.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(raw={"task": {"type": task}, "data": {"train": "x.jsonl"}}, overrides=[override])
    assert match in str(err.value)


@pytest.mark.unit
def test_bad_records_and_missing_variables_are_one_line_errors(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", chat_rows(5) + [{"messages": [{"role": "user", "content": "q"}]}])
    proc = run_cli("train", write(tmp_path, sft_config(tiny_llama, data, str(tmp_path / "run"))))
    assert proc.returncode != 0 and "record 6: no assistant turn" in proc.stderr and "Traceback" not in proc.stderr
    from tuneforge.errors import ConfigError

    cfg = sft_config(tiny_llama, "builtin:identity", str(tmp_path / "r2"), variables={})
    with pytest.raises(ConfigError, match="builtin:identity needs data.variables.name"):
        api_train(cfg, "data.system_prompt=null")


@pytest.mark.unit
def test_data_inspect_on_an_sft_config(tiny_llama, tmp_path):
    rows = chat_rows(20)
    long = {
        "messages": [
            {"role": "user", "content": "tell me a story"},
            {"role": "assistant", "content": " ".join(["the sky is blue"] * 60)},
        ]
    }
    data = write_jsonl(tmp_path / "chat.jsonl", rows + [rows[0], long])  # one exact duplicate, one too long
    cfg = sft_config(tiny_llama, data, str(tmp_path / "unused"), max_length=64, split={"validation": 0.0, "test": 0.0})
    proc = run_cli("data", "inspect", write(tmp_path, cfg), "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (tmp_path / "rep/report.md").read_text()
    report = json.loads((tmp_path / "rep/report.json").read_text())
    assert report["conversations"]["train"]["records"] == 22 and report["conversations"]["train"]["truncated"] == 1
    distinct = len({json.dumps(r, sort_keys=True) for r in rows})
    assert report["duplicates"]["train_duplicate_rows"] == 21 - distinct  # 22 rows, the long one is unique
    assert "## Conversations" in md and "longer than max_length=64 |" in md and "| 1 (4.5%) |" in md
    assert (tmp_path / "rep/token_lengths.png").stat().st_size > 1000
    assert not (tmp_path / "unused").exists()  # inspecting trains nothing and writes no run
