"""Every method with the causal_lm SFT task (tiny random Llama with a ChatML tokenizer) through the one
training path: trains, reloads with the same logits, generates (chat), merges where it can."""

from __future__ import annotations

import json

import pytest
import torch

from sft_common import chat_rows, make_tiny_llama, write_jsonl

pytestmark = pytest.mark.integration

METHODS = {
    "full": {"layerwise_lr_decay": 0.9, "unfreeze_schedule": {"start": "head", "every_steps": 2}},
    "freeze": {"trainable_layers": 1},
    "lora": {"r": 4, "target_modules": "all-linear"},
    "qlora": {"r": 4},
    "adapter": {"placement": "houlsby", "bottleneck_size": 8},
    "prefix": {"num_virtual_tokens": 4},
    "prompt": {"num_virtual_tokens": 4, "init_text": "you are a tiny model"},
    "ia3": {},
}
PROMPTS = ["<|im_start|>user\nwho are you<|im_end|>\n<|im_start|>assistant\n", "what is your name"]


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory) -> dict:
    from tuneforge.config import load_config
    from tuneforge.training.engine import train

    root = tmp_path_factory.mktemp("sft-methods")
    model = make_tiny_llama(root / "tiny-llama")
    data = write_jsonl(root / "chat.jsonl", chat_rows(24))
    out = {}
    for name, extra in METHODS.items():
        cfg = {
            "model": {"name": model},
            "data": {"train": data, "max_length": 96, "split": {"validation": 0.2, "test": 0.0}},
            "task": {"type": "causal_lm", "report_prompts": 1, "report_max_new_tokens": 4, "compare_base": False},
            "method": {"name": name, **extra},
            "train": {
                "epochs": 1,
                "batch_size": 4,
                "learning_rate": 5e-3 if name in ("full", "freeze") else 2e-2,
                "logging_steps": 1,
                "report_to": "none",
            },
            "eval": {"load_best_model": False},
            "output": {"dir": str(root / name)},
        }
        out[name] = train(load_config(raw=cfg))
    return out


def test_every_method_trains_sft(sft_runs):
    for name, res in sft_runs.items():
        assert json.loads((res.run_dir / "status.json").read_text())["state"] == "completed", name
        eff = json.loads((res.run_dir / "efficiency.json").read_text())
        assert 0 < eff["trainable_params"] <= eff["total_params"], name
        rows = [json.loads(l) for l in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in rows if "loss" in r]
        assert losses and all(l == l for l in losses), name  # finite, logged


def test_reload_logits_and_merge(sft_runs, tmp_path):
    from transformers import AutoModelForCausalLM

    from tuneforge.errors import MethodError
    from tuneforge.export.merge import merge_run
    from tuneforge.inference import load_run
    from tuneforge.methods import METHODS as REGISTRY

    for name, res in sft_runs.items():
        a, b = load_run(res.run_dir), load_run(res.run_dir)
        ids = a.tokenizer(PROMPTS[0], return_tensors="pt")
        with torch.no_grad():
            la, lb = a.model(**ids).logits, b.model(**ids).logits
        assert torch.equal(la, lb), name
        if REGISTRY.get(name).can_merge:
            r = merge_run(res.run_dir, tmp_path / name, texts=PROMPTS)
            assert r["max_abs_logit_diff"] <= 1e-4, (name, r)
            plain = AutoModelForCausalLM.from_pretrained(tmp_path / name).eval()
            assert (tmp_path / name / "chat_template.jinja").is_file() or "chat_template" in (
                tmp_path / name / "tokenizer_config.json"
            ).read_text()
            with torch.no_grad():
                lp = plain(**ids).logits
            assert torch.allclose(lp, la, atol=1e-4), (name, float((lp - la).abs().max()))
        else:
            with pytest.raises(MethodError, match="cannot be merged"):
                merge_run(res.run_dir, tmp_path / name)


def test_chat_generates_for_every_method(sft_runs):
    from tuneforge.generation import generate, load_chat_model

    for name, res in sft_runs.items():
        cm = load_chat_model(str(res.run_dir), device="cpu")
        out = generate(cm, [[{"role": "user", "content": "who are you"}]], {"temperature": 0.0, "max_new_tokens": 4})
        assert len(out) == 1 and isinstance(out[0], dict), (name, out)
