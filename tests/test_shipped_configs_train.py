"""Every shipped config trains: each file under configs/ runs two optimizer steps through the real engine with its
own method, task and data-preparation sections, on a tiny model and a small data file of its task (the builtin
models and data would take minutes each). A dependency upgrade that breaks a method on a task fails here."""

from __future__ import annotations

import json

import pytest
import yaml

from image_common import make_image_folder, make_tiny_resnet
from multitask_common import multitask_rows
from preference_common import pair_rows
from sft_common import chat_rows, make_tiny_llama, write_jsonl

from conftest import REPO, make_sentiment_rows

# configs/search/ holds `tuneforge search` spaces, not run configs (the search tests validate them)
CONFIGS = sorted(
    str(p.relative_to(REPO))
    for p in (REPO / "configs").rglob("*.yaml")
    if p.relative_to(REPO / "configs").parts[0] != "search"
)


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory, tiny_bert) -> dict:
    import pandas as pd

    d = tmp_path_factory.mktemp("shipped")
    csv = d / "sentiment.csv"
    pd.DataFrame(make_sentiment_rows(120)).to_csv(csv, index=False)
    mt = d / "multitask.csv"
    pd.DataFrame(multitask_rows(120)).to_csv(mt, index=False)
    llama = make_tiny_llama(d / "llama", num_layers=8)
    return {
        "classification": (tiny_bert, str(csv)),
        "multitask": (tiny_bert, str(mt)),
        # as many blocks as a shipped config trains (freeze-sft: 6), still hidden 32
        "causal_lm": (llama, write_jsonl(d / "chat.jsonl", chat_rows(40))),
        "image_classification": (make_tiny_resnet(d / "resnet"), str(make_image_folder(d / "images"))),
        "preference": (llama, write_jsonl(d / "pairs.jsonl", pair_rows(40))),
        # reward models on a causal LM (its chat template); an encoder's configs are trained on the tiny BERT
        "reward": (llama, str(d / "pairs.jsonl")),
        "reward-encoder": (tiny_bert, str(d / "pairs.jsonl")),
        "grpo": (llama, "builtin:arithmetic?n=40&steps=1&seed=1"),
        # a decoder as a classifier (configs/quickstart/sentiment-smollm2-lora.yaml)
        "classification-decoder": (llama, str(csv)),
        # SFT configs of other record formats: continued pre-training on plain text, Alpaca instructions
        "causal_lm-text": (
            llama,
            write_jsonl(d / "text.jsonl", [{"text": " ".join(["你好 模型"] * (i % 7 + 1))} for i in range(40)]),
        ),
        "causal_lm-alpaca": (
            llama,
            write_jsonl(
                d / "alpaca.jsonl",
                [
                    {"instruction": r["messages"][0]["content"], "input": "", "output": r["messages"][1]["content"]}
                    for r in chat_rows(40)
                ],
            ),
        ),
    }


@pytest.mark.unit
def test_every_shipped_config_is_covered():
    assert len(CONFIGS) >= 20 and any("prefix-classification" in c for c in CONFIGS)


@pytest.mark.integration
@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_config_trains_two_steps(path, tiny_inputs, tmp_path):
    import tuneforge
    from tuneforge.config import validate_config

    raw = yaml.safe_load((REPO / path).read_text())
    task = raw.get("task", {}).get("type", "classification")
    encoder = task == "reward" and "minilm" in raw["model"]["name"]  # a text-pair scorer: no chat template
    kind = "reward-encoder" if encoder else task
    if task == "classification" and "smollm2" in raw["model"]["name"]:
        kind = "classification-decoder"
    if task == "causal_lm" and raw.get("data", {}).get("format") in ("text", "alpaca"):
        kind = f"causal_lm-{raw['data']['format']}"
    model, data = tiny_inputs[kind]
    raw["model"]["name"] = model
    for key in ("validation", "test"):  # shipped configs split their builtin data; so does the tiny file
        raw["data"].pop(key, None)
    if task == "image_classification":  # split fractions for 60,000 images leave no image of a class here
        raw["data"].pop("split", None)
    raw["data"]["train"] = data
    raw["data"]["max_length"] = min(raw["data"].get("max_length", 64), 64)
    if task in ("preference", "reward"):  # the tiny byte-level tokenizer makes a 47-token prompt: half of 128 holds it
        raw["data"]["max_length"] = 128
        raw["data"].pop("max_prompt_length", None)
    raw["train"] = {
        **raw.get("train", {}),
        "max_steps": 2,
        "batch_size": 4,
        "eval_batch_size": 16,
        "logging_steps": 1,
        "report_to": "none",
    }
    raw["output"] = {"dir": str(tmp_path / "run")}
    if task == "grpo":  # a 113-token templated problem (tiny byte-level tokenizer) and short completions
        raw["data"]["max_length"] = 200
        raw["task"]["max_new_tokens"] = 16
    if raw["model"].get("keep_layers"):  # the tiny models have fewer blocks than the shipped students keep
        raw["model"]["keep_layers"] = 1
    if (raw.get("distill") or {}).get("teacher"):
        raw["distill"]["teacher"] = _tiny_teacher(task, model, data, tmp_path / "teacher")
    cfg = validate_config(raw)

    result = tuneforge.train(cfg)

    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["state"] == "completed", status
    meta = json.loads((result.run_dir / "model" / "tuneforge.json").read_text())
    assert meta["method"] == raw["method"]["name"] and meta["task"] == task
    assert result.efficiency["global_steps"] == 2
    # the trained run loads again for prediction through its method
    from tuneforge.inference import load_run

    assert load_run(str(result.run_dir)) is not None


def _tiny_teacher(task: str, model: str, data: str, out) -> str:
    """A finished two-step run of `task` on the tiny model: the teacher of a shipped distillation config."""
    import tuneforge
    from tuneforge.config import validate_config

    raw = {
        "model": {"name": model},
        "data": {"train": data, "max_length": 64},
        "task": {"type": task},
        "method": {"name": "full"},
        "output": {"dir": str(out)},
        "train": {"max_steps": 2, "batch_size": 4, "report_to": "none", "eval_strategy": "no"},
        "eval": {"load_best_model": False},
    }
    if task == "causal_lm":
        raw["data"]["split"] = {"validation": 0.2, "test": 0.0}
        raw["task"]["report_prompts"] = 0
    return str(tuneforge.train(validate_config(raw)).run_dir)
