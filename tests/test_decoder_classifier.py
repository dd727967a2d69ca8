"""Decoder models (Llama, Qwen2) as text classifiers (issue 37, item 4): the head reads the last real token, with left
or right padding; a tokenizer without a pad token pads with eos, said in one line; a LoRA run on a tiny Llama
trains, predicts a text alone as inside a batch, and exports to ONNX with parity."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sft_common import make_tiny_llama, make_tokenizer

from conftest import make_sentiment_rows, run_cli, tiny_config

NO_PAD = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # the ChatML tokenizer without its <pad> token
TEXTS = ["good film", "the plot was really quite dull and the acting weak", "superb", "a very boring story"]


def _tiny_qwen2(path: Path, tok) -> str:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.mark.unit
def test_a_tokenizer_without_pad_pads_with_eos_then_unk_and_says_so(capsys):
    from tuneforge.errors import ConfigError
    from tuneforge.tasks.base import ensure_pad_token

    tok = make_tokenizer(special=NO_PAD)
    assert tok.pad_token is None
    assert ensure_pad_token(tok, "m") == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.pad_token == "<|im_end|>"
    assert "has no pad token: padding with its eos token '<|im_end|>'" in capsys.readouterr().err
    assert ensure_pad_token(tok, "m") == tok.pad_token_id  # kept, and said once
    assert capsys.readouterr().err == ""

    tok = make_tokenizer(special=NO_PAD, eos=None)
    assert ensure_pad_token(tok, "m") == tok.unk_token_id
    tok.unk_token = None
    tok.pad_token = None
    with pytest.raises(ConfigError, match="no pad, eos or unk token"):
        ensure_pad_token(tok, "m")


@pytest.mark.unit
@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_a_text_alone_and_in_a_padded_batch_give_the_same_logits(tmp_path, family, side):
    """What the classification task sets up (the pad token on the tokenizer and in the head's config) makes the
    sequence-classification head read each text's last real token wherever the padding is."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from tuneforge.tasks.base import ensure_pad_token

    tok = make_tokenizer(special=NO_PAD)
    path = make_tiny_llama(tmp_path / "m", tok) if family == "llama" else _tiny_qwen2(tmp_path / "m", tok)
    pad = ensure_pad_token(tok, path)
    tok.padding_side = side
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3, pad_token_id=pad).eval()
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # the batch is padded
    with torch.no_grad():
        together = model(**batch).logits
        alone = torch.cat([model(**tok([t], return_tensors="pt")).logits for t in TEXTS])
    assert torch.allclose(together, alone, atol=1e-5), (together - alone).abs().max()


@pytest.mark.integration
def test_a_lora_run_on_a_decoder_without_pad_token_trains_predicts_and_exports_with_parity(tmp_path):
    tok = make_tokenizer(special=NO_PAD)
    tok.padding_side = "left"
    model = make_tiny_llama(tmp_path / "llama", tok)
    pd.DataFrame(make_sentiment_rows(160)).to_csv(tmp_path / "s.csv", index=False)
    cfg = tiny_config(model, str(tmp_path / "s.csv"), str(tmp_path / "run"), train__epochs=3)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))

    r = run_cli("train", str(tmp_path / "c.yaml"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "has no pad token: padding with its eos token '<|im_end|>'" in r.stderr
    meta = json.loads((tmp_path / "run/model/tuneforge.json").read_text())
    assert meta["pad_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert json.loads((tmp_path / "run/eval/metrics.json").read_text())["test"]["accuracy"] > 0.5

    r = run_cli("predict", str(tmp_path / "run"), *TEXTS)
    assert r.returncode == 0, r.stderr[-2000:]
    batched = [json.loads(line)["probabilities"] for line in r.stdout.splitlines()]
    for text, probs in zip(TEXTS, batched):
        r = run_cli("predict", str(tmp_path / "run"), text)
        alone = json.loads(r.stdout)["probabilities"]
        assert alone == pytest.approx(probs, abs=1e-5)

    r = run_cli("export", str(tmp_path / "run"), "--format", "onnx", "--out", str(tmp_path / "onnx"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "label agreement 100.00%" in r.stdout, r.stdout


@pytest.mark.integration
@pytest.mark.parametrize("method", ["full", "qlora"])
def test_full_and_qlora_train_a_decoder_classifier(tmp_path, method):
    """QLoRA keeps the score head out of 4-bit (it is new and trains in full); full fine-tuning saves the whole
    model with the pad token in its config."""
    tok = make_tokenizer(special=NO_PAD)
    model = make_tiny_llama(tmp_path / "llama", tok)
    pd.DataFrame(make_sentiment_rows(64)).to_csv(tmp_path / "s.csv", index=False)
    cfg = tiny_config(model, str(tmp_path / "s.csv"), str(tmp_path / "run"), method=method, train__max_steps=2)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = run_cli("train", str(tmp_path / "c.yaml"))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("predict", str(tmp_path / "run"), *TEXTS)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(r.stdout.splitlines()) == len(TEXTS)
    if method == "full":
        config = json.loads((tmp_path / "run/model/config.json").read_text())
        assert config["pad_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
