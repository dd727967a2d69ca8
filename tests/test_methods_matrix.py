"""The method x model contract matrix on tiny random BERT (classification) and Llama (causal LM) models:
apply, a few training steps move the loss, exactly the method's parameters change, save -> load gives the
same logits, merge gives the same logits (or says it cannot)."""

from __future__ import annotations

import pytest
import torch

from methods_helpers import base_builder, batch, build, logits, make_method, save_run_model, train_steps
from tuneforge.errors import MethodError
from tuneforge.methods import count_parameters

pytestmark = pytest.mark.unit

NAMES = {
    "bert": {"qv": ["query", "value"], "regex": r".*\.(query|value)$", "attn": "attention"},
    "llama": {"qv": ["q_proj", "v_proj"], "regex": r".*\.(q_proj|v_proj)$", "attn": "self_attn"},
}

# (id, method name, config, learning rate); "@qv" etc. are filled per architecture
CASES = [
    ("full", "full", {}, 1e-3),
    ("full-llrd", "full", {"layerwise_lr_decay": 0.8, "head_lr": 5e-3}, 1e-3),
    ("freeze-top1", "freeze", {"trainable_layers": 1}, 1e-3),
    ("freeze-head", "freeze", {"trainable_layers": 0, "train_embeddings": True}, 1e-3),
    ("freeze-bottom1", "freeze", {"frozen_layers": 1}, 1e-3),
    ("freeze-modules", "freeze", {"trainable_modules": ["@attn"]}, 1e-3),
    ("lora", "lora", {}, 1e-2),
    ("lora-names-rslora", "lora", {"target_modules": "@qv", "use_rslora": True, "r": 4, "alpha": 8}, 1e-2),
    ("lora-regex-gaussian", "lora", {"target_modules": "@regex", "init": "gaussian"}, 1e-2),
    ("dora-loraplus", "lora", {"use_dora": True, "lora_plus_ratio": 4}, 1e-2),
    ("lora-pissa", "lora", {"init": "pissa", "dropout": 0.0}, 1e-2),
    ("lora-olora", "lora", {"init": "olora", "dropout": 0.0}, 1e-2),
    ("qlora-nf4", "qlora", {}, 1e-2),
    ("qlora-fp4-single", "lora", {"quantization": "fp4", "double_quant": False}, 1e-2),
    ("adapter-houlsby", "adapter", {"placement": "houlsby", "bottleneck_size": 8}, 1e-2),
    ("adapter-pfeiffer", "adapter", {"placement": "pfeiffer", "reduction_factor": 4, "activation": "gelu"}, 1e-2),
    ("prefix", "prefix", {"num_virtual_tokens": 4}, 1e-2),
    ("prefix-mlp", "prefix", {"num_virtual_tokens": 4, "projection": True, "projection_hidden_size": 16}, 1e-2),
    ("prompt", "prompt", {"num_virtual_tokens": 4}, 3e-2),
    ("prompt-text", "prompt", {"num_virtual_tokens": 6, "init_text": "the film was good"}, 3e-2),
    ("ia3", "ia3", {}, 3e-2),
]


def resolve(cfg: dict, kind: str) -> dict:
    def fill(v):
        if isinstance(v, str) and v.startswith("@"):
            return NAMES[kind][v[1:]]
        if isinstance(v, list):
            return [fill(x) for x in v]
        return v

    return {k: fill(v) for k, v in cfg.items()}


def snapshot(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype.is_floating_point}


@pytest.mark.parametrize("kind", ["bert", "llama"])
@pytest.mark.parametrize("case_id, name, cfg, lr", CASES, ids=[c[0] for c in CASES])
def test_method_contract(kind, case_id, name, cfg, lr, tiny_bert, tiny_wordpiece_llama, tmp_path):
    path = tiny_bert if kind == "bert" else tiny_wordpiece_llama
    method = make_method(name, **resolve(cfg, kind))
    model, ctx = build(kind, path, method)

    trainable = {n for n, _ in method.trainable_parameters(model)}
    if getattr(method.cfg, "quantization", None):  # QLoRA really runs on a bitsandbytes base
        assert any(type(m).__module__.startswith("bitsandbytes") for m in model.modules())
    counts = count_parameters(model, method.trainable_parameters(model))
    assert 0 < counts["trainable_params"] <= counts["total_params"]
    if name not in ("full",):
        assert counts["trainable_percent"] < 100
    if kind == "bert":  # the task head always trains, whatever the method
        assert any("classifier" in n for n in trainable), trainable

    b = batch(kind)
    before = snapshot(model)
    losses = train_steps(model, method, b, steps=5, lr=lr)
    if name == "prompt" and kind == "bert":
        # PEFT puts the soft prompt before [CLS], so the pooler reads a virtual token whose state barely
        # depends on the input in a random 2-layer model: the loss moves, but need not fall in 5 steps
        assert losses[-1] != losses[0], losses
    else:
        assert losses[-1] < losses[0], losses
    after = snapshot(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    # exactly the method's parameters move (a DoRA magnitude or a bias may stay put by chance: allow subset)
    assert changed <= trainable, sorted(changed - trainable)[:5]
    assert len(changed) >= 0.9 * len(trainable), sorted(trainable - changed)[:5]

    ref = logits(model, b)
    out = tmp_path / "model"
    save_run_model(method, model, out, path, kind)
    fresh = make_method(name, **resolve(cfg, kind))
    loaded = fresh.load(str(out), base_builder(kind, fresh))
    got = logits(loaded, b)
    assert torch.allclose(ref, got, atol=1e-5, rtol=0), float((ref - got).abs().max())

    if fresh.can_merge:
        merged = fresh.merge(loaded)
        assert not hasattr(merged, "peft_config")
        assert not any(type(m).__module__.startswith("bitsandbytes") for m in merged.modules())
        m = logits(merged, b)
        # a 4-bit base is merged into its dequantized weights in float32: same outputs up to float rounding
        assert torch.allclose(ref, m, atol=1e-4, rtol=0), float((ref - m).abs().max())
    else:
        with pytest.raises(MethodError, match="cannot be merged"):
            fresh.merge(loaded)


def test_qlora_layers_evaluate_then_train_again(tiny_bert):
    # bitsandbytes 0.50 repacks 4-bit weights for CPU inference on AVX512-BF16 machines: it breaks layers whose
    # input width (32 here) is not a multiple of its 64-value block, and a repacked layer cannot train again;
    # the method keeps every 4-bit layer in its plain layout
    import bitsandbytes as bnb

    method = make_method("qlora")
    model, _ = build("bert", tiny_bert, method)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert any(m.in_features % 64 for m in layers) and any(m.in_features % 64 == 0 for m in layers)
    assert not any(getattr(m, "support_avx512bf16_for_cpu", False) for m in layers)
    b = batch("bert")
    assert torch.isfinite(logits(model, b)).all()  # eval mode, no grad: the path that repacked
    start, end = train_steps(model, method, b, steps=2)  # training after an evaluation
    assert end < start
