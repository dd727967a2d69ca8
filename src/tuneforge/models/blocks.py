"""Where a model's transformer blocks and input embeddings are: the one finder that keeping layers
(`models.shrink`), the layer-wise methods (`methods.layers`), the bottleneck adapters, compilation, FSDP wrapping
and the memory estimate all use.

Discovery is structural rather than by class name: the blocks are the `nn.ModuleList` of same-typed modules that
holds the most parameters, wherever it sits. That covers BERT-family encoders (`bert.encoder.layer`), Llama-family
decoders (`model.layers`), GPT-2 (`transformer.h`), vision transformers (`vit.layers`), convolutional stages and
blocks (`resnet.encoder.stages`, `mobilenet_v2.layer`, `backbone.blocks`), a multi-task model's backbone
(`encoder.encoder.layer`, not its shorter list of task heads) and any of these inside a PEFT wrapper
(`base_model.model.model.layers`). Of an encoder-decoder's two stacks, the one with more parameters (the decoder)
is taken.
"""

from __future__ import annotations

from torch import nn

from tuneforge.errors import ModelError


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(dotted name from `model`, the nn.ModuleList) of the transformer blocks: the list of same-typed modules
    holding the most parameters. ModelError naming the model class when it has no list of repeated layers."""
    best, best_n = None, 0
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        if len({type(m) for m in mod}) != 1:
            continue
        n = sum(p.numel() for p in mod.parameters())
        if n > best_n:
            best, best_n = (name, mod), n
    if best is None:
        raise ModelError(f"cannot find the transformer blocks of {type(model).__name__} (no list of repeated layers)")
    return best


def find_embeddings(model: nn.Module, blocks_name: str) -> list[str]:
    """Names of the input-side modules: the embeddings module of BERT-style models (word, position and
    token-type embeddings with their norm), or just the token embedding where it sits beside the blocks; for a
    model without input embeddings (a convolutional network), its stem: the modules that come before the blocks
    on the way down to them. `blocks_name`: the blocks' name from `find_blocks`."""
    try:
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    except (NotImplementedError, AttributeError):  # transformers raises for models with no token embeddings
        emb = None
    if emb is None:
        return _stem(model, blocks_name)
    names = {id(m): n for n, m in model.named_modules()}
    emb_name = names.get(id(emb))
    if emb_name is None:
        return []
    parent = emb_name.rsplit(".", 1)[0] if "." in emb_name else ""
    # the parent is an embeddings module only when it does not also hold the blocks (Llama: model.embed_tokens)
    if parent and not (blocks_name == parent or blocks_name.startswith(parent + ".")):
        return [parent]
    out = [emb_name]
    # position embeddings that sit beside the token embedding (GPT-2 `wpe`)
    for n, m in model.named_modules():
        if (
            isinstance(m, nn.Embedding)
            and n != emb_name
            and n.rsplit(".", 1)[0] == parent
            and not n.startswith(blocks_name)
        ):
            out.append(n)
    return out


def _stem(model: nn.Module, blocks_name: str) -> list[str]:
    """Modules holding parameters that are registered before the blocks' container, at every level of the path
    to it (ResNet: `resnet.embedder`; MobileNetV2: `mobilenet_v2.conv_stem`)."""
    out, mod, prefix = [], model, ""
    for part in blocks_name.split(".") if blocks_name else []:
        for name, child in mod.named_children():
            if name == part:
                break
            if any(True for _ in child.parameters()):
                out.append(prefix + name)
        mod, prefix = getattr(mod, part), prefix + part + "."
    return out
