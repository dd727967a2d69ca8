"""SFT training throughput on CPU: tuneforge (packing on) vs a plain transformers + PEFT loop that pads each
batch to its longest example, on the same model (SmolLM2-135M-Instruct), data (builtin:identity), LoRA
config, number of passes over the data and seed, measured in one run.

Both count the same thing: real (non-padding) tokens of the training examples per second of training steps
(model loading, tokenization and evaluation excluded). Prints both, the ratio, and the padding share.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/cpu_sft.py [--epochs 1] [--batch-size 8] [--max-length 256]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL = "builtin:smollm2-135m-instruct"
VARIABLES = {"name": "Forge", "author": "the Tuneforge team"}
SYSTEM = "You are a helpful AI assistant."
LORA = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}


def conversations():
    from tuneforge.data.sft_formats import parse_records
    from tuneforge.data.sources import read_table
    from tuneforge.data.templates import fill_variables

    _, recs = parse_records(read_table("builtin:identity"), "messages", "builtin:identity")
    return [[{**m, "content": fill_variables(m["content"], VARIABLES, "x")} for m in c] for c in recs]


def peer(epochs: float, batch_size: int, max_length: int, lr: float, seed: int) -> dict:
    """The common recipe: apply_chat_template per conversation, loss on the whole sequence minus padding,
    batches padded to their longest example, a hand-written AdamW loop over a PEFT LoRA model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.models.loader import resolve_model

    path = resolve_model(MODEL)
    tok = AutoTokenizer.from_pretrained(path)
    convs = [[{"role": "system", "content": SYSTEM}] + c for c in conversations()]
    enc = [tok.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"][:max_length] for c in convs]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(
        model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear")
    )
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    order = list(range(len(enc)))
    rng = random.Random(seed)
    real = padded = 0
    n_batches = int(round(epochs * len(enc) / batch_size))
    batches = []
    while len(batches) < n_batches:
        rng.shuffle(order)
        batches += [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    t0 = time.perf_counter()
    for idx in batches[:n_batches]:
        rows = [enc[i] for i in idx]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for k, r in enumerate(rows):
            ids[k, : len(r)] = torch.as_tensor(r)
            mask[k, : len(r)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        real += int(mask.sum())
        padded += ids.numel()
    secs = time.perf_counter() - t0
    return {
        "tokens": real,
        "seconds": round(secs, 2),
        "tokens_per_second": round(real / secs, 1),
        "padding_fraction": round(1 - real / padded, 4),
        "steps": n_batches,
    }


def ours(epochs: float, batch_size: int, max_length: int, lr: float, seed: int, out: str) -> dict:
    """tuneforge's one training path with packing: rows of up to max_length tokens, batch size scaled so a
    step sees about as many examples as the peer's."""
    from tuneforge.config import load_config
    from tuneforge.training.engine import train

    raw = {
        "model": {"name": MODEL},
        "data": {
            "train": "builtin:identity",
            "format": "messages",
            "variables": VARIABLES,
            "system_prompt": SYSTEM,
            "max_length": max_length,
            "packing": True,
            "split": {"validation": 0.0, "test": 0.0},
        },
        "task": {"type": "causal_lm", "report_prompts": 0, "compare_base": False},
        "method": LORA,
        "train": {
            "epochs": epochs,
            "batch_size": max(1, batch_size // 4),
            "learning_rate": lr,
            "seed": seed,
            "eval_strategy": "no",
            "report_to": "none",
            "logging_steps": 5,
            "warmup_ratio": 0.0,
        },
        "output": {"dir": out, "overwrite": True},
    }
    res = train(load_config(raw=raw))
    eff = res.efficiency
    # real tokens = every example's tokens once per epoch (packed rows carry no padding of their own)
    info = json.loads((res.run_dir / "eval" / "metrics.json").read_text())["data"]
    packing = info["packing"]
    from tuneforge.models.loader import load_tokenizer, resolve_model
    from tuneforge.tasks.causal_lm import CausalLMTask

    task = CausalLMTask(load_config(raw=raw))
    prepared = task.prepare(load_tokenizer(resolve_model(MODEL)))
    tokens = int(sum(prepared.train["length"]) * eff["epochs"])
    return {
        "tokens": tokens,
        "seconds": eff["train_seconds"],
        "tokens_per_second": round(tokens / eff["train_seconds"], 1),
        "padding_fraction": packing["padding_fraction_packed"],
        "steps": eff["global_steps"],
        "rows": packing["rows"],
        "examples": packing["examples"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = ours(a.epochs, a.batch_size, a.max_length, a.lr, a.seed, os.path.join(tmp, "run"))
    p = peer(a.epochs, a.batch_size, a.max_length, a.lr, a.seed)
    print(json.dumps({"tuneforge_packed": t, "peft_loop_padded": p}, indent=2))
    print(
        f"train tokens/s: tuneforge (packing) {t['tokens_per_second']:.1f} vs plain PEFT loop (padded batches) "
        f"{p['tokens_per_second']:.1f} -> ratio {t['tokens_per_second'] / p['tokens_per_second']:.2f}x; "
        f"padding {100 * t['padding_fraction']:.1f}% vs {100 * p['padding_fraction']:.1f}%"
    )


if __name__ == "__main__":
    main()
