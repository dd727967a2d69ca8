"""Activations: what autograd keeps from the forward pass for backward, per device, for the run's batch.

Per transformer block and token (see `_block_bytes`): each kept layer input, norm, attention core and MLP
activation at the compute dtype; with gradient checkpointing only each block's input is kept, plus one block
recomputed in backward. Dropout keeps a bool mask on a GPU but, on CPU, a noise tensor of the input's dtype (4 bytes
in fp32): per attention probability, per hidden value and per adapted layer's input (an adapter's own dropout, as
the method names its adapter modules: `Method.adapter_module_names`). An image model's activations are measured on
one meta forward pass instead.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ModelError
from tuneforge.training.estimate.skeleton import Skeleton

_SHARED_INPUT = (
    {"q_proj", "k_proj", "v_proj", "query", "key", "value", "qkv_proj", "Wqkv", "c_attn"},
    {"gate_proj", "up_proj", "w1", "w3", "gate_up_proj"},
)


@dataclass
class Run:
    """The settings the per-token formulas need."""

    batch: int
    seq: int
    compute: int  # bytes of block activations (the autocast dtype, else the residual stream's)
    stream: int  # bytes of the residual stream (the embeddings' dtype after the method)
    autocast: bool
    liger: bool
    checkpointing: bool
    device: str = "cuda"
    image_side: int | None = None  # image models: the input's side in pixels (then `seq` is unused)

    def mask(self, elem: int) -> int:
        """Bytes per element that dropout keeps for backward on a tensor of `elem`-byte values: a bool mask on a GPU
        (`native_dropout`); on CPU torch multiplies by a noise tensor of the input's own dtype and keeps that."""
        return 1 if self.device == "cuda" else elem


def _linears(block):
    """(name, module, base Linear, adapter params, dropout p) for each linear layer of a block; adapter wrappers
    (modules with a `base_layer`, PEFT's convention) count once with their trainable extras."""
    import torch

    out, wrapped = [], set()
    for name, mod in block.named_modules():
        base = getattr(mod, "base_layer", None)
        if isinstance(base, torch.nn.Linear) or (base is not None and hasattr(base, "in_features")):
            extras = [p for n, p in mod.named_parameters() if p.requires_grad and not n.startswith("base_layer.")]
            drops = [
                d.p
                for n, d in mod.named_modules()
                if isinstance(d, torch.nn.Dropout) and not n.startswith("base_layer")
            ]
            out.append((name, mod, base, extras, max(drops, default=0.0)))
            wrapped.update(id(m) for m in mod.modules())
    for name, mod in block.named_modules():
        if id(mod) not in wrapped and (
            isinstance(mod, torch.nn.Linear)
            or (type(mod).__name__.startswith("Linear") and hasattr(mod, "in_features"))
        ):
            out.append((name, mod, mod, [], 0.0))
    return out


def _norm_bytes(mod, r: Run, h: int) -> int:
    import torch

    rms = "rms" in type(mod).__name__.lower()
    w = getattr(mod, "weight", None)
    # a Python norm (HF's RMSNorm) multiplies its weight by the normalized input, which autograd keeps for the
    # weight's gradient; torch's fused layer_norm gets that gradient from the input, mean and rstd it keeps anyway
    fused = isinstance(mod, torch.nn.LayerNorm)
    extra = r.compute * h if w is not None and w.requires_grad and not fused else 0
    if rms and not r.liger:
        return 4 * h + 4 + extra  # the HF RMSNorm's float32 copy of its input, and the reciprocal norm
    return r.stream * h + 8 + extra


def _block_bytes(block, hf, r: Run, fused: bool, adapter_parts: frozenset[int]) -> int:
    """Bytes autograd keeps per token for one transformer block (no checkpointing)."""
    import torch

    h = hf.hidden_size
    c = r.compute
    n_heads = getattr(hf, "num_attention_heads", 1)
    head_dim = getattr(hf, "head_dim", None) or h // max(n_heads, 1)
    kv = (getattr(hf, "num_key_value_heads", None) or n_heads) * head_dim
    inter = getattr(hf, "intermediate_size", None) or getattr(hf, "n_inner", None) or 4 * h
    total = 0
    names = [n for n, _ in block.named_modules()]
    for name, mod in block.named_modules():
        if "norm" in type(mod).__name__.lower() and hasattr(mod, "weight"):
            total += _norm_bytes(mod, r, h)
        elif (
            isinstance(mod, torch.nn.Dropout)
            and mod.p > 0
            and id(mod) not in adapter_parts  # an adapter's dropout: counted with the layer it adapts, below
            and not re.search(
                r"(self|attn|attention)\.dropout$|"
                r"(attn|attention)_dropout$",
                name,
            )
        ):
            total += r.mask(r.stream) * h  # dropout's mask (hidden dropout before a residual add)
    groups: dict[tuple, list] = {}
    for name, _mod, base, extras, p in _linears(block):
        parent, _, leaf = name.rpartition(".")
        gid = next((i for i, s in enumerate(_SHARED_INPUT) if leaf in s), None)
        groups.setdefault((parent, gid) if gid is not None else (name,), []).append((base, extras, p))
    for members in groups.values():
        d_in = members[0][0].in_features
        keep_input = False
        for base, extras, p in members:
            if base.weight.requires_grad:
                keep_input = True
            if not extras:
                continue
            a_bytes = max(e.element_size() for e in extras)
            rank = sum(e.shape[0] for e in extras if e.ndim == 2 and e.shape[-1] == d_in)
            eff = c if r.autocast else a_bytes
            if fused and p == 0:
                keep_input = True
                total += c * rank
            elif p > 0:  # the adapter's dropout: its mask and its output (the adapter's input) per layer
                total += (r.mask(eff) + eff) * d_in + eff * rank * 2
            elif eff != c or r.autocast:
                total += eff * d_in + eff * rank * 2  # PEFT's cast of the input to the adapter's dtype
            else:
                keep_input = True
                total += eff * rank * 2
        if keep_input:
            total += c * d_in
    # attention core
    impl = getattr(hf, "_attn_implementation", None) or "sdpa"
    attn_p = float(getattr(hf, "attention_dropout", 0.0) or getattr(hf, "attention_probs_dropout_prob", 0.0) or 0.0)
    q = c * n_heads * head_dim
    # torch's CPU SDPA takes the math path (probabilities kept) when attention dropout is on in training
    if impl == "eager" or (r.device == "cpu" and attn_p > 0):
        total += q + 2 * c * kv + c * n_heads * r.seq + ((r.mask(c) + c) * n_heads * r.seq if attn_p > 0 else 0)
    else:  # SDPA / flash: q, k, v, output and the log-sum-exp
        total += q + 2 * c * kv + c * n_heads * head_dim + 4 * n_heads
    # the MLP's activation function
    gated = any(n.rpartition(".")[2] in ("gate_proj", "w1", "gate_up_proj") for n in names)
    if gated:
        total += (2 if r.liger else 3) * c * inter
    else:
        total += c * inter
    return total


def transformer_blocks(model) -> list:
    """The model's transformer blocks (`tuneforge.models.blocks`, through any wrapper); [] when it has none."""
    from tuneforge.models.blocks import find_blocks

    try:
        return list(find_blocks(model)[1])
    except ModelError:
        return []


def image_side(cfg: RunConfig, hf) -> int | None:
    """The square input side of an image model (`data.image_size`, else its preprocessor_config.json's, else
    its config's), None for models that take tokens."""
    if getattr(hf, "num_channels", None) is None:
        return None
    side = getattr(cfg.data, "image_size", None)
    if not side:
        from tuneforge.data.images import Preprocessing
        from tuneforge.models.loader import resolve_model

        path = Path(resolve_model(cfg.model.name, cfg.model.revision))
        if (path / "preprocessor_config.json").is_file():
            prep = Preprocessing.from_dir(path)
            side = max(prep.height, prep.width)
    side = side or getattr(hf, "image_size", None) or 224
    return int(side if isinstance(side, int) else max(side))


def _image_activations(m: Skeleton, r: Run, side: int) -> tuple[int, int, list[str]]:
    """An image model's activations, measured: one forward pass on the meta device, summing the outputs of every
    leaf module (what autograd keeps for backward, an upper bound where layers compute in place)."""
    import torch

    total = [0]

    def count(_mod, _inp, out):
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t):
                total[0] += t.numel()

    leaves = [mod for mod in m.model.modules() if not any(True for _ in mod.children())]
    hooks = [mod.register_forward_hook(count) for mod in leaves]
    try:
        with torch.device("meta"), torch.no_grad():
            m.model(pixel_values=torch.empty(r.batch, int(getattr(m.hf_config, "num_channels", 3)), side, side))
    finally:
        for h in hooks:
            h.remove()
    return (
        total[0] * r.compute + r.batch * 3 * side * side * 4,
        0,
        [
            f"image model: activations measured on one meta forward pass at {side}x{side} "
            f"(every layer's output kept for backward; gradient checkpointing not modelled)"
        ],
    )


def activations(m: Skeleton, r: Run) -> tuple[int, int, list[str]]:
    """(bytes kept from forward to backward, extra bytes while one block is recomputed) for the batch."""
    import torch

    if r.image_side:
        return _image_activations(m, r, r.image_side)

    tokens = r.batch * r.seq
    hf = m.hf_config
    h = hf.hidden_size
    blocks = transformer_blocks(m.model)
    per_block = [_block_bytes(b, hf, r, m.fused_adapters, m.adapter_parts) for b in blocks]
    in_blocks = {id(x) for b in blocks for x in b.modules()}
    outside = 24  # input ids, labels, attention mask (int64)
    for mod in m.model.modules():
        if id(mod) in in_blocks:
            continue
        if "norm" in type(mod).__name__.lower() and hasattr(mod, "weight"):
            outside += _norm_bytes(mod, r, h)
        elif isinstance(mod, torch.nn.Dropout) and mod.p > 0 and id(mod) not in m.adapter_parts:
            outside += r.mask(r.stream) * h
    notes = []
    if not blocks:
        notes.append("no transformer block list found: activations estimated from the parameter count only")
        per_block = [34 * r.compute * h]
    if r.checkpointing:
        kept = len(per_block) * r.stream * h + outside
        return kept * tokens, max(per_block) * tokens, notes
    return (sum(per_block) + outside) * tokens, 0, notes


def liger_on(value: bool | str, device: str) -> bool:
    """Whether liger's kernels run (`train.liger`: `auto` is on with CUDA when liger-kernel is installed)."""
    if value is False:
        return False
    if value is True:
        return True
    return device == "cuda" and importlib.util.find_spec("liger_kernel") is not None
