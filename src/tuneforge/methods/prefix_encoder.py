"""Prefix tuning for models without a key/value cache (the BERT family), written here because PEFT's prefix path
passes the prefix as `past_key_values`, a keyword that encoders dropped in transformers 5.2x.

Every self-attention layer gets P learned key and value vectors per head, prepended to the keys and values that
the layer computes from its input; the attention mask is widened so every token attends to them. The prefix is
injected through transformers' public attention-function registry (`AttentionInterface`): the model's
`config._attn_implementation` is pointed at a function that prepends the layer's prefix and then runs PyTorch's
scaled-dot-product attention, so no model code is patched and any architecture that dispatches its attention
through that registry works. Which modules are the attention layers is found by running one tiny forward and
recording the calls (in call order, which is layer order); an architecture whose attention does not dispatch
through the registry is refused with a one-line message instead of silently training nothing.

The prefix table has PEFT's layout, (P, layers * 2 * kv_heads * head_dim) with layer i's keys at 2i and its
values at 2i+1, optionally reparametrised through a two-layer MLP while training (Li & Liang 2021). What is
saved is the final table (the MLP's output), so a saved prefix loads without the MLP; it is not mergeable."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from tuneforge.errors import MethodError, ModelError, first_line

ATTENTION_NAME = "tuneforge_prefix"
WEIGHTS_FILE = "prefix_weights.safetensors"
CONFIG_FILE = "prefix_tuning.json"
MODULE_NAME = "tuneforge_prefix"

_registered = False
_discovery = threading.local()


def _register() -> None:
    """Register the prefix attention function and its mask format (sdpa's) with transformers, once."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    def prefix_attention(module, query, key, value, attention_mask, **kwargs):
        calls = getattr(_discovery, "calls", None)
        if calls is not None:
            calls.append((module, tuple(key.shape), bool(getattr(module, "is_causal", False))))
        owner = module.__dict__.get("_tf_prefix_owner")
        if owner is not None:
            key, value, attention_mask = owner.extend(module.__dict__["_tf_prefix_index"], key, value, attention_mask)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(ATTENTION_NAME, prefix_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, sdpa_mask)
    _registered = True


class EncoderPrefix(nn.Module):
    """The learned prefixes of every attention layer, and how a layer's keys, values and mask are widened."""

    def __init__(
        self,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        num_tokens: int,
        projection_dim: int | None = None,
        token_dim: int | None = None,
    ):
        super().__init__()
        self.num_layers, self.kv_heads, self.head_dim, self.num_tokens = num_layers, kv_heads, head_dim, num_tokens
        out = num_layers * 2 * kv_heads * head_dim
        if projection_dim:
            self.embedding = nn.Embedding(num_tokens, token_dim or kv_heads * head_dim)
            self.transform = nn.Sequential(
                nn.Linear(self.embedding.embedding_dim, projection_dim), nn.Tanh(), nn.Linear(projection_dim, out)
            )
        else:
            self.embedding = nn.Embedding(num_tokens, out)
            self.transform = None

    def table(self) -> torch.Tensor:
        """The (P, layers * 2 * kv_heads * head_dim) prefix table, in PEFT's layout."""
        weight = self.embedding.weight
        return weight if self.transform is None else self.transform(weight)

    def layer_table(self, index: int) -> torch.Tensor:
        """Layer `index`'s keys and values, (2, kv_heads, P, head_dim); with the MLP only its rows are computed."""
        width = 2 * self.kv_heads * self.head_dim
        rows = slice(index * width, (index + 1) * width)
        if self.transform is None:
            flat = self.embedding.weight[:, rows]
        else:
            first, act, last = self.transform
            flat = F.linear(act(first(self.embedding.weight)), last.weight[rows], last.bias[rows])
        return flat.view(self.num_tokens, 2, self.kv_heads, self.head_dim).permute(1, 2, 0, 3)

    def extend(self, index: int, key: torch.Tensor, value: torch.Tensor, mask):
        batch, heads, _, dim = key.shape
        if heads != self.kv_heads or dim != self.head_dim:
            raise ModelError(
                f"prefix tuning: layer {index} has keys of {heads} heads x {dim}, the prefix was built "
                f"for {self.kv_heads} x {self.head_dim}"
            )
        kv = self.layer_table(index).to(key.dtype)
        pk = kv[0].unsqueeze(0).expand(batch, -1, -1, -1)
        pv = kv[1].unsqueeze(0).expand(batch, -1, -1, -1)
        key, value = torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2)
        if mask is not None and torch.is_tensor(mask):
            pad = (torch.ones if mask.dtype == torch.bool else torch.zeros)(
                *mask.shape[:-1], self.num_tokens, dtype=mask.dtype, device=mask.device
            )
            mask = torch.cat([pad, mask], dim=-1)
        elif mask is not None:  # a flex-attention BlockMask or another structure we cannot widen
            raise MethodError("prefix tuning: this model's attention mask format is not supported")
        return key, value, mask


def _discover(model: nn.Module) -> list[tuple[nn.Module, tuple, bool]]:
    """Run one tiny forward with the prefix attention function and return the attention calls in order."""
    dummy = getattr(model, "dummy_inputs", None) or {"input_ids": torch.tensor([[1, 2, 3]])}
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in dummy.items() if torch.is_tensor(v) and k in ("input_ids",)}
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    was_training = model.training
    _discovery.calls = []
    try:
        model.eval()
        with torch.no_grad():
            model(**inputs)
        return _discovery.calls
    finally:
        _discovery.calls = None
        model.train(was_training)


def attach(model: nn.Module, num_tokens: int, projection_dim: int | None = None) -> EncoderPrefix:
    """Add a trainable prefix to every self-attention layer of `model` (in place) and return the prefix module.

    Raises MethodError when the model's attention does not go through transformers' attention registry, or is
    causal (causal LMs use PEFT's prefix tuning, which keeps generation's cache working)."""
    _register()
    config = model.config
    previous = getattr(config, "_attn_implementation", None)
    config._attn_implementation = ATTENTION_NAME
    try:
        calls = _discover(model)
    except Exception as exc:
        config._attn_implementation = previous
        raise MethodError(
            f"prefix tuning does not support {type(model).__name__} ({first_line(exc, 150, with_type=True)}); "
            f"use method.name=lora or "
            f"prompt"
        ) from None
    modules, seen = [], set()
    for module, shape, causal in calls:
        if id(module) not in seen:
            seen.add(id(module))
            modules.append((module, shape, causal))
    if not modules:
        config._attn_implementation = previous
        raise MethodError(
            f"prefix tuning does not support {type(model).__name__}: its attention does not go "
            f"through transformers' attention registry; use method.name=lora or prompt"
        )
    if any(causal for _, _, causal in modules):
        config._attn_implementation = previous
        raise MethodError(f"{type(model).__name__} has causal attention: its prefix tuning goes through PEFT")
    shapes = {(s[1], s[3]) for _, s, _ in modules}
    if len(shapes) != 1:
        config._attn_implementation = previous
        raise MethodError(
            f"prefix tuning does not support {type(model).__name__}: its attention layers differ in "
            f"shape ({sorted(shapes)})"
        )
    kv_heads, head_dim = shapes.pop()
    hidden = getattr(config, "hidden_size", None)
    prefix = EncoderPrefix(len(modules), kv_heads, head_dim, num_tokens, projection_dim, hidden)
    param = next(model.parameters())
    prefix.to(device=param.device, dtype=param.dtype if param.dtype.is_floating_point else torch.float32)
    model.add_module(MODULE_NAME, prefix)
    for index, (module, _, _) in enumerate(modules):
        # plain attributes, not submodules: the prefix is registered once, under the model
        module.__dict__["_tf_prefix_owner"] = prefix
        module.__dict__["_tf_prefix_index"] = index
    return prefix


def save(model: nn.Module, out_dir: str, head_modules: list[str], settings: dict) -> None:
    """Write the final prefix table and the task head's weights (`prefix_weights.safetensors`) and the prefix
    shape and settings (`prefix_tuning.json`)."""
    from safetensors.torch import save_file

    prefix: EncoderPrefix = model.get_submodule(MODULE_NAME)
    state = {"prompt_embeddings": prefix.table().detach().float().contiguous().clone()}
    heads = tuple(n + "." for n in head_modules)
    state.update({k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k.startswith(heads)})
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    save_file(state, str(Path(out_dir, WEIGHTS_FILE)), metadata={"format": "pt"})
    Path(out_dir, CONFIG_FILE).write_text(
        json.dumps(
            {
                **settings,
                "head_modules": list(head_modules),
                "num_layers": prefix.num_layers,
                "kv_heads": prefix.kv_heads,
                "head_dim": prefix.head_dim,
                "num_tokens": prefix.num_tokens,
                "base_model_name_or_path": getattr(model, "name_or_path", None),
            },
            indent=2,
        )
    )


def load(model: nn.Module, in_dir: str) -> nn.Module:
    """Attach the saved prefix (as a fixed table) and the saved head weights to a freshly built base model."""
    from safetensors.torch import load_file

    saved = json.loads(Path(in_dir, CONFIG_FILE).read_text())
    prefix = attach(model, int(saved["num_tokens"]))
    state = load_file(str(Path(in_dir, WEIGHTS_FILE)))
    table = state.pop("prompt_embeddings")
    if tuple(table.shape) != tuple(prefix.embedding.weight.shape):
        raise ModelError(
            f"{in_dir}: the saved prefix {tuple(table.shape)} does not fit the base model "
            f"({prefix.num_layers} attention layers: {tuple(prefix.embedding.weight.shape)})"
        )
    with torch.no_grad():
        prefix.embedding.weight.copy_(table.to(prefix.embedding.weight.dtype))
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    if unknown:
        raise ModelError(f"{in_dir}: prefix-tuning head weights do not fit the base model (e.g. '{unknown[0]}')")
    model.load_state_dict(state, strict=False)
    return model
