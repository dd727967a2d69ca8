"""A student from kept layers (`model.keep_layers`): the count rule, validation errors, and shrinking tiny BERT,
RoBERTa, Llama and Qwen2 models through the AutoModelFor... classes (weights kept, KV cache renumbered, save ->
reload identical)."""

from __future__ import annotations

import re

import pytest
import torch

from sft_common import make_tiny_llama
from tuneforge.errors import ConfigError, ModelError
from tuneforge.models.blocks import find_blocks
from tuneforge.models.shrink import keep_layers, resolve_keep_layers, spread_layers

pytestmark = pytest.mark.unit

KEY = "model.keep_layers"


# ---------------------------------------------------------------- the count rule and validation


@pytest.mark.parametrize(
    "count,num_layers,expected",
    [
        (3, 6, [0, 3, 5]),
        (6, 12, [0, 2, 4, 7, 9, 11]),  # DistilBERT's own choice
        (10, 30, [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]),
        (2, 6, [0, 5]),
        (1, 6, [0]),
        (6, 6, [0, 1, 2, 3, 4, 5]),
        (1, 1, [0]),
        (4, 5, [0, 1, 3, 4]),
    ],
)
def test_count_rule(count, num_layers, expected):
    assert resolve_keep_layers(count, num_layers) == expected


def test_count_rule_always_valid():
    for num_layers in range(1, 50):
        for count in range(1, num_layers + 1):
            got = spread_layers(count, num_layers)
            assert len(got) == count and got[0] == 0
            assert count == 1 or got[-1] == num_layers - 1
            assert all(a < b for a, b in zip(got, got[1:])), (count, num_layers, got)
            assert resolve_keep_layers(got, num_layers) == got


def test_valid_lists():
    assert resolve_keep_layers([0, 2, 4], 6) == [0, 2, 4]
    assert resolve_keep_layers((5,), 6) == [5]
    assert resolve_keep_layers(list(range(6)), 6) == list(range(6))


@pytest.mark.parametrize(
    "spec,needles",
    [
        ([], ["[]", "0-5"]),
        ([0, 7], ["layer 7", "out of range", "6 layers", "(0-5)"]),
        ([-1, 2], ["layer -1", "out of range", "(0-5)"]),
        ([0, 2, 2], ["layer 2", "twice", "(0-5)"]),
        ([3, 1], ["[3, 1]", "increasing", "(0-5)"]),
        ([0, 1.5], ["1.5", "(0-5)"]),
        ([0, True], ["True", "(0-5)"]),
        (0, ["0", "1 to 6"]),
        (-2, ["-2", "1 to 6"]),
        (7, ["7", "1 to 6"]),
        ("3", ["'3'", "(0-5)"]),
        (True, ["True", "(0-5)"]),
    ],
)
def test_validation_errors_are_one_line(spec, needles):
    with pytest.raises(ConfigError) as e:
        resolve_keep_layers(spec, 6)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(KEY + ": ")
    for n in needles:
        assert n in msg, (n, msg)


def test_error_names_the_given_key():
    with pytest.raises(
        ConfigError,
        match=r"^distill\.student_layers: layer 9 is out of range for a model "
        r"with 4 layers \(0-3\)$",
    ):
        resolve_keep_layers([9], 4, key="distill.student_layers")


def test_unknown_architecture_is_a_model_error():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    with pytest.raises(ModelError, match="Odd") as e:
        keep_layers(Odd(), [0])
    assert "\n" not in str(e.value)


def test_blocks_found_outside_the_supported_families_are_a_model_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=64))
    assert find_blocks(model)[0] == "transformer.h"  # the one finder sees them; keeping layers is not offered
    with pytest.raises(ModelError, match=r"GPT2LMHeadModel \(its blocks are at transformer\.h\)") as e:
        keep_layers(model, 1)
    assert "\n" not in str(e.value) and len(model.transformer.h) == 2


# ---------------------------------------------------------------- real (tiny) models


def _check_kept(original_blocks, student_blocks, kept):
    assert len(student_blocks) == len(kept)
    for k, i in enumerate(kept):
        a = dict(original_blocks[i].named_parameters())
        b = dict(student_blocks[k].named_parameters())
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].shape == b[name].shape
            assert torch.equal(a[name], b[name]), (k, i, name)


def _save_reload(model, auto_cls, tmp_path):
    d = tmp_path / "student"
    model.save_pretrained(d)
    return auto_cls.from_pretrained(d).eval(), d


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("bert6")
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=6,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(d)
    return d


def test_bert_sequence_classification(bert_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(1)
    original = AutoModelForSequenceClassification.from_pretrained(bert_dir, num_labels=3).eval()
    orig_blocks = list(original.bert.encoder.layer)
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(bert_dir, num_labels=3).eval()
    assert find_blocks(model)[0] == "bert.encoder.layer"

    assert keep_layers(model, 3) is model
    kept = [0, 3, 5]
    _check_kept(orig_blocks, model.bert.encoder.layer, kept)
    assert isinstance(model.bert.encoder.layer, torch.nn.ModuleList)
    assert model.config.num_hidden_layers == 3 and model.config.tuneforge_kept_layers == kept
    # embeddings and head untouched
    assert torch.equal(model.classifier.weight, original.classifier.weight)

    ids = torch.randint(1, 50, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    # the student equals a 3-layer model built independently from the original's weights, block i -> k
    cfg = type(original.config).from_dict({**original.config.to_dict(), "num_hidden_layers": 3})
    manual_model = AutoModelForSequenceClassification.from_config(cfg).eval()
    sd = {}
    for name, t in original.state_dict().items():
        m = re.match(r"(bert\.encoder\.layer\.)(\d+)(\..*)", name)
        if m is None:
            sd[name] = t
        elif int(m.group(2)) in kept:
            sd[f"{m.group(1)}{kept.index(int(m.group(2)))}{m.group(3)}"] = t
    manual_model.load_state_dict(sd, strict=True)
    with torch.no_grad():
        manual = manual_model(input_ids=ids, attention_mask=mask).logits
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, manual)

    reloaded, d = _save_reload(model, AutoModelForSequenceClassification, tmp_path)
    assert reloaded.config.num_hidden_layers == 3 and len(reloaded.bert.encoder.layer) == 3
    assert reloaded.config.tuneforge_kept_layers == kept
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids, attention_mask=mask).logits, logits)


def test_roberta_list_and_base_model(tmp_path):
    from transformers import AutoModel, RobertaConfig, RobertaModel

    cfg = RobertaConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    model = RobertaModel(cfg).eval()
    orig_blocks = list(model.encoder.layer)
    assert find_blocks(model)[0] == "encoder.layer"
    keep_layers(model, [1, 3])
    _check_kept(orig_blocks, model.encoder.layer, [1, 3])
    ids = torch.randint(3, 50, (1, 8))
    with torch.no_grad():
        out = model(input_ids=ids).last_hidden_state
    reloaded, _ = _save_reload(model, AutoModel, tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).last_hidden_state, out)
    assert reloaded.config.tuneforge_kept_layers == [1, 3]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("llama6"), num_layers=6)


def test_llama_causal_lm_generate_and_reload(llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    orig_blocks = list(original.model.layers)
    model = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    assert find_blocks(model)[0] == "model.layers"

    kept = [1, 2, 5]
    keep_layers(model, kept)
    _check_kept(orig_blocks, model.model.layers, kept)
    assert model.config.num_hidden_layers == 3 and model.config.tuneforge_kept_layers == kept
    assert [b.self_attn.layer_idx for b in model.model.layers] == [0, 1, 2]
    assert all(getattr(m, "layer_idx", k) == k for k, b in enumerate(model.model.layers) for m in b.modules())
    # tied embeddings stay tied
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    ids = torch.randint(5, model.config.vocab_size, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        assert logits.shape == (2, 7, model.config.vocab_size)
        # generate with the KV cache equals generate without it (the cache is indexed by the renumbered blocks)
        cached = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, use_cache=True)
        uncached = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, use_cache=False)
    assert cached.shape == (2, 12) and torch.equal(cached, uncached)

    reloaded, d = _save_reload(model, AutoModelForCausalLM, tmp_path)
    assert len(reloaded.model.layers) == 3 and reloaded.config.num_hidden_layers == 3
    assert [b.self_attn.layer_idx for b in reloaded.model.layers] == [0, 1, 2]
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids, attention_mask=mask).logits, logits)
        again = reloaded.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
    assert torch.equal(again, cached)


def test_shrinking_twice_records_the_first_models_layers(llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    keep_layers(model, [0, 2, 3, 5])
    keep_layers(model, [1, 3])
    assert model.config.tuneforge_kept_layers == [2, 5]
    assert [b.self_attn.layer_idx for b in model.model.layers] == [0, 1]


def test_qwen2_layer_types_are_cut(tmp_path):
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=5,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=2,
        max_position_embeddings=128,
    )
    if getattr(cfg, "layer_types", None) is None:
        pytest.skip("this transformers has no config.layer_types")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    types = list(model.config.layer_types)
    assert types[:2] == ["full_attention"] * 2 and types[2] == "sliding_attention"
    keep_layers(model, [0, 3, 4])
    assert model.config.layer_types == [types[0], types[3], types[4]]
    assert [b.self_attn.layer_idx for b in model.model.layers] == [0, 1, 2]
    ids = torch.randint(0, 64, (1, 9))
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=4, do_sample=False)
        uncached = model.generate(ids, max_new_tokens=4, do_sample=False, use_cache=False)
        logits = model(input_ids=ids).logits
    assert torch.equal(cached, uncached)
    reloaded, _ = _save_reload(model, AutoModelForCausalLM, tmp_path)
    assert reloaded.config.layer_types == model.config.layer_types
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, logits)
