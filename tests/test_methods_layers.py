"""Exact numbers: layer discovery, layer-wise learning-rate groups, the bottleneck adapter layer."""

from __future__ import annotations

import pytest
import torch

from methods_helpers import batch, build, logits, make_method
from tuneforge.errors import MethodError
from tuneforge.methods.adapter import AdaptedOutput, BottleneckAdapter
from tuneforge.methods.layers import EMBEDDINGS, HEAD, TOP, describe

pytestmark = pytest.mark.unit


def test_layout_of_bert_and_llama(tiny_bert, tiny_wordpiece_llama):
    model, _ = build("bert", tiny_bert, make_method("full"))
    lay = describe(model, ["classifier"])
    assert lay.blocks == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    assert lay.embeddings == ["bert.embeddings"]
    where = {n: lay.where[id(p)] for n, p in model.named_parameters()}
    assert where["bert.embeddings.LayerNorm.weight"] == EMBEDDINGS
    assert where["bert.embeddings.position_embeddings.weight"] == EMBEDDINGS
    assert where["bert.encoder.layer.1.output.dense.weight"] == 1
    assert where["bert.pooler.dense.weight"] == TOP
    assert where["classifier.weight"] == HEAD

    model, _ = build("llama", tiny_wordpiece_llama, make_method("full"))
    lay = describe(model, [])
    assert lay.blocks == ["model.layers.0", "model.layers.1"] and lay.embeddings == ["model.embed_tokens"]
    where = {n: lay.where[id(p)] for n, p in model.named_parameters()}
    assert where["model.norm.weight"] == TOP and where["lm_head.weight"] == TOP
    assert where["model.layers.0.self_attn.q_proj.weight"] == 0


def test_layerwise_lr_groups_exact(tiny_bert):
    method = make_method("full", layerwise_lr_decay=0.5, head_lr=3.0)
    model, _ = build("bert", tiny_bert, method)
    groups = {g["name"]: g for g in method.param_groups(model, lr=1.0, weight_decay=0.1)}
    want = {
        "head": 3.0,
        "head/no_decay": 3.0,
        "top": 1.0,
        "top/no_decay": 1.0,
        "block.1": 1.0,
        "block.1/no_decay": 1.0,
        "block.0": 0.5,
        "block.0/no_decay": 0.5,
        "embeddings": 0.25,
        "embeddings/no_decay": 0.25,
    }
    assert {k: g["lr"] for k, g in groups.items()} == want
    for name, g in groups.items():
        assert g["weight_decay"] == (0.0 if name.endswith("no_decay") else 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    # no decay exactly on biases and norms, in every group
    for g in groups.values():
        for p in g["params"]:
            n = names[id(p)]
            assert (n.endswith(".bias") or "LayerNorm" in n) == g["name"].endswith("no_decay"), n
    # every parameter exactly once
    all_ids = [id(p) for g in groups.values() for p in g["params"]]
    assert len(all_ids) == len(set(all_ids)) == len(list(model.parameters()))
    # 6 weight matrices per BERT layer (q, k, v, attn out, intermediate, out) + 10 biases/norms
    assert len(groups["block.0"]["params"]) == 6 and len(groups["block.0/no_decay"]["params"]) == 10


def test_embeddings_lr_and_llama_decay(tiny_wordpiece_llama):
    method = make_method("full", layerwise_lr_decay=0.9, embeddings_lr=1e-6)
    model, _ = build("llama", tiny_wordpiece_llama, method)
    groups = {g["name"]: g["lr"] for g in method.param_groups(model, lr=2e-3, weight_decay=0.0)}
    assert groups["block.1"] == pytest.approx(2e-3) and groups["block.0"] == pytest.approx(1.8e-3)
    assert groups["embeddings"] == 1e-6 and groups["top"] == pytest.approx(2e-3)  # lm_head + final norm


def test_freeze_selects_the_right_parameters(tiny_bert):
    m = make_method("freeze", trainable_layers=1)
    model, _ = build("bert", tiny_bert, m)
    names = {n for n, _ in m.trainable_parameters(model)}
    assert names and all(n.startswith(("bert.encoder.layer.1.", "bert.pooler.", "classifier.")) for n in names)
    m = make_method("freeze", trainable_layers=0)
    model, _ = build("bert", tiny_bert, m)
    assert {n for n, _ in m.trainable_parameters(model)} == {"classifier.weight", "classifier.bias"}
    with pytest.raises(MethodError, match="trainable_layers: 3, but the model has 2 blocks"):
        build("bert", tiny_bert, make_method("freeze", trainable_layers=3))
    with pytest.raises(MethodError, match="frozen_layers"):
        build("bert", tiny_bert, make_method("freeze", frozen_layers=2))
    with pytest.raises(MethodError, match="no parameter name matches"):
        build("bert", tiny_bert, make_method("freeze", trainable_modules=["nothing_like_this"]))


def test_adapter_layer_exact_numbers():
    a = BottleneckAdapter(hidden=2, bottleneck=1, activation="relu")
    x = torch.tensor([[1.0, 2.0], [-3.0, 0.5]])
    assert torch.equal(a(x), x)  # zero up-projection: identity at the start
    with torch.no_grad():
        a.down.weight.copy_(torch.tensor([[1.0, -1.0]]))
        a.down.bias.fill_(0.5)
        a.up.weight.copy_(torch.tensor([[2.0], [3.0]]))
        a.up.bias.copy_(torch.tensor([0.1, -0.1]))
    # row 1: relu(1 - 2 + 0.5) = 0 -> x + up.bias ; row 2: relu(-3 - 0.5 + 0.5) = 0 too; row 3 positive
    x = torch.tensor([[1.0, 2.0], [-3.0, 0.5], [4.0, 1.0]])
    want = torch.tensor([[1.1, 1.9], [-2.9, 0.4], [4.0 + 2 * 3.5 + 0.1, 1.0 + 3 * 3.5 - 0.1]])
    assert torch.allclose(a(x), want)
    n = sum(p.numel() for p in BottleneckAdapter(384, 24).parameters())
    assert n == 2 * 384 * 24 + 24 + 384


@pytest.mark.parametrize("kind", ["bert", "llama"])
@pytest.mark.parametrize("placement, per_block", [("houlsby", 2), ("pfeiffer", 1)])
def test_adapter_placement_and_identity_at_start(kind, placement, per_block, tiny_bert, tiny_wordpiece_llama):
    path = tiny_bert if kind == "bert" else tiny_wordpiece_llama
    base, _ = build(kind, path, make_method("full"))
    m = make_method("adapter", placement=placement, bottleneck_size=4)
    adapted, _ = build(kind, path, m)
    b = batch(kind)
    assert torch.equal(logits(base, b), logits(adapted, b))  # same seed, same head: exactly the base model
    wrapped = [n for n, mod in adapted.named_modules() if isinstance(mod, AdaptedOutput)]
    assert len(wrapped) == 2 * per_block
    expect = {"bert": ("output.dense", "attention.output.dense"), "llama": ("mlp.down_proj", "self_attn.o_proj")}
    ffn, attn = expect[kind]
    assert all(w.endswith(ffn) or (placement == "houlsby" and w.endswith(attn)) for w in wrapped)
    trainable = [n for n, _ in m.trainable_parameters(adapted)]
    assert all(".adapter." in n or n.startswith("classifier.") for n in trainable)
    n_adapters = 2 * per_block
    assert sum(p.numel() for n, p in m.trainable_parameters(adapted) if ".adapter." in n) == n_adapters * (
        2 * 32 * 4 + 4 + 32
    )


def test_adapter_rejects_unsupported_architecture(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=50, n_positions=32)).save_pretrained(tmp_path)
    from transformers import AutoModelForCausalLM

    from tuneforge.methods import MethodContext
    from tuneforge.models.loader import load_model

    model = load_model(str(tmp_path), AutoModelForCausalLM, "float32")
    with pytest.raises(MethodError, match="unsupported architecture GPT2LMHeadModel"):
        make_method("adapter").apply(model, MethodContext())
    # layer discovery itself is generic: GPT-2's blocks and embeddings are found
    lay = describe(model)
    assert lay.blocks == ["transformer.h.0", "transformer.h.1"]
    assert set(lay.embeddings) == {"transformer.wte", "transformer.wpe"}


def test_adapter_config_validation():
    from tuneforge.config import load_config
    from tuneforge.errors import ConfigError

    with pytest.raises(ConfigError, match="bottleneck_size or reduction_factor"):
        load_config(raw={"method": {"name": "adapter", "bottleneck_size": 8, "reduction_factor": 4}})
    assert make_method("adapter", reduction_factor=8).cfg.width(384) == 48
    assert make_method("adapter").cfg.width(384) == 24
