"""tuneforge's own prefix tuning for encoders: the attention it computes, by hand; every layer uses its own slice;
PEFT's layout; save/load; the PEFT path stays for causal LMs."""

from __future__ import annotations

import pytest
import torch

from methods_helpers import base_builder, batch, build, logits, make_method, save_run_model, save_tiny_llama
from tuneforge.methods import prefix_encoder

pytestmark = pytest.mark.unit


def _bert(path):
    method = make_method("prefix", num_virtual_tokens=3)
    model, _ = build("bert", path, method)
    with torch.no_grad():  # a prefix of a size that visibly changes the attention
        model.tuneforge_prefix.embedding.weight.normal_(0, 2.0)
    return method, model.eval()


def test_prefix_attention_is_attention_over_the_prefix_and_the_tokens(tiny_bert):
    method, model = _bert(tiny_bert)
    attn = model.bert.encoder.layer[1].attention.self
    b = batch("bert", n=3, length=7)
    b["attention_mask"][0, -2:] = 0  # a padded row: the prefix is attended, the padding is not
    seen = {}
    attn.register_forward_hook(
        lambda m, args, kwargs, out: seen.update(x=args[0] if args else kwargs["hidden_states"], out=out[0]),
        with_kwargs=True,
    )
    with torch.no_grad():
        model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        x = seen["x"]
        heads, dim, p = (
            model.config.num_attention_heads,
            model.config.hidden_size // model.config.num_attention_heads,
            3,
        )

        def split(t):
            return t.view(x.shape[0], x.shape[1], heads, dim).transpose(1, 2)

        q, k, v = split(attn.query(x)), split(attn.key(x)), split(attn.value(x))
        table = model.tuneforge_prefix.embedding.weight.view(p, 2, 2, heads, dim)  # (P, layer, k/v, heads, dim)
        pk = table[:, 1, 0].permute(1, 0, 2).expand(x.shape[0], -1, -1, -1)
        pv = table[:, 1, 1].permute(1, 0, 2).expand(x.shape[0], -1, -1, -1)
        keys, values = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
        scores = q @ keys.transpose(-1, -2) / dim**0.5
        keep = torch.cat([torch.ones(x.shape[0], p, dtype=torch.bool), b["attention_mask"].bool()], 1)
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
        expected = (scores.softmax(-1) @ values).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
    assert torch.allclose(seen["out"], expected, atol=1e-5), float((seen["out"] - expected).abs().max())


def test_every_layer_reads_its_own_slice_of_the_table(tiny_bert):
    _, model = _bert(tiny_bert)
    prefix = model.tuneforge_prefix
    assert prefix.num_layers == model.config.num_hidden_layers == 2
    b = batch("bert")
    base = logits(model, b)
    width = 2 * prefix.kv_heads * prefix.head_dim
    for layer in range(prefix.num_layers):
        with torch.no_grad():
            saved = prefix.embedding.weight[:, layer * width : (layer + 1) * width].clone()
            prefix.embedding.weight[:, layer * width : (layer + 1) * width] += 1.0
        assert not torch.allclose(logits(model, b), base, atol=1e-4), f"layer {layer} ignores its prefix"
        with torch.no_grad():
            prefix.embedding.weight[:, layer * width : (layer + 1) * width] = saved
    assert torch.allclose(logits(model, b), base)


def test_projected_prefix_is_saved_as_its_final_table(tiny_bert, tmp_path):
    method = make_method("prefix", num_virtual_tokens=4, projection=True, projection_hidden_size=8)
    model, _ = build("bert", tiny_bert, method)
    b = batch("bert")
    ref = logits(model, b)
    save_run_model(method, model, tmp_path, tiny_bert, "bert")
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / prefix_encoder.WEIGHTS_FILE))
    assert state["prompt_embeddings"].shape == (4, 2 * 2 * 32)  # (P, layers * k/v * hidden): no MLP saved
    assert any(k.startswith("classifier.") for k in state)
    fresh = make_method("prefix", num_virtual_tokens=4, projection=True, projection_hidden_size=8)
    loaded = fresh.load(str(tmp_path), base_builder("bert", fresh))
    assert torch.allclose(logits(loaded, b), ref, atol=1e-5)
    assert not any(n.startswith("tuneforge_prefix.transform") for n, _ in loaded.named_parameters())
    # a config.json written from the prefixed model (Trainer checkpoints) does not name the prefix function
    loaded.config.save_pretrained(tmp_path / "cfg")
    assert prefix_encoder.ATTENTION_NAME not in (tmp_path / "cfg" / "config.json").read_text()


def test_a_prefix_saved_for_another_base_is_refused(tiny_bert, tmp_path):
    method, model = _bert(tiny_bert)
    save_run_model(method, model, tmp_path, tiny_bert, "bert")
    import json

    cfg = json.loads((tmp_path / prefix_encoder.CONFIG_FILE).read_text())
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / prefix_encoder.WEIGHTS_FILE))
    state["prompt_embeddings"] = state["prompt_embeddings"][:, :64].contiguous()  # as if the base had one layer
    save_file(state, str(tmp_path / prefix_encoder.WEIGHTS_FILE))
    (tmp_path / prefix_encoder.CONFIG_FILE).write_text(json.dumps(cfg))
    from tuneforge.errors import ModelError

    fresh = make_method("prefix", num_virtual_tokens=3)
    with pytest.raises(ModelError, match="does not fit the base model"):
        fresh.load(str(tmp_path), base_builder("bert", fresh))


def test_causal_lms_keep_peft_prefix_tuning(tmp_path):
    path = save_tiny_llama(tmp_path / "llama")
    method = make_method("prefix", num_virtual_tokens=4)
    model, _ = build("llama", path, method)
    assert hasattr(model, "peft_config") and not hasattr(model, "tuneforge_prefix")
    assert model.config._attn_implementation != prefix_encoder.ATTENTION_NAME
