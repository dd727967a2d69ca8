"""A smaller student from a pretrained model by keeping some of its transformer blocks (DistilBERT-style
initialisation, `model.keep_layers`).

The student is a plain checkpoint with fewer layers: after `keep_layers` the model runs, generates (the KV cache
is indexed by the renumbered blocks) and `save_pretrained` writes a directory that `AutoModelFor...from_pretrained`
reloads alone, with identical outputs.

Supported: the BERT family (BertModel, RobertaModel, MiniLM, ... and their heads: `<base>.encoder.layer`) and the
Llama family (Llama, Qwen2, Mistral, SmolLM2, ... and their heads: `<base>.layers`): the blocks that
`models.blocks.find_blocks` finds, when they sit at one of those places.

Count rule (`resolve_keep_layers`): keeping n of L layers takes index round(i * (L - 1) / (n - 1)) for
i = 0 .. n - 1, rounding halves up: evenly spread, always the first and the last layer (12 -> 6 gives
[0, 2, 4, 7, 9, 11], DistilBERT's own choice; 6 -> 3 gives [0, 3, 5]; 30 -> 10 gives
[0, 3, 6, 10, 13, 16, 19, 23, 26, 29]). Keeping 1 layer keeps the first ([0]); keeping L keeps them all.
"""

from __future__ import annotations

from typing import Any

from tuneforge.errors import ConfigError, ModelError

#: where the kept original layer indices are recorded in the student's config (saved in config.json)
KEPT_LAYERS_ATTR = "tuneforge_kept_layers"

#: where keeping layers gives a model that runs, saves and reloads alone: the block list's place under the
#: model's base (`model.base_model`)
_BLOCK_PATHS = (
    "encoder.layer",  # BERT family: BertModel, RobertaModel, XLMRobertaModel, ElectraModel, MiniLM
    "layers",  # Llama family: LlamaModel, Qwen2Model, MistralModel, SmolLM2
)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _span(num_layers: int) -> str:
    return f"0-{num_layers - 1}" if num_layers > 1 else "0"


def spread_layers(count: int, num_layers: int) -> list[int]:
    """`count` evenly spread layer indices of `num_layers`, including the first and the last (see module doc)."""
    if count == 1:
        return [0]
    # round(i * (L - 1) / (n - 1)) with halves rounded up, in exact integer arithmetic
    return [(2 * i * (num_layers - 1) + (count - 1)) // (2 * (count - 1)) for i in range(count)]


def resolve_keep_layers(spec: list[int] | int, num_layers: int, key: str = "model.keep_layers") -> list[int]:
    """The original indices of the layers to keep: a count n (evenly spread, see the module doc) or a list of
    indices, validated (non-empty, each in [0, num_layers), strictly increasing). ConfigError in one line naming
    `key`, the bad value and the valid range."""
    if num_layers < 1:
        raise ModelError(f"{key}: the model has no transformer layers to keep")
    span = _span(num_layers)
    if _is_int(spec):
        if not 1 <= spec <= num_layers:
            raise ConfigError(
                f"{key}: cannot keep {spec} layers of a model with {num_layers} layers; "
                f"give a count from 1 to {num_layers} or a list of layer indices ({span})"
            )
        return spread_layers(spec, num_layers)
    if not isinstance(spec, (list, tuple)):
        raise ConfigError(f"{key}: expected a layer count or a list of layer indices ({span}), got {spec!r}")
    layers = list(spec)
    if not layers:
        raise ConfigError(
            f"{key}: [] keeps no layers; list at least one layer index ({span}) or give a count from 1 to {num_layers}"
        )
    for x in layers:
        if not _is_int(x):
            raise ConfigError(f"{key}: {x!r} in {layers!r} is not a layer index; use integers ({span})")
    for x in layers:
        if not 0 <= x < num_layers:
            raise ConfigError(f"{key}: layer {x} is out of range for a model with {num_layers} layers ({span})")
    seen: set[int] = set()
    for x in layers:
        if x in seen:
            raise ConfigError(f"{key}: layer {x} is listed twice in {layers}; list each layer once ({span})")
        seen.add(x)
    for a, b in zip(layers, layers[1:]):
        if b < a:
            raise ConfigError(
                f"{key}: {layers} is not in increasing order (layer {b} after {a}); "
                f"list the layers in the model's order ({span})"
            )
    return layers


def _blocks_to_cut(model: Any, key: str) -> tuple[str, Any]:
    """(dotted path from `model`, the nn.ModuleList) of the blocks `keep_layers` cuts: those `models.blocks` finds,
    when they sit where the supported families keep them; ModelError naming the model class otherwise."""
    from tuneforge.models.blocks import find_blocks

    try:
        path, blocks = find_blocks(model)
    except ModelError:
        path, blocks = "", None
    base = getattr(model, "base_model", model)
    if blocks is None or not any(_attribute(base, p) is blocks for p in _BLOCK_PATHS):
        where = f"its blocks are at {path}" if path else "it has no list of repeated layers"
        raise ModelError(
            f"{key}: cannot keep layers of {type(model).__name__} ({where}); keeping layers works for "
            f"BERT-family and Llama-family models ({' and '.join('<base>.' + p for p in _BLOCK_PATHS)})"
        )
    return path, blocks


def _attribute(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            break
    return obj


def _set_path(model: Any, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    obj = model
    for part in parents:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def keep_layers(model: Any, layers: list[int] | int, key: str = "model.keep_layers") -> Any:
    """Keep only `layers` (original indices, or a count: see `resolve_keep_layers`) of a loaded transformers
    model's blocks, in place; returns the model.

    Updated: the block list (a new nn.ModuleList of the kept blocks, in order), `config.num_hidden_layers`,
    every `layer_idx` inside the kept blocks (renumbered 0..k-1: KV-cache indexing), `config.layer_types` when
    present (cut to the kept entries), and `config.tuneforge_kept_layers` (the kept indices of the original
    model; shrinking a student again maps through it, so it always names the first model's layers)."""
    from torch import nn

    path, blocks = _blocks_to_cut(model, key)
    num_layers = len(blocks)
    kept = resolve_keep_layers(layers, num_layers, key=key)
    new_blocks = nn.ModuleList([blocks[i] for i in kept])
    for k, block in enumerate(new_blocks):
        for m in block.modules():  # attention (and some decoder layers) carry their index for the KV cache
            if _is_int(getattr(m, "layer_idx", None)):
                m.layer_idx = k
    _set_path(model, path, new_blocks)

    configs = []
    for obj in (model, getattr(model, "base_model", model)):
        cfg = getattr(obj, "config", None)
        if cfg is not None and all(cfg is not c for c in configs):
            configs.append(cfg)
    for cfg in configs:
        types = getattr(cfg, "layer_types", None)
        if isinstance(types, (list, tuple)) and len(types) == num_layers:
            cfg.layer_types = [types[i] for i in kept]
        cfg.num_hidden_layers = len(kept)
        previous = getattr(cfg, KEPT_LAYERS_ATTR, None)
        if isinstance(previous, (list, tuple)) and len(previous) == num_layers:
            setattr(cfg, KEPT_LAYERS_ATTR, [int(previous[i]) for i in kept])
        else:
            setattr(cfg, KEPT_LAYERS_ATTR, list(kept))
    return model
