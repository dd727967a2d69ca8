"""Vocabulary expansion through whole runs (issue 37, item 1): `model.extend_vocabulary` / `add_tokens` learn and
add tokens, grow the embeddings, train only the new rows under LoRA (the old rows bit-identical after training),
save the extended tokenizer, and the run reloads, predicts and merges with identical logits; a run continuing from
it trains the same rows; a method that cannot train them is a config error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sft_common import make_tiny_llama, write_jsonl

from conftest import run_cli

pytestmark = pytest.mark.integration

ZH = [
    "我们用中文数据训练模型，模型学会了新的词。",
    "训练数据越多，模型越好。中文模型需要中文数据。",
    "这个模型可以回答问题，也可以写文章。",
    "数据清洗是训练前的重要步骤。",
]


def _config(model: str, data: str, out: Path, method: str = "lora", **model_keys) -> dict:
    return {
        "model": {"name": model, **model_keys},
        "data": {"train": data, "format": "text", "max_length": 64, "split": {"validation": 0.1, "test": 0.0}},
        "task": {"type": "causal_lm", "compare_base": True, "report_prompts": 0},
        "method": {"name": method, **({"r": 4, "target_modules": "all-linear"} if method == "lora" else {})},
        "train": {"max_steps": 3, "batch_size": 4, "learning_rate": 5e-2, "report_to": "none", "seed": 3},
        "output": {"dir": str(out)},
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("zh")
    return write_jsonl(d / "zh.jsonl", [{"text": ZH[i % len(ZH)] * (1 + i % 3)} for i in range(60)])


def _embedding(model):
    import torch

    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    ids = torch.arange(core.get_input_embeddings().weight.shape[0])[None]
    with torch.no_grad():
        return core.get_input_embeddings()(ids)[0]  # what the (adapted) embedding computes for every id


def test_a_lora_run_with_new_tokens_trains_only_their_rows_and_reloads_and_merges_identically(tmp_path, corpus):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.inference import load_run

    base = make_tiny_llama(tmp_path / "llama")
    cfg = _config(
        base,
        corpus,
        tmp_path / "run",
        extend_vocabulary={"corpus": corpus, "new_tokens": 12, "min_frequency": 2},
        add_special_tokens=["<tool>"],
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    r = run_cli("train", str(tmp_path / "c.yaml"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "vocabulary:" in r.stderr and "token(s) added" in r.stderr

    meta = json.loads((tmp_path / "run/model/tuneforge.json").read_text())
    added = [t for ext in meta["vocabulary"] for t in ext["tokens"]]
    assert "<tool>" in added and len(added) > 1
    tok = AutoTokenizer.from_pretrained(tmp_path / "run/model")
    plain = AutoTokenizer.from_pretrained(base)
    assert all(tok.convert_tokens_to_ids(t) == i for t, i in plain.get_vocab().items())  # old ids kept
    word = next(t for t in added if t != "<tool>")
    assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1
    # the adapter holds the new rows alone, not a copy of the whole embedding matrix
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run/model/adapter_model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    embedded = {k: v for k, v in shapes.items() if "embed_tokens" in k}
    assert embedded and all("trainable_tokens" in k for k in embedded), embedded
    assert all(v[0] == len(tok) - len(plain) for v in embedded.values()), embedded

    run = load_run(tmp_path / "run")
    before = AutoModelForCausalLM.from_pretrained(base)
    old = before.get_input_embeddings().weight.shape[0]
    rows = _embedding(run.model)
    assert rows.shape[0] == len(tok)
    assert torch.equal(rows[:old], before.get_input_embeddings().weight.detach())  # old rows bit-identical
    new_ids = [i for ext in meta["vocabulary"] for i in ext["ids"]]
    ext = meta["vocabulary"][-1]
    start = torch.stack([before.get_input_embeddings().weight[ext["pieces"][t]].mean(0) for t in ext["tokens"]])
    assert not torch.allclose(rows[ext["ids"]], start.detach())  # the new rows trained
    assert sorted(new_ids) == list(range(old, len(tok)))

    text = f"{word}<tool>{ZH[0]}"
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        logits = run.model(**enc).logits
    # chat models answer through the grown base: a prompt holding the new tokens is read and answered
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"{word}<tool>"}, {"prompt": ZH[1]}])
    r = run_cli("generate", str(tmp_path / "run"), "--file", prompts, "--temperature", "0", "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    answers = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(answers) == 2 and all(a["tokens"] >= 1 and "response" in a for a in answers), answers

    r = run_cli("merge", str(tmp_path / "run"), "--out", str(tmp_path / "merged"))
    assert r.returncode == 0, r.stderr[-2000:]
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        assert torch.allclose(merged(**enc).logits, logits, atol=1e-5)
    assert json.loads((tmp_path / "merged/tuneforge_merge.json").read_text())["vocabulary"] == meta["vocabulary"]

    # a run continuing from the merged model trains the same rows as new ones (and keeps the old ones)
    cont = _config(str(tmp_path / "merged"), corpus, tmp_path / "cont")
    (tmp_path / "cont.yaml").write_text(yaml.safe_dump(cont, allow_unicode=True))
    r = run_cli("train", str(tmp_path / "cont.yaml"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"the {len(new_ids)} tokens" in r.stderr and "train as new ones" in r.stderr
    rows2 = _embedding(load_run(tmp_path / "cont").model)
    assert torch.equal(rows2[:old], rows[:old]) and not torch.allclose(rows2[new_ids], rows[new_ids])


def test_resume_adds_the_same_tokens_and_a_method_that_cannot_train_them_is_refused(tmp_path, corpus, write_yaml):
    from transformers import AutoTokenizer

    from tuneforge.config import validate_config
    from tuneforge.errors import ConfigError
    from tuneforge.models.vocabulary_setup import extend_for_run

    base = make_tiny_llama(tmp_path / "llama")
    cfg = _config(base, corpus, tmp_path / "run", method="full", add_tokens=["模型", "训练"])
    path = write_yaml(cfg)
    r = run_cli("train", str(path))
    assert r.returncode == 0, r.stderr[-3000:]
    plan = json.loads((tmp_path / "run/vocabulary.json").read_text())
    assert [s["tokens"] for s in plan if s["tokens"]] == [["模型", "训练"]]
    meta = json.loads((tmp_path / "run/model/tuneforge.json").read_text())
    assert meta["vocabulary"][0]["ids"] == [
        len(AutoTokenizer.from_pretrained(base)),
        len(AutoTokenizer.from_pretrained(base)) + 1,
    ]

    # --resume (and every rank of a multi-process run) adds the tokens the run directory fixed, even when the
    # config's tokens changed since
    changed = validate_config({**cfg, "model": {**cfg["model"], "add_tokens": ["数据"]}})
    tok = AutoTokenizer.from_pretrained(base)
    exts = extend_for_run(changed.model, tok, tmp_path / "run")
    assert [e.tokens for e in exts] == [["模型", "训练"]] and len(tok) == len(AutoTokenizer.from_pretrained(base)) + 2

    # a tokenizer extended behind tuneforge's back (no record of the tokens): one line, not an index error later
    import shutil

    from tuneforge.errors import ModelError
    from tuneforge.inference import load_run

    shutil.copytree(tmp_path / "run", tmp_path / "edited")
    tok = AutoTokenizer.from_pretrained(tmp_path / "edited/model")
    tok.add_tokens(["数据", "清洗"])
    tok.save_pretrained(tmp_path / "edited/model")
    with pytest.raises(ModelError, match="its tokenizer has .* tokens but its model .* embedding rows"):
        load_run(tmp_path / "edited")

    # a LoRA run continuing from this full run (model.name: its run directory) trains the added rows and loads back
    cont = _config(str(tmp_path / "run"), corpus, tmp_path / "cont")
    r = run_cli("train", write_yaml(cont, "cont.yaml"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "the 2 tokens" in r.stderr
    assert load_run(tmp_path / "cont").model.get_base_model().get_input_embeddings().weight.shape[0] == len(tok) - 2

    for method, key in (("ia3", "method 'ia3' cannot train the embedding rows"), ("freeze", "train_embeddings")):
        with pytest.raises(ConfigError, match=key):
            validate_config({**cfg, "method": {"name": method}})
