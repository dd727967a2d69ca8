"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020), written here because PEFT has none.

An adapter is x + up(dropout(act(down(x)))) placed on the output of a sublayer, before the block's residual
addition. `houlsby` places one after the attention output projection and one after the feed-forward output
projection of every block; `pfeiffer` only after the feed-forward. The up-projection starts at zero, so the
adapted model computes exactly what the base model computes until training moves it.

Supported blocks (found by structure, not class name):
  BERT family   block.attention.output.dense (BertSelfOutput) and block.output.dense (BertOutput)
  Llama family  block.self_attn.o_proj and block.mlp.down_proj (LlamaDecoderLayer, Mistral, Qwen2, ...)
  ViT family    block.attention.o_proj and block.mlp.fc2 (transformers 5's ViT, DeiT, ...), and
                block.self_attn.out_proj and block.mlp.fc2 (CLIP / SigLIP vision towers)

Saved artefacts: `adapter_weights.safetensors` (adapters + task head only) and `bottleneck_adapter.json`.
Adapters cannot be merged into the base weights (they are non-linear)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from tuneforge.config.schema import MethodConfig, RunConfig
from tuneforge.errors import MethodError, ModelError
from tuneforge.methods.base import METHODS, Method, MethodContext

WEIGHTS_FILE = "adapter_weights.safetensors"
CONFIG_FILE = "bottleneck_adapter.json"
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
DEFAULT_REDUCTION = 16


class AdapterConfig(MethodConfig):
    name: Literal["adapter"] = "adapter"
    default_learning_rate: ClassVar[float] = 1e-3
    placement: Literal["houlsby", "pfeiffer"] = Field(
        "pfeiffer",
        description=(
            "`houlsby`: an adapter after the attention output and one after the feed-forward of every block; "
            "`pfeiffer`: only after the feed-forward (half the parameters, usually as accurate)."
        ),
    )
    bottleneck_size: int | None = Field(
        None, ge=1, description=("Width of the adapter's bottleneck. Give this or reduction_factor.")
    )
    reduction_factor: float | None = Field(
        None,
        gt=0,
        description=(
            f"Bottleneck width = hidden size / this factor (default {DEFAULT_REDUCTION} when bottleneck_size "
            f"is not given)."
        ),
    )
    activation: Literal["relu", "gelu", "silu", "tanh"] = Field("relu", description="Non-linearity in the bottleneck.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout inside the adapter, before the up-projection.")

    @model_validator(mode="after")
    def _size(self):
        if self.bottleneck_size is not None and self.reduction_factor is not None:
            raise ValueError("give bottleneck_size or reduction_factor, not both")
        return self

    def width(self, hidden: int) -> int:
        if self.bottleneck_size is not None:
            return self.bottleneck_size
        return max(1, int(round(hidden / (self.reduction_factor or DEFAULT_REDUCTION))))


class BottleneckAdapter(nn.Module):
    """x + up(dropout(act(down(x)))), with `up` zero-initialised (identity at the start)."""

    def __init__(self, hidden: int, bottleneck: int, activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.act = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, hidden)
        # small down-projection (Houlsby's near-identity init); a zero up-projection makes it exactly identity
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.dropout(self.act(self.down(x))))


class AdaptedOutput(nn.Module):
    """A sublayer's output projection followed by an adapter; replaces that projection in the block."""

    def __init__(self, base_layer: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter

    def forward(self, *args, **kwargs):
        return self.adapter(self.base_layer(*args, **kwargs))


def _get(mod: nn.Module, path: str) -> nn.Module | None:
    for part in path.split("."):
        mod = getattr(mod, part, None)
        if mod is None:
            return None
    return mod


#: (attention output projection, feed-forward output projection) relative to a block, per family
FAMILIES = {
    "bert": ("attention.output.dense", "output.dense"),
    "llama": ("self_attn.o_proj", "mlp.down_proj"),
    "vit": ("attention.o_proj", "mlp.fc2"),
    "clip": ("self_attn.out_proj", "mlp.fc2"),
}


def adapter_sites(model: nn.Module, placement: str) -> list[str]:
    """Full module names of the projections that get an adapter.

    Raises MethodError for architectures whose blocks are not BERT- or Llama-shaped."""
    from tuneforge.models.blocks import find_blocks

    try:
        blocks_name, blocks = find_blocks(model)
    except ModelError:
        blocks_name, blocks = "", []
    block = blocks[0] if len(blocks) else None
    for attn, ffn in FAMILIES.values():
        if block is not None and isinstance(_get(block, attn), nn.Linear) and isinstance(_get(block, ffn), nn.Linear):
            paths = [attn, ffn] if placement == "houlsby" else [ffn]
            return [f"{blocks_name}.{i}.{p}" for i in range(len(blocks)) for p in paths]
    raise MethodError(
        f"method adapter: unsupported architecture {type(model).__name__} (bottleneck adapters "
        f"support BERT-family encoders, Llama-family decoders and vision transformers); use "
        f"method.name=lora"
    )


def add_adapters(model: nn.Module, cfg: AdapterConfig) -> list[str]:
    """Insert adapters into `model` in place; returns the names of the adapter modules."""
    hidden = getattr(model.config, "hidden_size", None)
    names = []
    for site in adapter_sites(model, cfg.placement):
        parent_name, attr = site.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        base = getattr(parent, attr)
        width = hidden or base.out_features
        adapter = BottleneckAdapter(width, cfg.width(width), cfg.activation, cfg.dropout)
        adapter.to(device=base.weight.device, dtype=base.weight.dtype)
        setattr(parent, attr, AdaptedOutput(base, adapter))
        names.append(f"{site}.adapter")
    return names


@METHODS.register("adapter")
class AdapterMethod(Method):
    name = "adapter"
    Config = AdapterConfig
    can_merge = False
    summary = "Bottleneck adapters (Houlsby / Pfeiffer) after attention and/or feed-forward; the head trains in full."

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        super().check_config(cfg)
        from tuneforge.errors import ConfigError

        # a bottleneck wider than any transformer's hidden size only allocates memory (or fails to)
        if cfg.method.bottleneck_size is not None and cfg.method.bottleneck_size > 65536:
            raise ConfigError(
                f"method.bottleneck_size: {cfg.method.bottleneck_size} is larger than 65536; a "
                f"bottleneck is meant to be narrower than the model's hidden size"
            )

    def apply(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(False)
        self.adapter_modules = add_adapters(model, self.cfg)
        self.head_modules = list(ctx.head_modules)
        for name in self.adapter_modules + self.head_modules:
            for p in model.get_submodule(name).parameters():
                p.requires_grad_(True)
        if ctx.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        return model

    def save(self, model: nn.Module, out_dir: str, state_dict: dict | None = None) -> None:
        from safetensors.torch import save_file

        prefixes = tuple(n + "." for n in self.adapter_modules + self.head_modules)
        full = state_dict if state_dict is not None else model.state_dict()
        state = {k: v.detach().contiguous().clone() for k, v in full.items() if k.startswith(prefixes)}
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        save_file(state, str(Path(out_dir, WEIGHTS_FILE)), metadata={"format": "pt"})
        Path(out_dir, CONFIG_FILE).write_text(
            json.dumps(
                {
                    **self.cfg.model_dump(mode="json"),
                    "head_modules": self.head_modules,
                    "adapter_modules": self.adapter_modules,
                    "base_model_name_or_path": getattr(model, "name_or_path", None),
                },
                indent=2,
            )
        )

    def load(self, in_dir: str, build_base: Callable[[str], nn.Module]) -> nn.Module:
        from safetensors.torch import load_file

        from tuneforge.models.loader import read_run_metadata

        path = Path(in_dir, WEIGHTS_FILE)
        if not path.is_file():
            raise ModelError(f"{in_dir}: no {WEIGHTS_FILE} (not a bottleneck-adapter run)")
        model = build_base(read_run_metadata(in_dir)["base_model"])
        self.adapter_modules = add_adapters(model, self.cfg)
        saved = Path(in_dir, CONFIG_FILE)
        self.head_modules = json.loads(saved.read_text()).get("head_modules", []) if saved.is_file() else []
        state = load_file(str(path))
        own = model.state_dict()
        unknown = [k for k in state if k not in own]
        if unknown:
            raise ModelError(f"{in_dir}: adapter weights do not fit the base model (e.g. '{unknown[0]}')")
        missing = [k for k in own if ".adapter." in k and k not in state]
        if missing:
            raise ModelError(f"{in_dir}: adapter weights are missing '{missing[0]}'")
        model.load_state_dict(state, strict=False)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        raise MethodError(
            "method 'adapter' cannot be merged: bottleneck adapters are extra non-linear layers, "
            "not a change of the base weights; use the run directory as it is"
        )
