"""The one transformer-block finder (`tuneforge.models.blocks`) on tiny models built from configs: encoders,
decoders, a vision transformer, convolutional networks, a PEFT wrapper and a multi-task model; and the input-side
modules found from the blocks (`find_embeddings`)."""

from __future__ import annotations

import pytest
import torch
import transformers as T

from tuneforge.errors import ModelError
from tuneforge.models.blocks import find_blocks, find_embeddings

pytestmark = pytest.mark.unit


def _bert(cls=T.BertForSequenceClassification, layers=3):
    cfg = T.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return cls(cfg)


def _llama():
    cfg = T.LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return T.LlamaForCausalLM(cfg)


def _peft_llama():
    import peft

    return peft.get_peft_model(_llama(), peft.LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))


def _multitask():
    from tuneforge.models.multitask import MultiTaskModel

    heads = [{"name": f"h{i}", "num_labels": 2, "multi_label": False} for i in range(4)]
    return MultiTaskModel(_bert(T.BertModel, layers=2), {"heads": heads, "weighting": "fixed"})


MODELS = {
    "bert": (_bert, "bert.encoder.layer", 3, ["bert.embeddings"]),
    "bert-base": (lambda: _bert(T.BertModel), "encoder.layer", 3, ["embeddings"]),
    "llama": (_llama, "model.layers", 2, ["model.embed_tokens"]),
    "gpt2": (
        lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=64)),
        "transformer.h",
        2,
        ["transformer.wte", "transformer.wpe"],
    ),
    "vit": (
        lambda: T.ViTForImageClassification(
            T.ViTConfig(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                image_size=32,
                patch_size=8,
            )
        ),
        "vit.layers",
        2,
        ["vit.embeddings"],
    ),
    "mobilenet-v2": (
        lambda: T.MobileNetV2ForImageClassification(T.MobileNetV2Config(image_size=32, depth_multiplier=0.35)),
        "mobilenet_v2.layer",
        16,
        ["mobilenet_v2.conv_stem"],
    ),
    "resnet": (
        lambda: T.ResNetForImageClassification(
            T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2], layer_type="basic")
        ),
        "resnet.encoder.stages",
        2,
        ["resnet.embedder"],
    ),
    "peft-llama": (_peft_llama, "base_model.model.model.layers", 2, ["base_model.model.model.embed_tokens"]),
    # the backbone's blocks, not the (here longer) list of task heads
    "multitask": (_multitask, "encoder.encoder.layer", 2, ["encoder.embeddings"]),
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_blocks_and_embeddings(kind):
    build, name, n, embeddings = MODELS[kind]
    torch.manual_seed(0)
    model = build()
    found, blocks = find_blocks(model)
    assert (found, len(blocks)) == (name, n)
    assert blocks is model.get_submodule(name)
    assert find_embeddings(model, found) == embeddings


def test_the_list_with_most_parameters_wins():
    class TwoLists(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.small = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(6)])  # longer, fewer parameters
            self.big = torch.nn.ModuleList([torch.nn.Linear(16, 16) for _ in range(2)])
            self.mixed = torch.nn.ModuleList([torch.nn.Linear(64, 64), torch.nn.Conv1d(64, 64, 3)])  # not repeated

    assert find_blocks(TwoLists())[0] == "big"


def test_a_model_without_repeated_layers_is_a_model_error():
    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(2, 2)
            self.empty = torch.nn.ModuleList()
            self.acts = torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.ReLU()])  # no parameters

    with pytest.raises(ModelError, match="Flat") as e:
        find_blocks(Flat())
    assert "\n" not in str(e.value)
