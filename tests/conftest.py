"""Shared fixtures: tiny random models built from configs (fast, offline) and small learnable data sets."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

POS = ["good", "great", "excellent", "wonderful", "superb", "moving", "brilliant", "fun"]
NEG = ["bad", "awful", "terrible", "boring", "dull", "weak", "poor", "tedious"]
FILLER = ["the", "film", "movie", "was", "really", "quite", "plot", "acting", "story", "and", "a", "very"]


def make_sentiment_rows(n: int, seed: int = 0, labels=("negative", "positive")) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        y = i % 2
        words = rng.sample(FILLER, 4) + rng.sample(POS if y else NEG, 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": labels[y]})
    return rows


def _vocab() -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    return special + POS + NEG + FILLER + letters


def wordpiece_tokenizer(words: list[str]):
    """A BERT-style fast tokenizer over `words`, built offline with the tokenizers library
    (transformers 5 no longer builds a working fast tokenizer from a bare vocab.txt)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words)}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, hidden-32 BERT with a WordPiece tokenizer, saved as a local model directory."""
    import torch
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny-bert")
    tok = wordpiece_tokenizer(_vocab())
    assert tok("good film")["input_ids"][1] != tok.unk_token_id
    cfg = BertConfig(
        vocab_size=len(_vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


@pytest.fixture
def sentiment_csv(tmp_path) -> str:
    import pandas as pd

    p = tmp_path / "sentiment.csv"
    pd.DataFrame(make_sentiment_rows(240)).to_csv(p, index=False)
    return str(p)


def tiny_config(model: str, data: str, out: str, method: str = "lora", **extra) -> dict:
    """A raw config dict for a fast run on the tiny model."""
    cfg = {
        "model": {"name": model},
        "data": {"train": data, "max_length": 32},
        "task": {"type": "classification"},
        "method": {"name": method},
        # a random tiny base has no features to adapt: LoRA needs a larger rate and more epochs than full
        "train": {
            "epochs": 6 if method == "lora" else 3,
            "batch_size": 16,
            "learning_rate": 1e-2 if method == "lora" else 5e-3,
            "logging_steps": 2,
            "report_to": "none",
            "seed": 7,
        },
        "output": {"dir": out},
    }
    for key, value in extra.items():
        section, name = key.split("__", 1)
        cfg[section][name] = value
    return cfg


def run_cli(*args: str, cwd: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real console entry point in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


@pytest.fixture
def write_yaml(tmp_path):
    import yaml

    def _write(cfg: dict, name: str = "cfg.yaml") -> str:
        p = tmp_path / name
        p.write_text(yaml.safe_dump(cfg))
        return str(p)

    return _write


REPO = Path(__file__).resolve().parents[1]
