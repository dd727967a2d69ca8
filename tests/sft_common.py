"""Tiny causal LMs for the SFT tests: a byte-level BPE tokenizer trained in milliseconds on a small corpus,
with ChatML special tokens and chat template, and a 2-layer hidden-32 Llama built from a config."""

from __future__ import annotations

import json
from pathlib import Path

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "hello who are you",
    "what is your name",
    "the capital of france is paris",
    "i am a tiny model",
    "system user assistant",
    "two plus three is five",
    "colour of the sky is blue",
    "good morning friend",
    "你好 我是 模型",
] * 5
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def make_tokenizer(chat_template: str | None = CHATML, special=SPECIAL, eos="<|im_end|>"):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1, special_tokens=list(special))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        eos_token=eos,
        bos_token=None,
        unk_token="<|endoftext|>",
        pad_token="<pad>" if "<pad>" in special else None,
    )
    if chat_template:
        tok.chat_template = chat_template
    return tok


def make_tiny_llama(
    path: Path,
    tokenizer=None,
    seed: int = 0,
    num_layers: int = 2,
    tie: bool = True,
    max_positions: int = 512,
    chat: bool = True,
    vocab_size: int | None = None,
) -> str:
    """A 2-layer, hidden-32 Llama causal LM with `tokenizer` (default: the ChatML BPE one), saved into `path`.
    `chat=False` builds it as the method tests do: no eos in the config, no generation config (the WordPiece
    tokenizer has no end-of-turn token); `vocab_size`: more embedding rows than the tokenizer has tokens."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = tokenizer or make_tokenizer()
    ids = {"eos_token_id": tok.eos_token_id, "bos_token_id": None} if chat else {}
    cfg = LlamaConfig(
        vocab_size=vocab_size or len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie,
        pad_token_id=tok.pad_token_id,
        **ids,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    if chat:
        model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    Path(path).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def chat_rows(n: int) -> list[dict]:
    qa = [
        ("who are you", "i am a tiny model"),
        ("what is your name", "i am a tiny model"),
        ("what is the capital of france", "the capital of france is paris"),
        ("two plus three", "two plus three is five"),
        ("colour of the sky", "the sky is blue"),
    ]
    rows = []
    for i in range(n):
        q, a = qa[i % len(qa)]
        msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        if i % 3 == 0:  # some multi-turn conversations
            q2, a2 = qa[(i + 1) % len(qa)]
            msgs += [{"role": "user", "content": q2}, {"role": "assistant", "content": a2}]
        rows.append({"messages": msgs})
    return rows


def train_tiny_sft_run(d: Path, rows: int = 30, epochs: int = 1, max_new_tokens: int = 8) -> str:
    """Train LoRA on a tiny Llama over `rows` chat rows (20% validation, no test) through the CLI; the run dir."""
    import yaml

    from conftest import run_cli

    model = make_tiny_llama(d / "base")
    data = write_jsonl(d / "chat.jsonl", chat_rows(rows))
    cfg = {
        "model": {"name": model},
        "data": {"train": data, "max_length": 64, "split": {"validation": 0.2, "test": 0.0}},
        "task": {
            "type": "causal_lm",
            "report_prompts": 0,
            "generation": {"temperature": 0.0, "max_new_tokens": max_new_tokens},
        },
        "method": {"name": "lora"},
        "train": {"epochs": epochs, "batch_size": 8, "learning_rate": 1e-2, "logging_steps": 5, "report_to": "none"},
        "output": {"dir": str(d / "run")},
    }
    (d / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_cli("train", str(d / "cfg.yaml"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return str(d / "run")
